//! `ds train`: the main job. Trains ds-nn's GPT (or MLP) with the engine on a DeepSpeed
//! config, on any compiled backend, on one rank or every rank of `mpirun`; shows progress,
//! writes metrics as JSON lines and a loss-curve PNG, saves checkpoints, resumes, and prints a
//! sample of the GPT's text.

pub mod auto;
mod corpus;
mod memory;
mod metrics;
mod plot;
mod sample;

use crate::backends::{BackendKind, DeviceTask, with_backend};
use crate::world::{World, launched_by_mpirun};
use ds_core::cpu::CpuBackend;
use ds_core::{Backend, Device};
use ds_nn::Blobs;
use ds_nn::data::{ByteTokenizer, TokenWindows, load_tokens, unigram_entropy};
use ds_nn::{Gpt, GptConfig, MlpClassifier};
use ds_zero::config::Config;
use ds_zero::data::{DataLoader, Dataset};
use ds_zero::estimate::model_states;
use ds_zero::model::Model;
use ds_zero::model::ParamTable;
use ds_zero::{Engine, Initialized, initialize_with_host};
use metrics::{Metrics, Progress, Record};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub use corpus::default_corpus;

/// `ds train`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// A DeepSpeed JSON config (default: built in; AdamW, WarmupCosineLR, clipping 1.0,
    /// ZeRO-2, global batch 32).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The model: gpt (on text) or mlp (a classifier on synthetic Gaussian blobs).
    #[arg(long, default_value = "gpt")]
    pub model: String,
    /// GPT: transformer blocks.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// GPT: attention heads.
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// GPT: model width.
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// GPT: context length in tokens.
    #[arg(long, default_value_t = 64)]
    pub context: usize,
    /// MLP: hidden width (two hidden layers).
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// Training text (bytes are tokens) or a .bin file of u16 token ids (default: this
    /// project's documentation, built into ds).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The backend to train on (its help lists every backend ds knows).
    #[arg(long, default_value = "cpu", help = format!("Backend: {} (those compiled in)", crate::backends::BackendKind::names()))]
    pub backend: String,
    /// Train on this many ranks as threads of this process, each with its own device (ZeRO's
    /// partitioning on one machine without MPI; under mpirun leave it at 1).
    #[arg(long, default_value_t = 1)]
    pub ranks: usize,
    /// Optimizer steps to train (in total, counting those of a resumed run).
    #[arg(long, default_value_t = 800)]
    pub steps: u64,
    /// Where checkpoints, metrics.jsonl and loss.png go.
    #[arg(long, default_value = "runs/ds-train")]
    pub save_dir: PathBuf,
    /// Save a checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 100)]
    pub save_every: u64,
    /// Continue from the newest checkpoint in --save-dir.
    #[arg(long)]
    pub resume: bool,
    /// GPT: tokens of sample text to print at the end (0: none).
    #[arg(long, default_value_t = 400)]
    pub sample_tokens: usize,
    /// GPT: sampling temperature of the sample (1 samples the model's own distribution).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Seed of the data order and the sample.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// GPT: the share of the corpus, taken from its end, held out to measure a validation
    /// loss at every `steps_per_print` steps (default 0.05; 0 holds out nothing).
    #[arg(long)]
    pub val_fraction: Option<f64>,
}

/// The built-in config, with the schedule's length set to `steps`.
fn default_config(steps: u64) -> Value {
    json!({
        "train_batch_size": 32,
        "steps_per_print": 50,
        "optimizer": {"type": "AdamW", "params": {"lr": 0.003, "betas": [0.9, 0.95],
                                                  "weight_decay": 0.1}},
        "scheduler": {"type": "WarmupCosineLR", "params": {
            "total_num_steps": steps.max(1), "warmup_num_steps": (steps / 10).max(1),
            "cos_min_ratio": 0.1}},
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": 2}
    })
}

