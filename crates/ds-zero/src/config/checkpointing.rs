//! `activation_checkpointing`: recompute activations in backward instead of keeping them.
//!
//! DeepSpeed's block configures `deepspeed.checkpointing`, which a model calls around its
//! layers; ds-nn's models do the same when the block is present (`ds train` passes it to the
//! GPT). `number_checkpoints` is how many blocks are checkpointed (default: all of them).
//! `cpu_checkpointing` keeps the checkpointed inputs in host memory between forward and
//! backward. `partition_activations` (splitting checkpoints over model-parallel ranks) is
//! refused by name when on: ds has no model parallelism.
//! `contiguous_memory_optimization`, `synchronize_checkpoint_boundary` and `profile` are
//! accepted: ds's allocator caches buffers already, and its kernels are synchronous.

use super::ConfigError;
use super::json::Obj;
use serde_json::{Value, json};

/// The resolved `activation_checkpointing` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivationCheckpointing {
    /// How many blocks are checkpointed; `None` (the default): every block.
    pub number_checkpoints: Option<u64>,
    /// Keep the checkpoints in host memory (`cpu_checkpointing`, default false).
    pub cpu_checkpointing: bool,
}

impl ActivationCheckpointing {
    /// The blocks to checkpoint in a model of `blocks` blocks.
    pub fn blocks(&self, blocks: usize) -> usize {
        self.number_checkpoints.map_or(blocks, |n| {
            usize::try_from(n).unwrap_or(usize::MAX).min(blocks)
        })
    }

    pub(crate) fn to_json(self) -> Value {
        json!({
            "number_checkpoints": self.number_checkpoints.map_or(json!("every block"), |n| json!(n)),
            "cpu_checkpointing": self.cpu_checkpointing,
        })
    }
}

const KEYS: [&str; 6] = [
    "partition_activations",
    "number_checkpoints",
    "contiguous_memory_optimization",
    "cpu_checkpointing",
    "synchronize_checkpoint_boundary",
    "profile",
];

/// Reads the block, when the config has one.
pub(super) fn resolve(top: &mut Obj<'_>) -> Result<Option<ActivationCheckpointing>, ConfigError> {
    let Some(mut o) = top.obj("activation_checkpointing")? else {
        return Ok(None);
    };
    if o.bool("partition_activations")?.unwrap_or(false) {
        return Err(ConfigError::Unsupported {
            key: o.key("partition_activations"),
            feature: "partitioning activation checkpoints over model-parallel ranks".into(),
        });
    }
    let cpu_checkpointing = o.bool("cpu_checkpointing")?.unwrap_or(false);
    let number_checkpoints = o.u64("number_checkpoints")?;
    let _ = o.bool("contiguous_memory_optimization")?;
    let _ = o.bool("synchronize_checkpoint_boundary")?;
    let _ = o.bool("profile")?;
    o.finish(&KEYS, &[])?;
    Ok(Some(ActivationCheckpointing {
        number_checkpoints,
        cpu_checkpointing,
    }))
}
