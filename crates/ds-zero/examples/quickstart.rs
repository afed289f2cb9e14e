//! DeepSpeed's quickstart, in ds: read a DeepSpeed JSON config, `initialize`, and train with
//! `forward`, `backward(loss)` and `step()` on every micro-batch; ranks are threads here (each
//! with its own CPU backend), and a checkpoint is saved at the end.
//!
//! ```sh
//! cargo run --release -p ds-zero --example quickstart -- [CONFIG] [--ranks N] [--steps S] [--save DIR]
//! ```

use ds_core::collectives::run_threaded;
use ds_core::cpu::CpuBackend;
use ds_core::{Collectives, Device};
use ds_nn::{Blobs, MlpClassifier};
use ds_zero::config::Config;
use ds_zero::{Initialized, initialize};
use std::process::ExitCode;

struct Args {
    config: String,
    ranks: usize,
    steps: usize,
    save: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        config: concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ds_config.json").into(),
        ranks: 2,
        steps: 100,
        save: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--ranks" => {
                a.ranks = value("--ranks")?
                    .parse()
                    .map_err(|e| format!("--ranks: {e}"))?
            }
            "--steps" => {
                a.steps = value("--steps")?
                    .parse()
                    .map_err(|e| format!("--steps: {e}"))?
            }
            "--save" => a.save = Some(value("--save")?),
            other if !other.starts_with("--") => a.config = other.into(),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.ranks == 0 {
        return Err("--ranks must be at least 1".into());
    }
    Ok(a)
}

fn train(args: &Args, text: &str, comm: Box<dyn Collectives<CpuBackend>>) -> Result<f32, String> {
    let config =
        Config::parse(text, comm.world_size()).map_err(|e| format!("{}: {e}", args.config))?;
    let threads = (std::thread::available_parallelism().map_or(1, |n| n.get()) / args.ranks).max(1);
    let device = Device::new(CpuBackend::with_threads(threads).map_err(|e| e.to_string())?);
    let model = MlpClassifier::new(32, &[256], 10, config.precision.dtype());
    let Initialized {
        mut engine,
        mut data_loader,
        ..
    } = initialize(&config, device, comm, model, Blobs::new(4096, 32, 10, 11))
        .map_err(|e| e.to_string())?;
    let mut last = f32::NAN;
    for _ in 0..args.steps {
        // One optimizer step = gradient_accumulation_steps micro-batches:
        // forward, backward(loss), step() each, as with DeepSpeed.
        loop {
            let batch = data_loader
                .next_batch()
                .ok_or("the dataset is smaller than one batch")?;
            let loss = engine.forward(&batch).map_err(|e| e.to_string())?;
            engine.backward(&loss).map_err(|e| e.to_string())?;
            if let Some(report) = engine.step().map_err(|e| e.to_string())? {
                last = report.loss;
                break;
            }
        }
    }
    if let Some(dir) = &args.save {
        let tag = format!("global_step{}", engine.counters().global_steps);
        engine
            .save_checkpoint(
                dir,
                &tag,
                &serde_json::json!({"example": "quickstart"}),
                Some(&data_loader),
            )
            .map_err(|e| e.to_string())?;
        if engine.rank() == 0 {
            println!("saved {dir}/{tag}");
        }
    }
    Ok(last)
}

fn main() -> ExitCode {
    let result = args().and_then(|a| {
        let text = std::fs::read_to_string(&a.config)
            .map_err(|e| format!("cannot read {}: {e}", a.config))?;
        let finals = run_threaded(a.ranks, |comm| train(&a, &text, Box::new(comm)));
        finals.into_iter().next().unwrap_or(Err("no ranks".into()))
    });
    match result {
        Ok(loss) => {
            println!("final loss {loss:.4}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