/// Runs `ds train`.
///
/// # Errors
/// A one-line message saying what is wrong and what to do.
pub fn run(args: &TrainArgs) -> Result<(), String> {
    if args.steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    if args.save_every == 0 {
        return Err("--save-every must be at least 1".into());
    }
    if !(args.temperature.is_finite() && args.temperature > 0.0) {
        return Err("--temperature must be a positive number".into());
    }
    if !matches!(args.model.as_str(), "gpt" | "mlp") {
        return Err(format!("unknown --model {:?}: use gpt or mlp", args.model));
    }
    if args.model == "mlp" && args.data.is_some() {
        return Err("--data is for the GPT; the MLP trains on synthetic Gaussian blobs".into());
    }
    if let Some(f) = args.val_fraction
        && !(0.0..1.0).contains(&f)
    {
        return Err(format!(
            "--val-fraction {f}: give a share of the corpus from 0 (hold out nothing) to below 1"
        ));
    }
    if args.model == "mlp" && args.val_fraction.is_some() {
        return Err(
            "--val-fraction is for the GPT's corpus; the MLP trains on synthetic blobs".into(),
        );
    }
    let kind: BackendKind = args
        .backend
        .parse()
        .map_err(|e: ds_core::Error| e.to_string())?;
    let text = match &args.config {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the config {}: {e} (pass --config with a DeepSpeed JSON file, \
                 or leave it out for the built-in one)",
                path.display()
            )
        })?),
        None => None,
    };
    if args.ranks == 0 {
        return Err("--ranks must be at least 1".into());
    }
    let mut worlds = if args.ranks > 1 {
        if launched_by_mpirun() {
            return Err(
                "--ranks runs threads of one process as ranks; under mpirun each process is a rank: \
                 leave --ranks out"
                    .into(),
            );
        }
        World::threads(args.ranks)
    } else {
        vec![World::init()?]
    };
    let world_size = worlds[0].world_size;
    let width = if args.model == "mlp" {
        args.hidden
    } else {
        args.dim
    };
    let (mut config, resolved) = match (&text, &args.config) {
        (Some(text), Some(p)) => {
            Config::parse_with(text, world_size, &auto::fill(args.steps, width))
                .map_err(|e| format!("{}: {e}", p.display()))?
        }
        _ => (
            Config::from_value(&default_config(args.steps), world_size)
                .map_err(|e| e.to_string())?,
            Vec::new(),
        ),
    };
    if worlds[0].rank == 0 {
        for line in auto::lines(&resolved) {
            println!("{line}");
        }
    }
    config.seed = args.seed;
    std::fs::create_dir_all(&args.save_dir).map_err(|e| {
        format!(
            "cannot create the save directory {}: {e} (pass --save-dir with a writable path)",
            args.save_dir.display()
        )
    })?;
    let task = |world: World| {
        with_backend(
            kind,
            Task {
                args,
                config: config.clone(),
                world,
            },
        )
        .map_err(|e| e.to_string())?
    };
    if worlds.len() == 1 {
        return task(worlds.remove(0));
    }
    // Every rank's thread runs the whole job; the first error (rank order) is the answer.
    std::thread::scope(|scope| {
        let handles: Vec<_> = worlds
            .into_iter()
            .map(|w| scope.spawn(|| task(w)))
            .collect();
        let results: Vec<Result<(), String>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a rank's thread panicked".into()))
            })
            .collect();
        results.into_iter().collect::<Result<(), String>>()
    })
}

struct Task<'a> {
    args: &'a TrainArgs,
    config: Config,
    world: World,
}

impl DeviceTask for Task<'_> {
    type Output = Result<(), String>;

    fn run<B: Backend>(self, device: Device<B>) -> Result<(), String> {
        match self.args.model.as_str() {
            "mlp" => train_mlp(self, device),
            _ => train_gpt(self, device),
        }
    }
}

