//! Shared helpers: train the test MLP on N threaded ranks, each with its own one-thread CPU
//! backend (so per-rank memory statistics are per rank).
#![allow(dead_code)]

use ds_core::collectives::run_threaded;
use ds_core::cpu::CpuBackend;
use ds_core::{Collectives, Device};
use ds_nn::{Blobs, MlpClassifier};
use ds_zero::config::Config;
use ds_zero::data::DataLoader;
use ds_zero::{Engine, Initialized, initialize_with_host};

pub const DIM: usize = 16;
pub const HIDDEN: usize = 32;
pub const CLASSES: usize = 4;
pub const SAMPLES: usize = 64;

pub type TestEngine = Engine<CpuBackend, MlpClassifier<CpuBackend>>;

/// Builds one rank's engine and loader for `json` (resolved for the communicator's world).
pub fn engine(
    json: &str,
    comm: Box<dyn Collectives<CpuBackend>>,
    dims: (usize, usize, usize),
) -> (TestEngine, DataLoader<Blobs>) {
    let dev = Device::new(CpuBackend::with_threads(1).expect("backend"));
    let host = Device::new(CpuBackend::with_threads(1).expect("host backend"));
    engine_on(json, comm, dims, dev, host).expect("initialize")
}

/// Builds one rank's engine on `dev`, with `host` for what the config offloads.
pub fn engine_on(
    json: &str,
    comm: Box<dyn Collectives<CpuBackend>>,
    dims: (usize, usize, usize),
    dev: Device<CpuBackend>,
    host: Device<CpuBackend>,
) -> ds_zero::Result<(TestEngine, DataLoader<Blobs>)> {
    let config = Config::parse(json, comm.world_size()).expect("config");
    let model = MlpClassifier::new(dims.0, &[dims.1], dims.2, config.precision.dtype());
    let Initialized {
        engine,
        data_loader,
        ..
    } = initialize_with_host(
        &config,
        dev,
        host,
        comm,
        model,
        Blobs::new(SAMPLES, dims.0, dims.2, 7),
    )?;
    Ok((engine, data_loader))
}

/// Named parameter values.
pub type NamedParams = Vec<(String, Vec<f32>)>;

/// Trains `steps` optimizer steps on `world` ranks and returns each rank's step losses and
/// final parameters.
pub fn train(json: &str, world: usize, steps: usize) -> Vec<(Vec<f32>, NamedParams)> {
    run_threaded(world, |comm| {
        let (mut e, mut loader) = engine(json, Box::new(comm), (DIM, HIDDEN, CLASSES));
        let losses = (0..steps)
            .map(|_| e.train_batch(&mut loader).expect("step").loss)
            .collect();
        (losses, e.parameters().expect("parameters"))
    })
}

/// Asserts two loss curves agree within `rel` relative error at every step.
pub fn assert_close(what: &str, a: &[f32], b: &[f32], rel: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let mut worst = 0f32;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let err = (x - y).abs() / y.abs().max(1e-30);
        assert!(
            err <= rel,
            "{what}: step {i}: {x} vs {y} (relative error {err:e} > {rel:e})"
        );
        worst = worst.max(err);
    }
    println!(
        "{what}: largest relative difference {worst:.2e} over {} steps",
        a.len()
    );
}

/// `json` with `zero_optimization.KEY = VALUE` for each pair.
fn with_zero(json: &str, entries: &[(&str, serde_json::Value)]) -> String {
    let mut v: serde_json::Value = serde_json::from_str(json).expect("json");
    for (key, value) in entries {
        v["zero_optimization"][*key] = value.clone();
    }
    v.to_string()
}

/// `json` with `zero_optimization.offload_optimizer: {"device": "cpu"}` (and `offload_param`
/// when `params`).
pub fn offloaded(json: &str, params: bool) -> String {
    let mut entries = vec![(
        "offload_optimizer",
        serde_json::json!({"device": "cpu", "pin_memory": true}),
    )];
    if params {
        entries.push(("offload_param", serde_json::json!({"device": "cpu"})));
    }
    with_zero(json, &entries)
}

/// `json` with the optimizer state offloaded to NVMe swap files under `dir`, streamed through
/// `buffers` host buffers of `buffer_size` f32 each.
pub fn nvme_offloaded(json: &str, dir: &std::path::Path, buffers: u64, buffer_size: u64) -> String {
    let section = serde_json::json!({"device": "nvme", "nvme_path": dir, "buffer_count": buffers,
        "buffer_size": buffer_size, "pipeline_read": true, "pipeline_write": true});
    with_zero(json, &[("offload_optimizer", section)])
}

/// A fresh, empty directory for swap files.
pub fn swap_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ds-swap-test-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).expect("swap dir");
    dir
}

/// `json` (already offloading its optimizer) with the stage-3 parameter slices in swap files
/// under `dir` too, read through a buffer of `buffer_size` elements.
pub fn with_params_on_nvme(json: &str, dir: &std::path::Path, buffer_size: u64) -> String {
    let section =
        serde_json::json!({"device": "nvme", "nvme_path": dir, "buffer_size": buffer_size});
    with_zero(json, &[("offload_param", section)])
}
