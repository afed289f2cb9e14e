//! `initialize`: from a resolved config, a device, collectives, a model and a dataset to an
//! engine, its optimizer, a data loader and the LR schedule.

use super::optimizer_state::{OptimizerState, Side};
use super::{Counters, Engine, Phase, Timers, log::LogState};
use crate::config::{Config, OptimizerConfig, elements};
use crate::data::{DataLoader, Dataset};
use crate::grads::Grads;
use crate::host::upload_f32;
use crate::layout::{Layout, Persistence};
use crate::model::{Model, ParamTable};
use crate::offload::{self, HostSide};
use crate::optimizer::Optimizer;
use crate::scaler::LossScaler;
use crate::schedule::LrSchedule;
use crate::store::ParamStore;
use crate::zero3::{Limits, Partitioned};
use crate::{Error, Result};
use ds_core::{Backend, BufferExt, Collectives, DType, Device};

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

/// The layout `config` gives `table` on `rank` of `world`: buckets of `reduce_bucket_size`
/// at stages 0-2, the model's groups at stage 3.
pub(crate) fn layout_for(config: &Config, table: &ParamTable, world: usize, rank: usize) -> Layout {
    let z = &config.zero;
    if z.stage >= 3 {
        let persistence = Persistence {
            param_threshold: elements(z.stage3.param_persistence_threshold),
            model_threshold: elements(z.stage3.model_persistence_threshold),
        };
        Layout::stage3(table, persistence, world, rank)
    } else {
        Layout::new(
            table.specs(),
            elements(z.reduce_bucket_size),
            world,
            rank,
            z.stage >= 1,
        )
    }
}

/// Builds the engine for `model` on `device`, one rank of `comm`, as `config` says, with a
/// data loader over `dataset`. Parameters are initialised by the model from `config.seed`
/// and broadcast from rank 0, so every rank starts from the same weights.
///
/// # Errors
/// [`Error::Usage`] when the config was resolved for another world size, has no optimizer,
/// or offloads (which needs a host: [`initialize_with_host`]), when the model's parameters
/// have duplicate names, invalid groups or non-finite initial values, when a stage-3 group is
/// larger than `stage3_max_live_parameters`, or when the device cannot hold this stage's model
/// states (naming the bytes and the stage that would fit); allocation and collective errors.
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
    if offload::requested(config).is_some() {
        return Err(Error::Usage(
            "zero_optimization.offload_optimizer keeps the optimizer state on a host backend: build the engine with \
             ds_zero::initialize_with_host and the CPU backend (the ds command line does)"
                .into(),
        ));
    }
    build(config, device, None, comm, model, dataset)
}

/// As [`initialize`], with `host` holding what the config offloads
/// (`zero_optimization.offload_optimizer: {"device": "cpu"}`): the fp32 master weights, the
/// optimizer moments and the gradient partition, with the optimizer step run on `host`'s
/// kernels. Without offload in the config, `host` is unused and this is [`initialize`].
///
/// # Errors
/// As [`initialize`]; [`Error::Usage`] for offload settings ds does not implement (named),
/// offload at ZeRO stage 0, Lamb with offload, or a host that cannot hold the offloaded state.
pub fn initialize_with_host<B, H, M, D>(
    config: &Config,
    device: Device<B>,
    host: Device<H>,
    comm: Box<dyn Collectives<B>>,
    model: M,
    dataset: D,
) -> Result<Initialized<B, M, D>>
where
    B: Backend,
    H: Backend,
    M: Model<B>,
    D: Dataset,
{
    let Some(settings) = offload::requested(config) else {
        return build(config, device, None, comm, model, dataset);
    };
    let host = offload::HostBackend::new(host, settings);
    build(config, device, Some(Box::new(host)), comm, model, dataset)
}