/// The host backend for what the config offloads (`offload_optimizer`): the CPU backend.
fn host() -> Result<Device<CpuBackend>, String> {
    Ok(Device::new(CpuBackend::new().map_err(|e| e.to_string())?))
}

/// The memory the device can give, for the size check.
fn available<B: Backend>(device: &Device<B>) -> Option<u128> {
    if device.info().backend == "cpu" {
        memory::host_available()
    } else {
        Some(u128::from(device.info().memory_total))
    }
}

fn train_gpt<B: Backend>(task: Task<'_>, device: Device<B>) -> Result<(), String> {
    let Task {
        args,
        config,
        world,
    } = task;
    let lead = world.rank == 0;
    let (tokens, vocab) = match &args.data {
        Some(path) => load_tokens(path).map_err(|e| e.to_string())?,
        None => (ByteTokenizer.encode(&default_corpus()), 256),
    };
    let shape = GptConfig {
        vocab,
        context: args.context,
        layers: args.layers,
        heads: args.heads,
        dim: args.dim,
    };
    shape
        .validate()
        .map_err(|e| format!("{e} (check --dim, --heads, --layers and --context)"))?;
    let dtype = config.precision.dtype();
    let mut gpt = Gpt::<B>::new(shape, dtype).map_err(|e| e.to_string())?;
    if let Some(ac) = config.activation_checkpointing {
        gpt.set_checkpointed_blocks(ac.blocks(args.layers));
        gpt.set_checkpoints_on_host(ac.cpu_checkpointing);
        if lead {
            println!(
                "[ds] activation checkpointing: {} of {} blocks recompute their activations in backward{}",
                gpt.checkpointed_blocks(),
                args.layers,
                if ac.cpu_checkpointing {
                    ", their inputs kept in host memory (cpu_checkpointing)"
                } else {
                    ""
                }
            );
        }
    }
    if let (Some(c), true) = (&config.curriculum, lead) {
        println!(
            "[ds] curriculum learning: training sequences of {} to {} tokens (of the context's {}), lengthened on its schedule",
            c.min_difficulty, c.max_difficulty, args.context
        );
    }
    let table = ParamTable::of(&gpt).map_err(|e| e.to_string())?;
    let states = model_states(&config, &table, world.world_size, config.zero.stage);
    let micro_tokens = config.batch.micro_batch_per_gpu as usize * args.context;
    let need = memory::estimate_bytes(
        states.total(),
        dtype.size_bytes(),
        micro_tokens,
        args.layers,
        args.dim,
        args.context,
        vocab,
    );
    if device.info().backend == "cpu" {
        // Device and host are the same memory: offloaded states count against it too.
        let need = need + u128::from(states.host_total());
        memory::check_fits(need, available(&device), &device.info().name)?;
    } else {
        memory::check_fits(need, available(&device), &device.info().name)?;
        let host = u128::from(states.host_total());
        memory::check_fits(
            host,
            memory::host_available(),
            "the host (offload_optimizer)",
        )?;
    }
    let (tokens, val) = split_validation(tokens, args, config.batch.micro_batch_per_gpu)?;
    let tokens = Arc::new(tokens);
    let data = TokenWindows::new(Arc::clone(&tokens), args.context).map_err(|e| e.to_string())?;
    if (data.len() as u64) < config.batch.train_batch_size {
        return Err(format!(
            "the corpus gives {} sequences of {} tokens, fewer than one global batch of {}: use \
             more data, a shorter --context or a smaller train_batch_size",
            data.len(),
            args.context + 1,
            config.batch.train_batch_size
        ));
    }
    let tokens_per_step = config.batch.train_batch_size as f64 * args.context as f64;
    if lead {
        println!(
            "[ds] GPT: {} layers, {} heads, width {}, context {}, vocab {}: {} parameters ({}); \
             {} tokens of {}; {} rank(s), global batch {} sequences",
            args.layers,
            args.heads,
            args.dim,
            args.context,
            vocab,
            shape.numel(),
            dtype,
            tokens.len(),
            args.data
                .as_ref()
                .map_or("ds's own documentation".to_string(), |p| p
                    .display()
                    .to_string()),
            world.world_size,
            config.batch.train_batch_size
        );
    }
    let client = json!({"model": {"kind": "gpt", "vocab": vocab, "context": args.context,
        "layers": args.layers, "heads": args.heads, "dim": args.dim}});
    let comm = world.collectives(device.backend())?;
    let Initialized {
        mut engine,
        mut data_loader,
        ..
    } = initialize_with_host(&config, device, host()?, comm, gpt, data)
        .map_err(|e| e.to_string())?;
    if lead && !val.is_empty() {
        println!(
            "[ds] validation: {} held-out sequences ({} tokens, the last {:.0}% of the corpus), \
             measured every {} steps",
            val.iter().map(Vec::len).sum::<usize>(),
            val.iter().flatten().map(|s| s.len() - 1).sum::<usize>(),
            100.0 * args.val_fraction.unwrap_or(DEFAULT_VAL_FRACTION),
            validation_interval(&config)
        );
    }
    let started = train_loop(
        args,
        &mut engine,
        &mut data_loader,
        tokens_per_step,
        &client,
        &val,
    )?;
    // At ZeRO stage 3 reading the whole parameters gathers them: every rank takes part.
    let named = if args.sample_tokens > 0 {
        engine.parameters().map_err(|e| e.to_string())?
    } else {
        Vec::new()
    };
    if !lead {
        return Ok(());
    }
    let entropy = unigram_entropy(&tokens);
    finish(args, started, entropy, "unigram entropy of the corpus")?;
    if args.sample_tokens > 0 {
        let prompt: Vec<i32> = tokens
            .iter()
            .take(16.min(args.context))
            .map(|&t| i32::from(t))
            .collect();
        let out = sample::generate(
            engine.device(),
            shape,
            &named,
            &prompt,
            args.sample_tokens,
            args.temperature,
            args.seed,
        )
        .map_err(|e| e.to_string())?;
        println!(
            "\n--- sample (temperature {}) ---\n{}{}\n---",
            args.temperature,
            ByteTokenizer.decode(&prompt),
            ByteTokenizer.decode(&out)
        );
    }
    Ok(())
}

