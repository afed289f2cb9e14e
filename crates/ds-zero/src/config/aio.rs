//! `aio`: how NVMe offload's swap I/O is issued, with DeepSpeed's defaults
//! (`deepspeed/runtime/swap_tensor/constants.py`).

use super::ConfigError;
use super::json::Obj;
use serde_json::{Value, json};

/// The resolved `aio` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AioConfig {
    /// Bytes per I/O request (default 1 MiB).
    pub block_size: u64,
    /// Requests in flight per read or write (default 8).
    pub queue_depth: u64,
    /// DeepSpeed's I/O threads per operation (default 1; ds runs one I/O thread per swapper).
    pub intra_op_parallelism: u64,
    /// Submit requests one by one rather than as a batch (default false).
    pub single_submit: bool,
    /// Overlap submission and completion (default true; ds's swapper always overlaps I/O
    /// with the step through `pipeline_read` / `pipeline_write`).
    pub overlap_events: bool,
    /// GPUDirect Storage (default false).
    pub use_gds: bool,
}

impl Default for AioConfig {
    fn default() -> Self {
        AioConfig {
            block_size: 1 << 20,
            queue_depth: 8,
            intra_op_parallelism: 1,
            single_submit: false,
            overlap_events: true,
            use_gds: false,
        }
    }
}

impl AioConfig {
    pub(crate) fn to_json(self) -> Value {
        json!({
            "block_size": self.block_size,
            "queue_depth": self.queue_depth,
            "intra_op_parallelism": self.intra_op_parallelism,
            "single_submit": self.single_submit,
            "overlap_events": self.overlap_events,
            "use_gds": self.use_gds,
        })
    }
}

/// Reads the top-level `aio` section.
pub(super) fn resolve(top: &mut Obj<'_>) -> Result<AioConfig, ConfigError> {
    let mut c = AioConfig::default();
    let Some(mut o) = top.obj("aio")? else {
        return Ok(c);
    };
    for (key, slot) in [
        ("block_size", &mut c.block_size),
        ("queue_depth", &mut c.queue_depth),
    ] {
        if let Some(v) = o.u64(key)? {
            if v == 0 {
                return Err(ConfigError::invalid(o.key(key), "must be at least 1"));
            }
            *slot = v;
        }
    }
    // `thread_count` is the older spelling.
    c.intra_op_parallelism = o
        .u64("intra_op_parallelism")?
        .or(o.u64("thread_count")?)
        .unwrap_or(c.intra_op_parallelism);
    c.single_submit = o.bool("single_submit")?.unwrap_or(c.single_submit);
    c.overlap_events = o.bool("overlap_events")?.unwrap_or(c.overlap_events);
    c.use_gds = o.bool("use_gds")?.unwrap_or(c.use_gds);
    o.finish(
        &[
            "block_size",
            "queue_depth",
            "intra_op_parallelism",
            "thread_count",
            "single_submit",
            "overlap_events",
            "use_gds",
        ],
        &[],
    )?;
    Ok(c)
}
