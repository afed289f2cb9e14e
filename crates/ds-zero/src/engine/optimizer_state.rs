//! The engine's optimizer, wherever its state lives: on the device beside the parameters, or
//! offloaded to a host backend ([`crate::offload`]). Everything outside the step reaches the
//! state through this one type, so checkpoints and reports do not depend on the placement.

use crate::config::{OptimizerConfig, OptimizerKind};
use crate::offload::{Offload, OffloadSettings};
use crate::optimizer::{Optimizer, StateKind};
use ds_core::{Backend, Device, MemoryStats, Result};
use std::ops::Range;

pub(crate) enum Side<B: Backend> {
    Device(Optimizer<B>),
    Host(Box<dyn Offload<B>>),
}

/// One rank's optimizer: type, hyper-parameters, applied steps and state.
pub struct OptimizerState<B: Backend> {
    pub(crate) side: Side<B>,
}

/// Where an offloaded optimizer's state lives, and how much host memory it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct OffloadReport {
    /// The configured placement.
    pub settings: OffloadSettings,
    /// The host backend's name.
    pub host: String,
    /// The host backend's memory statistics.
    pub host_memory: MemoryStats,
    /// With `device: nvme`, this rank's swap file and the I/O path it uses.
    pub swap: Option<(std::path::PathBuf, String)>,
}

impl<B: Backend> OptimizerState<B> {
    /// The resolved configuration (type and hyper-parameters).
    pub fn config(&self) -> &OptimizerConfig {
        match &self.side {
            Side::Device(o) => o.config(),
            Side::Host(h) => h.config(),
        }
    }

    /// Applied optimizer steps so far.
    pub fn steps(&self) -> u64 {
        match &self.side {
            Side::Device(o) => o.steps(),
            Side::Host(h) => h.steps(),
        }
    }

    /// Whether the optimizer has Adam-style betas (what OneCycle's momentum cycling needs).
    pub fn has_betas(&self) -> bool {
        !matches!(
            self.config().kind,
            OptimizerKind::Sgd(_) | OptimizerKind::Adagrad(_)
        )
    }

    /// Bytes of optimizer state on this rank (master weights included), wherever it lives.
    pub fn state_bytes(&self) -> u64 {
        match &self.side {
            Side::Device(o) => o.state_bytes(),
            Side::Host(h) => h.state_bytes(),
        }
    }

    /// Where the state was offloaded to, with the host's memory; `None` on the device.
    pub fn offload(&self) -> Option<OffloadReport> {
        match &self.side {
            Side::Device(_) => None,
            Side::Host(h) => Some(OffloadReport {
                settings: h.settings().clone(),
                host: h.host_name().to_string(),
                host_memory: h.host_memory(),
                swap: h.swap(),
            }),
        }
    }

    /// The offloaded host side, when there is one.
    pub(crate) fn host_mut(&mut self) -> Option<&mut (dyn Offload<B> + 'static)> {
        match &mut self.side {
            Side::Device(_) => None,
            Side::Host(h) => Some(h.as_mut()),
        }
    }

    pub(crate) fn set_steps(&mut self, steps: u64) {
        match &mut self.side {
            Side::Device(o) => o.set_steps(steps),
            Side::Host(h) => h.set_steps(steps),
        }
    }

    /// The `kind` state of partition elements `local`, as f32 (`None` when not kept).
    pub(crate) fn read_piece(
        &self,
        dev: &Device<B>,
        kind: StateKind,
        local: Range<usize>,
    ) -> Result<Option<Vec<f32>>> {
        match &self.side {
            Side::Device(o) => o.read_piece(dev, kind, local),
            Side::Host(h) => h.read_piece(kind, local),
        }
    }

    /// Whether the optimizer keeps `kind` state.
    pub(crate) fn keeps(&self, kind: StateKind) -> bool {
        match &self.side {
            Side::Device(o) => o.keeps(kind),
            Side::Host(h) => h.keeps(kind),
        }
    }

    /// Writes `values` into the `kind` state at `local` (nothing when it is not kept).
    pub(crate) fn write_piece(
        &mut self,
        dev: &Device<B>,
        kind: StateKind,
        local: usize,
        values: &[f32],
    ) -> Result<()> {
        match &mut self.side {
            Side::Device(o) => o.write_piece(dev, kind, local, values),
            Side::Host(h) => h.write_piece(kind, local, values),
        }
    }
}