fn train_mlp<B: Backend>(task: Task<'_>, device: Device<B>) -> Result<(), String> {
    let Task {
        args,
        config,
        world,
    } = task;
    let (features, classes) = (32, 10);
    let model = MlpClassifier::<B>::new(
        features,
        &[args.hidden, args.hidden],
        classes,
        config.precision.dtype(),
    );
    let data = Blobs::new(8192, features, classes, args.seed);
    let client = json!({"model": {"kind": "mlp", "hidden": args.hidden}});
    let tokens_per_step = config.batch.train_batch_size as f64;
    let lead = world.rank == 0;
    let comm = world.collectives(device.backend())?;
    let Initialized {
        mut engine,
        mut data_loader,
        ..
    } = initialize_with_host(&config, device, host()?, comm, model, data)
        .map_err(|e| e.to_string())?;
    let started = train_loop(
        args,
        &mut engine,
        &mut data_loader,
        tokens_per_step,
        &client,
        &[],
    )?;
    if lead {
        finish(args, started, (classes as f64).ln(), "chance (ln classes)")?;
    }
    Ok(())
}

/// The share of the corpus `ds train` holds out for validation unless told otherwise.
const DEFAULT_VAL_FRACTION: f64 = 0.05;
/// Held-out sequences measured at each validation, at most.
const VAL_BATCHES: usize = 4;

/// Steps between validations: the config's `steps_per_print`, or 50.
fn validation_interval(config: &Config) -> u64 {
    config.steps_per_print.unwrap_or(50).max(1)
}

/// Held-out micro-batches of GPT sequences.
type Batches = Vec<Vec<Vec<i32>>>;