fn build<B, M, D>(
    config: &Config,
    device: Device<B>,
    host: Option<Box<dyn HostSide<B>>>,
    comm: Box<dyn Collectives<B>>,
    mut model: M,
    dataset: D,
) -> Result<Initialized<B, M, D>>
where
    B: Backend,
    M: Model<B>,
    D: Dataset,
{
    // A model that cannot shorten its sequences is refused first, by name, not at a step.
    let curriculum = match &config.curriculum {
        Some(c) => {
            model.set_curriculum_seqlen(usize::try_from(c.min_difficulty).unwrap_or(usize::MAX))?;
            Some(crate::config::Curriculum::new(c.clone()))
        }
        None => None,
    };
    let (world, rank) = (comm.world_size(), comm.rank());
    if config.batch.world_size != world as u64 {
        return Err(Error::Usage(format!(
            "the config was resolved for world size {} but the collectives have {world} ranks; parse it with \
             world size {world}",
            config.batch.world_size
        )));
    }
    let stage = config.zero.stage;
    offload::check_supported(config)?;
    let optimizer_config = config.optimizer.clone().ok_or_else(|| {
        Error::Usage(
            "the config has no `optimizer`: add one, e.g. {\"type\": \"AdamW\", \"params\": {\"lr\": 1e-3}}".into(),
        )
    })?;
    let table = ParamTable::of(&model).map_err(|e| Error::Usage(e.to_string()))?;
    let dtype = config.precision.dtype();
    let layout = layout_for(config, &table, world, rank);
    let limits = Limits::from_config(&config.zero.stage3);
    if stage >= 3 {
        check_groups_fit(&table, &layout, limits.max_live)?;
    }
    // Refuse before allocating anything when this stage's model states cannot fit.
    let host_info = host.as_ref().map(|h| h.info());
    crate::estimate::check_fits(config, &table, &device, host_info.as_ref(), world)?;

    let mut values = vec![0f32; layout.len];
    for (i, (spec, slot)) in table.specs().iter().zip(&layout.slots).enumerate() {
        let init = &mut values[slot.offset..slot.offset + slot.len];
        model.init(i, config.seed, init);
        if init.iter().any(|v| !v.is_finite()) {
            return Err(Error::Usage(format!(
                "the model's initial values of `{}` are not all finite",
                spec.name
            )));
        }
    }
    let params = if stage >= 3 {
        // Every rank computed the same values from the seed; each keeps only its slices.
        let offloaded = match (&host, &config.zero.offload_param) {
            (Some(h), Some(_)) => Some(h.params(
                dtype,
                Partitioned::<B>::part_len(&layout),
                rank,
                offload::param_swap(config).as_ref(),
            )?),
            _ => None,
        };
        ParamStore::Partitioned(Box::new(Partitioned::new(
            &device, &layout, dtype, limits, &values, offloaded,
        )?))
    } else {
        let mut params = device.alloc(dtype, layout.len)?;
        upload_f32(&device, &values, params.all_mut())?;
        if world > 1 {
            comm.broadcast(&device, params.all_mut(), 0)?;
        }
        ParamStore::Flat(params)
    };
    drop(values);
    let grad_dtypes = config.grad_dtypes();
    let grads = Grads::new(&device, &layout, grad_dtypes, stage >= 2, host.is_some())?;
    let side = match host {
        Some(h) => Side::Host(h.optimizer(
            &device,
            optimizer_config.clone(),
            &layout,
            &params,
            grad_dtypes,
        )?),
        None => Side::Device(Optimizer::new(
            &device,
            optimizer_config.clone(),
            &layout,
            &params,
            dtype,
            false,
        )?),
    };
    let optimizer = OptimizerState { side };
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
        table,
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
        step_gathered: 0,
        log: LogState::new(),
        save_fault: None,
        curriculum,
    };
    Ok(Initialized {
        engine,
        optimizer: optimizer_config,
        data_loader,
        lr_schedule: schedule,
    })
}

/// Refuses a stage-3 group whose gathered bucket alone exceeds `stage3_max_live_parameters`.
fn check_groups_fit(table: &ParamTable, layout: &Layout, max_live: usize) -> Result<()> {
    let Some(groups) = &layout.groups else {
        return Ok(());
    };
    for (g, bucket) in groups.group_bucket.iter().enumerate() {
        let Some(b) = bucket else { continue };
        let gathered = layout.buckets[*b].range.len();
        if gathered > max_live {
            return Err(Error::Usage(format!(
                "ZeRO stage 3: group `{}` gathers {gathered} elements ({} parameter elements, padded to a multiple of \
                 {} per rank), more than stage3_max_live_parameters = {max_live}: raise the limit or split the group",
                table.groups()[g].name,
                layout.buckets[*b]
                    .params
                    .iter()
                    .map(|&i| layout.slots[i].len)
                    .sum::<usize>(),
                crate::layout::ALIGN,
            )));
        }
    }
    Ok(())
}
