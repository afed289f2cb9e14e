//! The model contract the engine drives, from ds-model (re-exported so engine users need one
//! import path): the engine owns parameters, gradients and optimizer state; the model
//! describes its parameters in groups, reads them through scoped [`Params`] and accumulates
//! gradients into a [`GradSink`].

pub use ds_model::{GradSink, Model, ParamGroup, ParamSource, ParamSpec, ParamTable, Params, Slot};
