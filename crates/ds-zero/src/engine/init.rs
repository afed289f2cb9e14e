//! `initialize`: from a resolved config, a device, collectives, a model and a dataset to an
//! engine, its optimizer, a data loader and the LR schedule.

use super::{Counters, Engine, Phase, Timers, log::LogState};
use crate::config::{Config, OptimizerConfig};
use crate::data::{DataLoader, Dataset};
use crate::grads::Grads;
use crate::host::upload_f32;
use crate::layout::Layout;
use crate::model::Model;
use crate::optimizer::Optimizer;
use crate::scaler::LossScaler;
use crate::schedule::LrSchedule;
use crate::{Error, Result};
use ds_core::{Backend, BufferExt, Collectives, DType, Device};
use std::collections::HashSet;

/// What [`initialize`] returns, DeepSpeed's four objects: the engine, the optimizer, the data
/// loader and the LR schedule. The engine owns and steps the live optimizer and schedule
/// (they must move together with the loss scaler); `optimizer` and `lr_schedule` here are their
/// resolved descriptions, and [`Engine::optimizer`] / [`Engine::lr_schedule`] reach the live
/// ones.
pub struct Initialized<B: Backend, M: Model<B>, D: Dataset> {
    /// The engine.
    pub engine: Engine<B, M>,
    /// The optimizer's type and hyper-parameters.
    pub optimizer: OptimizerConfig,
    /// This rank's loader over the dataset: `train_micro_batch_size_per_gpu` samples per
    /// batch, the same global batches whatever the world size.
    pub data_loader: DataLoader<D>,
    /// The LR schedule, when the config has one.
    pub lr_schedule: Option<LrSchedule>,
}

fn unsupported(what: &str) -> Error {
    Error::Usage(format!(
        "{what} is accepted by the config but not implemented by this engine yet; use ZeRO stage 0, 1 or 2 \
         without offload"
    ))
}

/// Builds the engine for `model` on `device`, one rank of `comm`, as `config` says, with a
/// data loader over `dataset`. Parameters are initialised by the model from `config.seed`
/// and broadcast from rank 0, so every rank starts from the same weights.
///
/// # Errors
/// [`Error::Usage`] when the config was resolved for another world size, has no optimizer,
/// or asks for ZeRO stage 3 or offload (not implemented yet), or when the model's parameters
/// have duplicate names or non-finite initial values; allocation and collective errors.
pub fn initialize<B, M, D>(
    config: &Config,
    device: Device<B>,
    comm: Box<dyn Collectives<B>>,
    model: M,
    dataset: D,
) -> Result<Initialized<B, M, D>>
where
    B: Backend,
    M: Model<B>,
    D: Dataset,
{
    let (world, rank) = (comm.world_size(), comm.rank());
    if config.batch.world_size != world as u64 {
        return Err(Error::Usage(format!(
            "the config was resolved for world size {} but the collectives have {world} ranks; parse it with \
             world size {world}",
            config.batch.world_size
        )));
    }
    let stage = config.zero.stage;
    if stage >= 3 {
        return Err(unsupported("ZeRO stage 3"));
    }
    let offloads =
        |o: &Option<crate::config::OffloadConfig>| o.as_ref().is_some_and(|o| o.device != "none");
    if offloads(&config.zero.offload_optimizer) {
        return Err(unsupported("zero_optimization.offload_optimizer"));
    }
    if offloads(&config.zero.offload_param) {
        return Err(unsupported("zero_optimization.offload_param"));
    }
    let optimizer_config = config.optimizer.clone().ok_or_else(|| {
        Error::Usage(
            "the config has no `optimizer`: add one, e.g. {\"type\": \"AdamW\", \"params\": {\"lr\": 1e-3}}".into(),
        )
    })?;
    let specs = model.parameters();
    let mut seen = HashSet::new();
    for s in &specs {
        if !seen.insert(s.name.as_str()) {
            return Err(Error::Usage(format!(
                "two model parameters are named `{}`: names identify parameters in checkpoints and must be unique",
                s.name
            )));
        }
    }
    let dtype = config.precision.dtype();
    let bucket = usize::try_from(config.zero.reduce_bucket_size).unwrap_or(usize::MAX);
    let layout = Layout::new(&specs, bucket, world, rank, stage >= 1);

    let mut host = vec![0f32; layout.len];
    for (i, (spec, slot)) in specs.iter().zip(&layout.slots).enumerate() {
        let values = &mut host[slot.offset..slot.offset + slot.len];
        model.init(i, config.seed, values);
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::Usage(format!(
                "the model's initial values of `{}` are not all finite",
                spec.name
            )));
        }
    }
    let mut params = device.alloc(dtype, layout.len)?;
    upload_f32(&device, &host, params.all_mut())?;
    drop(host);
    if world > 1 {
        comm.broadcast(&device, params.all_mut(), 0)?;
    }
    let grads = Grads::new(&device, &layout, dtype, stage >= 2)?;
    let optimizer = Optimizer::new(&device, optimizer_config.clone(), &layout, &params, dtype)?;
    let schedule = config
        .scheduler
        .clone()
        .map(|s| LrSchedule::new(s, f64::from(optimizer_config.lr()), optimizer.has_betas()));
    let norm_parts = device.alloc(DType::F32, layout.buckets.len())?;
    let reduced = device.alloc(DType::F32, 2)?;
    let b = config.batch;
    let data_loader = DataLoader::new(
        dataset,
        b.micro_batch_per_gpu as usize,
        b.gradient_accumulation_steps as usize,
        rank,
        world,
        config.seed,
        true,
    );
    let engine = Engine {
        config: config.clone(),
        dev: device,
        comm,
        model,
        specs,
        layout,
        dtype,
        params,
        grads,
        optimizer,
        schedule: schedule.clone(),
        schedule_iter: -1,
        scaler: LossScaler::from_config(match &config.precision {
            crate::config::Precision::Fp16(c) => Some(c),
            _ => None,
        }),
        counters: Counters::default(),
        phase: Phase::Ready,
        forwards: 0,
        window_loss: 0.0,
        norm_parts,
        reduced,
        timers: Timers::default(),
        log: LogState::new(),
        save_fault: None,
    };
    Ok(Initialized {
        engine,
        optimizer: optimizer_config,
        data_loader,
        lr_schedule: schedule,
    })
}
