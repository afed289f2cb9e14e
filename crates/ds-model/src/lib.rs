//! ds-model: the contract between a model and whatever trains it.
//!
//! A model lists its parameters ([`ParamSpec`]) in groups ([`ParamGroup`]: a layer or a block,
//! in the order it uses them), computes a loss reading parameters through [`Params`] and
//! accumulates gradients into a [`GradSink`]. It never owns its parameters, so the trainer
//! decides where they live: whole on every rank (ZeRO 0-2) or partitioned and gathered group
//! by group (ZeRO 3). A model reads a group's parameters only inside a scope it opens and
//! closes ([`Params::open`] / [`Params::close`]): at stages 0-2 a scope costs a flag, at stage
//! 3 it is where the gather and the release happen, and a read outside one is an error naming
//! the parameter and its group instead of stale or empty data.
//!
//! This crate depends on ds-core alone, so layers and models (ds-nn) are written against it
//! without depending on the engine (ds-zero).

pub mod data;
mod grads;
pub mod host;
mod model;
mod params;
mod spec;

pub use data::{Dataset, splitmix};
pub use grads::GradSink;
pub use model::Model;
pub use params::{ParamSource, Params};
pub use spec::{ParamGroup, ParamSpec, ParamTable, Slot};
