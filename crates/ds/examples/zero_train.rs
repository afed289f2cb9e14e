//! The engine on MPI: `mpirun -np N zero_train STAGE STEPS [offload|offload-param|nvme]`
//! trains ds-nn's MLP with ZeRO stage STAGE (at stage 3 the weights are gathered, the biases
//! persist) on a global batch of 32 (32/N per rank), with `offload` the optimizer state on the
//! CPU backend as host (`offload_optimizer: cpu`), with `offload-param` the stage-3 parameter
//! slices too, with `nvme` both in swap files in the temp directory, and the same command
//! without `mpirun` trains it on one rank.
//! Built with `--features mpi`. Rank 0 prints each step's loss (value and bits); every rank
//! prints a hash of its final parameters, which must be the same on all ranks.

use ds::mpi::init_distributed;
use ds_core::cpu::CpuBackend;
use ds_core::{Collectives, Device};
use ds_nn::{Blobs, MlpClassifier};
use ds_zero::config::Config;
use ds_zero::{Initialized, initialize_with_host};
use std::process::ExitCode;

fn run(stage: u32, steps: usize, offload: &str) -> Result<(), String> {
    let dist = init_distributed().map_err(|e| e.to_string())?;
    let comm: Box<dyn Collectives<CpuBackend>> = Box::new(dist.comm);
    let rank = comm.rank();
    let nvme;
    let offload = match offload {
        "offload" => r#", "offload_optimizer": {"device": "cpu"}"#,
        "offload-param" => {
            r#", "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}"#
        }
        "nvme" => {
            let dir = serde_json::Value::from(std::env::temp_dir().display().to_string());
            nvme = format!(
                r#", "offload_optimizer": {{"device": "nvme", "nvme_path": {dir}, "buffer_count": 2,
                    "buffer_size": 300, "pipeline_read": true, "pipeline_write": true}},
                   "offload_param": {{"device": "nvme", "nvme_path": {dir}, "buffer_size": 64}}"#
            );
            &nvme
        }
        "" => "",
        other => {
            return Err(format!(
                "unknown offload `{other}`: use offload, offload-param or nvme"
            ));
        }
    };
    let json = format!(
        r#"{{"train_batch_size": 32, "gradient_accumulation_steps": 1,
            "optimizer": {{"type": "AdamW", "params": {{"lr": 0.01, "weight_decay": 0.01}}}},
            "gradient_clipping": 1.0,
            "zero_optimization": {{"stage": {stage}, "stage3_param_persistence_threshold": 40 {offload}}}}}"#
    );
    let config = Config::parse(&json, comm.world_size()).map_err(|e| e.to_string())?;
    let device = Device::new(CpuBackend::with_threads(1).map_err(|e| e.to_string())?);
    let host = Device::new(CpuBackend::with_threads(1).map_err(|e| e.to_string())?);
    let model = MlpClassifier::new(16, &[32], 4, config.precision.dtype());
    let Initialized {
        mut engine,
        mut data_loader,
        ..
    } = initialize_with_host(
        &config,
        device,
        host,
        comm,
        model,
        Blobs::new(256, 16, 4, 7),
    )
    .map_err(|e| e.to_string())?;
    for step in 0..steps {
        let loss = engine
            .train_batch(&mut data_loader)
            .map_err(|e| e.to_string())?
            .loss;
        if rank == 0 {
            println!("ds-loss step {step} {loss:e} {:08x}", loss.to_bits());
        }
    }
    // FNV-1a over every parameter's bits: replicas must stay bitwise identical.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (_, values) in engine.parameters().map_err(|e| e.to_string())? {
        for v in values {
            for b in v.to_bits().to_le_bytes() {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    println!("ds-params rank {rank} {hash:016x}");
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let stage = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let steps = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let offload = args.next().unwrap_or_default();
    match run(stage, steps, &offload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zero_train: {e}");
            ExitCode::FAILURE
        }
    }
}
