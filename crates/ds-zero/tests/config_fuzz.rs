//! The config reader under mutated configs: the repository's example config and an HJSON,
//! Hugging Face style variant, with keys deleted, duplicated and retyped, text cut short and
//! numbers made huge. Whatever the text, the reader answers with an accepted config or one
//! error whose message names what is wrong, and never panics.

use ds_zero::config::{AutoFill, Config};
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../examples/ds_config.json");

const HF_STYLE: &str = r#"{
  // trainer-filled values
  "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
  "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
  "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto"}},
  "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto", "warmup_num_steps": "auto"}},
  "fp16": {"enabled": "auto", "loss_scale": 0, "initial_scale_power": 16},
  "tensorboard": {"enabled": false},
  "_comment": "stage 3 with offload",
  "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}, "stage3_prefetch_bucket_size": "auto",},
}"#;

/// Values a mutation can put in place of another.
const REPLACEMENTS: [&str; 12] = [
    "true",
    "null",
    "\"x\"",
    "[]",
    "{}",
    "-1",
    "0",
    "1e400",
    "99999999999999999999999",
    "\"auto\"",
    "1.5",
    "[1, 2, 3]",
];

#[derive(Debug, Clone)]
enum Mutation {
    /// Delete `len` bytes at `at` (as fractions of the text).
    Delete(f64, usize),
    /// Repeat the line at `at`.
    DuplicateLine(f64),
    /// Cut the text at `at`.
    Truncate(f64),
    /// Replace the value after the `n`-th colon.
    Retype(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0.0..1.0f64, 1usize..12).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (0.0..1.0f64).prop_map(Mutation::DuplicateLine),
        (0.0..1.0f64).prop_map(Mutation::Truncate),
        (0usize..40, 0..REPLACEMENTS.len()).prop_map(|(n, r)| Mutation::Retype(n, r)),
    ]
}

/// The byte offset at fraction `f` of `text`, on a character boundary.
fn offset(text: &str, f: f64) -> usize {
    let mut at = ((text.len() as f64) * f) as usize;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &str, m: &Mutation) -> String {
    match *m {
        Mutation::Delete(f, n) => {
            let at = offset(text, f);
            let mut end = (at + n).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            format!("{}{}", &text[..at], &text[end..])
        }
        Mutation::DuplicateLine(f) => {
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                return text.to_string();
            }
            let i = ((lines.len() as f64) * f) as usize % lines.len();
            let mut out: Vec<&str> = lines.clone();
            out.insert(i, lines[i]);
            out.join("\n")
        }
        Mutation::Truncate(f) => text[..offset(text, f)].to_string(),
        Mutation::Retype(n, r) => {
            let colons: Vec<usize> = text.match_indices(':').map(|(i, _)| i).collect();
            let Some(&c) = colons.get(n % colons.len().max(1)) else {
                return text.to_string();
            };
            let rest = &text[c + 1..];
            let end = rest.find([',', '}', '\n']).unwrap_or(rest.len());
            format!("{}: {}{}", &text[..c], REPLACEMENTS[r], &rest[end..])
        }
    }
}

fn fill() -> AutoFill {
    AutoFill::none()
        .with("train_batch_size", 32, "test")
        .with("gradient_accumulation_steps", 1, "test")
        .with("gradient_clipping", 1.0, "test")
        .with("optimizer.params.lr", 0.001, "test")
        .with(
            "optimizer.params.betas",
            serde_json::json!([0.9, 0.999]),
            "test",
        )
        .with("optimizer.params.eps", 1e-8, "test")
        .with("scheduler.params.warmup_min_lr", 0.0, "test")
        .with("scheduler.params.warmup_max_lr", 0.001, "test")
        .with("scheduler.params.warmup_num_steps", 10, "test")
        .with("fp16.enabled", true, "test")
        .with(
            "zero_optimization.stage3_prefetch_bucket_size",
            1000,
            "test",
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn mutated_configs_are_accepted_or_refused_with_a_named_error(
        hf in any::<bool>(),
        world in 1usize..9,
        ms in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut text = if hf { HF_STYLE } else { EXAMPLE }.to_string();
        for m in &ms {
            text = apply(&text, m);
        }
        match Config::parse_with(&text, world, &fill()) {
            Ok((c, _)) => prop_assert!(c.batch.train_batch_size >= 1),
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.len() > 10, "an error that says nothing: {msg:?}");
            }
        }
        // Plain parse (no fill) answers too.
        let _ = Config::parse(&text, world);
    }
}

#[test]
fn the_unmutated_configs_are_accepted() {
    Config::parse(EXAMPLE, 4).expect("example");
    Config::parse_with(HF_STYLE, 4, &fill()).expect("hf style");
}
