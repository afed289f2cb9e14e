//! ds-zero: DeepSpeed's training engine for ds.
//!
//! A user writes a DeepSpeed JSON config ([`config::Config`]), implements [`model::Model`] (or
//! uses ds-nn's models), and trains with [`initialize`] then `forward`, `backward(loss)` and
//! `step()` on every micro-batch, as with DeepSpeed. Everything here is generic over the
//! backend and the collectives, so it runs unchanged on every backend, one process or many.
//!
//! - [`config`]: the strict DeepSpeed schema, every default resolved in one place;
//! - [`engine`]: gradient accumulation, clipping, mixed precision, ZeRO stages 0-2;
//! - [`schedule`]: WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle, LRRangeTest;
//! - [`scaler`]: fp16 dynamic and static loss scaling;
//! - [`checkpoint`]: DeepSpeed's layout in safetensors and JSON, written atomically;
//! - [`data`]: a rank-sharded, deterministic, resumable data loader;
//! - [`testing`]: a small MLP and dataset for tests and backend checks.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod engine;
mod error;
mod grads;
pub mod host;
pub mod layout;
pub mod model;
pub mod optimizer;
pub mod scaler;
pub mod schedule;
pub mod testing;

pub use engine::{Counters, Engine, Initialized, Loss, StepReport, initialize};
pub use error::{Error, Result};
