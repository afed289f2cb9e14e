//! ds-zero: DeepSpeed's training engine for ds.
//!
//! A user writes a DeepSpeed JSON config ([`config::Config`]), implements [`model::Model`] (or
//! uses ds-nn's models), and trains with [`initialize`] then `forward`, `backward(loss)` and
//! `step()` on every micro-batch, as with DeepSpeed. Everything here is generic over the
//! backend and the collectives, so it runs unchanged on every backend, one process or many.
//!
//! - [`config`]: the strict DeepSpeed schema, every default resolved in one place;
//! - [`engine`]: gradient accumulation, clipping, mixed precision, ZeRO stages 0-3;
//! - [`zero3`]: stage 3's gathered parameters, prefetch and trace;
//! - [`offload`]: ZeRO-Offload and ZeRO-Infinity, the optimizer state and step on a host
//!   backend ([`initialize_with_host`]), the state and parameters in NVMe swap files;
//! - [`schedule`]: WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle, LRRangeTest;
//! - [`scaler`]: fp16 dynamic and static loss scaling;
//! - [`checkpoint`]: DeepSpeed's layout in safetensors and JSON, written atomically;
//! - [`data`]: a rank-sharded, deterministic, resumable data loader.
//!
//! The model contract ([`model`], [`host`]) lives in ds-model, so layers and models depend on
//! it and not on the engine.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod engine;
mod error;
pub mod estimate;
mod grads;
pub mod layout;
pub mod model;
pub mod offload;
pub mod optimizer;
mod owned;
pub mod scaler;
pub mod schedule;
mod store;
mod wire;
pub mod zero3;

pub use ds_model::host;
pub use engine::{
    Counters, Engine, Initialized, Loss, OffloadReport, OptimizerState, StepReport, Traffic,
    initialize, initialize_with_host,
};
pub use error::{Error, Result};
pub use offload::OffloadSettings;