/// Splits the corpus into the training tokens and, from its end, up to [`VAL_BATCHES`]
/// micro-batches of held-out windows. With the default fraction a corpus too small to spare
/// one window trains on all of it; a fraction asked for explicitly must leave a window.
fn split_validation(
    mut tokens: Vec<u16>,
    args: &TrainArgs,
    micro: u64,
) -> Result<(Vec<u16>, Batches), String> {
    let fraction = args.val_fraction.unwrap_or(DEFAULT_VAL_FRACTION);
    let held = (tokens.len() as f64 * fraction) as usize;
    if fraction == 0.0 || (held <= args.context && args.val_fraction.is_none()) {
        return Ok((tokens, Vec::new()));
    }
    if held <= args.context {
        return Err(format!(
            "--val-fraction {fraction}: the held-out {held} tokens are fewer than one sequence of \
             {} (use more data, a larger fraction, or 0)",
            args.context + 1
        ));
    }
    let val_tokens = tokens.split_off(tokens.len() - held);
    let windows =
        TokenWindows::new(Arc::new(val_tokens), args.context).map_err(|e| e.to_string())?;
    let micro = usize::try_from(micro).unwrap_or(usize::MAX).max(1);
    let all: Vec<Vec<i32>> = (0..windows.len().min(VAL_BATCHES * micro))
        .map(|i| windows.get(i))
        .collect();
    Ok((tokens, all.chunks(micro).map(<[_]>::to_vec).collect()))
}

/// The mean loss over the held-out batches (`Engine::evaluate`: no backward, no step).
fn validation_loss<B, M, I>(engine: &mut Engine<B, M>, val: &[Vec<I>]) -> Result<f32, String>
where
    B: Backend,
    M: Model<B, Batch = Vec<I>>,
{
    let mut sum = 0.0f64;
    for batch in val {
        sum += f64::from(engine.evaluate(batch).map_err(|e| e.to_string())?);
    }
    Ok((sum / val.len().max(1) as f64) as f32)
}

