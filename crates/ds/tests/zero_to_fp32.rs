//! `ds zero-to-fp32` on a checkpoint whose optimizer state is partitioned over two ranks
//! (ZeRO-2): the consolidated file has the model's names and shapes and exactly the trained
//! parameters, read back in Rust and (where Python has safetensors and numpy) in Python.

use ds_core::collectives::run_threaded;
use ds_core::cpu::CpuBackend;
use ds_core::{DType, Device};
use ds_nn::data::TokenWindows;
use ds_nn::{Gpt, GptConfig};
use ds_zero::config::Config;
use ds_zero::model::Model;
use ds_zero::{Initialized, initialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const DS: &str = env!("CARGO_BIN_EXE_ds");

const SHAPE: GptConfig = GptConfig {
    vocab: 256,
    context: 16,
    layers: 2,
    heads: 2,
    dim: 16,
};

/// Name, shape and values of one parameter.
type Named = (String, Vec<usize>, Vec<f32>);

/// Trains 6 steps with ZeRO-2 on 2 ranks, saves, and returns the trained parameters with
/// their shapes.
fn train_and_save(dir: &Path) -> Vec<Named> {
    let text = include_str!("../../../README.md");
    let tokens: Arc<Vec<u16>> = Arc::new(text.bytes().map(u16::from).collect());
    let results = run_threaded(2, |comm| {
        let config = Config::parse(
            r#"{"train_batch_size": 8, "optimizer": {"type": "AdamW", "params": {"lr": 0.01}},
                "zero_optimization": {"stage": 2}}"#,
            2,
        )
        .expect("config");
        let gpt = Gpt::new(SHAPE, DType::F32).expect("gpt");
        let specs = Model::<CpuBackend>::parameters(&gpt);
        let data = TokenWindows::new(Arc::clone(&tokens), SHAPE.context).expect("data");
        let dev = Device::new(CpuBackend::with_threads(1).expect("backend"));
        let Initialized {
            mut engine,
            mut data_loader,
            ..
        } = initialize(&config, dev, Box::new(comm), gpt, data).expect("initialize");
        for _ in 0..6 {
            engine.train_batch(&mut data_loader).expect("step");
        }
        engine
            .save_checkpoint(dir, "global_step6", &serde_json::json!({}), None)
            .expect("save");
        let params = engine.parameters().expect("parameters");
        specs
            .into_iter()
            .zip(params)
            .map(|(s, (name, v))| (name, s.shape, v))
            .collect::<Vec<_>>()
    });
    results.into_iter().next().expect("rank 0")
}

fn consolidate(name: &str) -> (PathBuf, PathBuf, Vec<Named>) {
    let dir = std::env::temp_dir().join(format!("ds-z2f-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let trained = train_and_save(&dir);
    let out = dir.join("model_fp32.safetensors");
    let run = Command::new(DS)
        .args([
            "zero-to-fp32",
            dir.to_str().expect("utf-8"),
            out.to_str().expect("utf-8"),
        ])
        .output()
        .expect("ds");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        said.contains("global_step6") && said.contains("tensors, fp32"),
        "{said}"
    );
    (dir, out, trained)
}

#[test]
fn consolidated_tensors_equal_the_trained_parameters() {
    let (dir, out, trained) = consolidate("rust");
    let bytes = std::fs::read(&out).expect("output");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    assert_eq!(st.len(), trained.len());
    for (name, shape, values) in &trained {
        let t = st.tensor(name).expect("every parameter by name");
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        assert_eq!(t.shape(), shape.as_slice(), "{name}");
        let got: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert!(
            got.iter()
                .zip(values)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name} differs from the trained parameter"
        );
    }
    // Errors name what to pass.
    let bad = Command::new(DS)
        .args(["zero-to-fp32", "/nonexistent/ckpt", "out.safetensors"])
        .output()
        .expect("ds");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a directory"));
    std::fs::remove_dir_all(&dir).ok();
}

/// Needs python3 with safetensors and numpy: `scripts/test.sh` installs them (into
/// target/pytools) and runs this with `--ignored`.
#[test]
#[ignore = "needs python3 with safetensors and numpy; scripts/test.sh installs them and runs it"]
fn python_safetensors_loads_the_consolidated_file() {
    let (dir, out, trained) = consolidate("python");
    let expected = dir.join("expected.json");
    let map: serde_json::Map<String, serde_json::Value> = trained
        .iter()
        .map(|(name, shape, values)| {
            (
                name.clone(),
                serde_json::json!({"shape": shape, "bits": values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()}),
            )
        })
        .collect();
    std::fs::write(&expected, serde_json::Value::Object(map).to_string()).expect("write");
    let script = r#"
import json, sys
import numpy as np
from safetensors.numpy import load_file
tensors = load_file(sys.argv[1])
expected = json.load(open(sys.argv[2]))
assert sorted(tensors) == sorted(expected), (sorted(tensors), sorted(expected))
for name, want in expected.items():
    t = tensors[name]
    assert t.dtype == np.float32, (name, t.dtype)
    assert list(t.shape) == want["shape"], (name, t.shape, want["shape"])
    bits = np.array(want["bits"], dtype=np.uint32).view(np.float32).reshape(want["shape"])
    assert np.array_equal(t.view(np.uint32), bits.view(np.uint32)), name
print("python: %d tensors equal the trained parameters" % len(tensors))
"#;
    let run = Command::new("python3")
        .args([
            "-c",
            script,
            out.to_str().expect("utf-8"),
            expected.to_str().expect("utf-8"),
        ])
        .output()
        .expect("python3 starts");
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    println!("{text}");
    assert!(
        text.contains("tensors equal the trained parameters"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