/// Trains to `args.steps` (resuming first when asked), recording and saving; returns the
/// step it started from.
fn train_loop<B, M, D>(
    args: &TrainArgs,
    engine: &mut Engine<B, M>,
    loader: &mut DataLoader<D>,
    tokens_per_step: f64,
    client: &Value,
    val: &[Vec<D::Item>],
) -> Result<u64, String>
where
    B: Backend,
    D: Dataset,
    M: Model<B, Batch = Vec<D::Item>>,
{
    let every = validation_interval(engine.config());
    let dir = &args.save_dir;
    let lead = engine.rank() == 0;
    if args.resume {
        if !dir.join("latest").exists() {
            return Err(format!(
                "--resume: there is no checkpoint in {} (no `latest` file); run without --resume \
                 first, or point --save-dir at an earlier run",
                dir.display()
            ));
        }
        let loaded = engine
            .load_checkpoint(dir, None, Some(loader))
            .map_err(|e| e.to_string())?;
        if loaded.client_state.get("model") != client.get("model") {
            return Err(format!(
                "--resume: the checkpoint {} in {} was trained with model {} but this run asks \
                 for {}; use the same model options",
                loaded.tag,
                dir.display(),
                loaded.client_state.get("model").unwrap_or(&Value::Null),
                client.get("model").unwrap_or(&Value::Null)
            ));
        }
    }
    let start = engine.counters().global_steps;
    if lead && args.resume {
        println!("[ds] resumed from step {start} in {}", dir.display());
    }
    if lead && let Some(o) = engine.optimizer().offload() {
        let state = engine.optimizer().state_bytes();
        match &o.swap {
            Some((file, io)) => println!(
                "[ds] optimizer state ({state} bytes) in the NVMe swap file {} ({io}); {} bytes of host memory on \
                 rank 0 (swap buffers, gradient partition), the device holding {} bytes",
                file.display(),
                o.host_memory.in_use,
                engine.memory_stats().in_use
            ),
            None => println!(
                "[ds] optimizer state offloaded to {} ({}): {} bytes of host memory on rank 0 ({state} of them \
                 optimizer state), the device holding {} bytes",
                o.settings.device,
                o.host,
                o.host_memory.in_use,
                engine.memory_stats().in_use
            ),
        }
    }
    let mut metrics = if lead {
        Some(Metrics::open(&dir.join("metrics.jsonl"), start)?)
    } else {
        None
    };
    let progress = Progress::new(start, args.steps, lead);
    while engine.counters().global_steps < args.steps {
        let t0 = Instant::now();
        let report = progress
            .around(|| engine.train_batch(loader))
            .map_err(|e| e.to_string())?;
        let mut record = Record {
            step: report.global_step,
            loss: report.loss,
            lr: report.lr,
            loss_scale: report.loss_scale,
            grad_norm: report.grad_norm,
            skipped: report.skipped,
            tokens_per_s: tokens_per_step / t0.elapsed().as_secs_f64().max(1e-9),
            val_loss: None,
        };
        let step = report.global_step;
        if !val.is_empty() && (step % every == 0 || step >= args.steps) {
            // Every rank evaluates the same held-out batches (at stage 3 they gather together).
            let loss = progress.around(|| validation_loss(engine, val))?;
            record.val_loss = Some(loss);
            if lead {
                progress.around(|| println!("[ds] step {step}: validation loss {loss:.6}"));
            }
        }
        if let Some(m) = metrics.as_mut() {
            m.write(&record)?;
        }
        progress.draw(&record);
        if step % args.save_every == 0 || step >= args.steps {
            let tag = format!("global_step{step}");
            progress
                .around(|| engine.save_checkpoint(dir, &tag, client, Some(&*loader)))
                .map_err(|e| e.to_string())?;
        }
    }
    progress.finish();
    let steps = engine.counters().global_steps - start;
    if lead && steps > 0 && engine.world_size() > 1 {
        let t = engine.traffic();
        let psi = engine.layout().numel() as f64;
        let per = |e: u64| e as f64 / steps as f64 / psi;
        println!(
            "[ds] ZeRO-{} collectives per optimizer step on rank 0: {:.2}Ψ of gradients reduced, {:.2}Ψ of \
             parameters all-gathered (Ψ = {psi}; the ZeRO paper: Ψ + Ψ at stages 1-2, Ψ + 2Ψ at stage 3)",
            engine.config().zero.stage,
            per(t.reduced_elements),
            per(t.gathered_elements),
        );
    }
    Ok(start)
}

/// Rank 0's summary: losses against the reference, the plot, where things are.
fn finish(args: &TrainArgs, started: u64, reference: f64, what: &str) -> Result<(), String> {
    let metrics = args.save_dir.join("metrics.jsonl");
    let losses = metrics::read_losses(&metrics);
    let last: Vec<f32> = losses.iter().rev().take(10).map(|p| p.1).collect();
    let mean_last = last.iter().sum::<f32>() / last.len().max(1) as f32;
    let val = metrics::read_series(&metrics, "val_loss");
    let plot = args.save_dir.join("loss.png");
    plot::write_loss_png(&plot, &losses, &val, Some(reference))?;
    let val_text = val.last().map_or(String::new(), |(s, v)| {
        format!(", validation {v:.4} at step {s}")
    });
    println!(
        "[ds] trained steps {}..{}: loss {:.4} (mean of the last {}), first {:.4}{val_text}; \
         {what}: {:.4} nats",
        started + 1,
        args.steps,
        mean_last,
        last.len(),
        losses.first().map_or(f32::NAN, |p| p.1),
        reference
    );
    println!(
        "[ds] metrics {}, loss curve {}, checkpoints in {}",
        metrics.display(),
        plot.display(),
        args.save_dir.display()
    );
    Ok(())
}
