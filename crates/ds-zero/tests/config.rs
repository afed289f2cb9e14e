//! DeepSpeed's config as ds reads it: the batch triple's derivations and failures, the strict
//! schema's errors, and the defaults DeepSpeed 0.19 resolves.

use ds_core::params::AdamMode;
use ds_zero::config::{Config, ConfigError, OptimizerKind, Precision};

fn parse(text: &str, world: usize) -> Result<Config, ConfigError> {
    Config::parse(text, world)
}

fn triple(
    t: Option<u64>,
    m: Option<u64>,
    g: Option<u64>,
    world: usize,
) -> Result<(u64, u64, u64), ConfigError> {
    let mut obj = serde_json::Map::new();
    if let Some(t) = t {
        obj.insert("train_batch_size".into(), t.into());
    }
    if let Some(m) = m {
        obj.insert("train_micro_batch_size_per_gpu".into(), m.into());
    }
    if let Some(g) = g {
        obj.insert("gradient_accumulation_steps".into(), g.into());
    }
    let c = Config::from_value(&serde_json::Value::Object(obj), world)?;
    Ok((
        c.batch.train_batch_size,
        c.batch.micro_batch_per_gpu,
        c.batch.gradient_accumulation_steps,
    ))
}

#[test]
fn consistent_triples_are_accepted_for_world_size_two() {
    assert_eq!(
        triple(Some(32), Some(16), Some(1), 2).expect("ok"),
        (32, 16, 1)
    );
    assert_eq!(
        triple(Some(32), Some(8), Some(2), 2).expect("ok"),
        (32, 8, 2)
    );
}

#[test]
fn inconsistent_triples_are_refused_naming_keys_world_size_and_a_fix() {
    for (t, m, g, product) in [(33, 17, 2, 68), (32, 18, 1, 36)] {
        let err = triple(Some(t), Some(m), Some(g), 2)
            .expect_err("refused")
            .to_string();
        for part in [
            "train_batch_size",
            "train_micro_batch_size_per_gpu",
            "gradient_accumulation_steps",
            "world size 2",
            &format!("{t} != {m} * {g} * 2 = {product}"),
            &format!("set train_batch_size to {product}"),
        ] {
            assert!(err.contains(part), "`{err}` lacks `{part}`");
        }
    }
}

#[test]
fn any_one_of_the_triple_is_derived_from_the_other_two() {
    // World size 4.
    assert_eq!(triple(Some(64), Some(8), None, 4).expect("ok"), (64, 8, 2));
    assert_eq!(triple(Some(64), None, Some(2), 4).expect("ok"), (64, 8, 2));
    assert_eq!(triple(None, Some(8), Some(2), 4).expect("ok"), (64, 8, 2));
    // One alone: accumulation 1.
    assert_eq!(triple(Some(64), None, None, 4).expect("ok"), (64, 16, 1));
    assert_eq!(triple(None, Some(8), None, 4).expect("ok"), (32, 8, 1));
}

#[test]
fn derivations_that_do_not_divide_are_refused_with_the_multiple_to_use() {
    let err = triple(Some(60), Some(8), None, 4)
        .expect_err("60 % 32")
        .to_string();
    assert!(
        err.contains("multiple of 32") && err.contains("world size 4"),
        "{err}"
    );
    let err = triple(Some(60), None, Some(8), 4)
        .expect_err("60 % 32")
        .to_string();
    assert!(err.contains("multiple of 32"), "{err}");
    let err = triple(Some(30), None, None, 4)
        .expect_err("30 % 4")
        .to_string();
    assert!(err.contains("multiple of 4"), "{err}");
}

#[test]
fn batch_sizes_that_overflow_are_refused_not_wrapped() {
    let huge = 1u64 << 40;
    let err = triple(None, Some(huge), Some(huge), 2)
        .expect_err("overflow")
        .to_string();
    assert!(err.contains("2^64"), "{err}");
    let err = triple(Some(8), Some(huge), Some(huge), 2)
        .expect_err("overflow")
        .to_string();
    assert!(err.contains("2^64"), "{err}");
}

#[test]
fn missing_or_zero_batch_sizes_are_refused() {
    let err = triple(None, None, Some(2), 2)
        .expect_err("no batch size")
        .to_string();
    assert!(
        err.contains("train_batch_size") && err.contains("train_micro_batch_size_per_gpu"),
        "{err}"
    );
    let err = triple(Some(0), None, None, 2)
        .expect_err("zero")
        .to_string();
    assert!(
        err.contains("train_batch_size") && err.contains("at least 1"),
        "{err}"
    );
    let err = triple(Some(8), Some(4), Some(0), 2)
        .expect_err("zero")
        .to_string();
    assert!(err.contains("gradient_accumulation_steps"), "{err}");
}

#[test]
fn unknown_keys_are_errors_with_a_did_you_mean() {
    let err = parse(
        r#"{"train_batch_size": 8, "optimiser": {"type": "Adam"}}"#,
        1,
    )
    .expect_err("typo");
    assert_eq!(
        err,
        ConfigError::UnknownKey {
            key: "optimiser".into(),
            suggestion: Some("optimizer".into())
        }
    );
    assert!(
        err.to_string().contains("did you mean `optimizer`?"),
        "{err}"
    );
    let err = parse(
        r#"{"train_batch_size": 8, "zero_optimization": {"stag": 2}}"#,
        1,
    )
    .expect_err("nested typo");
    assert_eq!(
        err,
        ConfigError::UnknownKey {
            key: "zero_optimization.stag".into(),
            suggestion: Some("zero_optimization.stage".into())
        }
    );
    let err = parse(
        r#"{"train_batch_size": 8, "optimizer": {"type": "Adam", "params": {"lr": 1e-3, "betaz": [0.9, 0.99]}}}"#,
        1,
    )
    .expect_err("param typo");
    assert_eq!(
        err,
        ConfigError::UnknownKey {
            key: "optimizer.params.betaz".into(),
            suggestion: Some("optimizer.params.betas".into())
        }
    );
    let err =
        parse(r#"{"train_batch_size": 8, "completely_unrelated": 1}"#, 1).expect_err("unknown");
    assert_eq!(
        err,
        ConfigError::UnknownKey {
            key: "completely_unrelated".into(),
            suggestion: None
        }
    );
}

#[test]
fn unimplemented_deepspeed_features_are_refused_by_name() {
    let err = parse(
        r#"{"train_batch_size": 8, "autotuning": {"enabled": true}}"#,
        1,
    )
    .expect_err("autotuning");
    assert!(
        matches!(&err, ConfigError::Unsupported { key, .. } if key == "autotuning"),
        "{err:?}"
    );
    assert!(err.to_string().contains("autotuner"), "{err}");
    let err = parse(r#"{"train_batch_size": 8, "compression_training": {}}"#, 1)
        .expect_err("compression");
    assert!(
        matches!(&err, ConfigError::Unsupported { key, .. } if key == "compression_training"),
        "{err:?}"
    );
    let err = parse(
        r#"{"train_batch_size": 8, "optimizer": {"type": "OneBitAdam", "params": {}}}"#,
        1,
    )
    .expect_err("1-bit Adam");
    assert!(err.to_string().contains("1-bit Adam"), "{err}");
}

#[test]
fn auto_values_name_the_key_that_needs_a_number() {
    let err = parse(
        r#"{"train_batch_size": 8, "train_micro_batch_size_per_gpu": "auto"}"#,
        1,
    )
    .expect_err("auto");
    assert_eq!(
        err,
        ConfigError::Auto {
            key: "train_micro_batch_size_per_gpu".into()
        }
    );
    let err = parse(
        r#"{"train_batch_size": 8, "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}"#,
        1,
    )
    .expect_err("auto lr");
    assert_eq!(
        err,
        ConfigError::Auto {
            key: "optimizer.params.lr".into()
        }
    );
    assert!(err.to_string().contains("write the number"), "{err}");
}

#[test]
fn optimizer_rules_follow_deepspeed() {
    let c = parse(
        r#"{"train_batch_size": 8, "optimizer": {"type": "Adam", "params": {"lr": 0.01}}}"#,
        1,
    )
    .expect("ok");
    let OptimizerKind::Adam(p) = c.optimizer.expect("optimizer").kind else {
        panic!("Adam expected")
    };
    assert_eq!(
        (p.mode, p.lr, p.beta1, p.beta2, p.eps),
        (AdamMode::AdamW, 0.01, 0.9, 0.999, 1e-8)
    );
    let c = parse(
        r#"{"train_batch_size": 8, "optimizer": {"type": "Adam", "params": {"adam_w_mode": false}}}"#,
        1,
    )
    .expect("ok");
    let OptimizerKind::Adam(p) = c.optimizer.expect("optimizer").kind else {
        panic!("Adam expected")
    };
    assert_eq!(p.mode, AdamMode::L2);
    let err = parse(
        r#"{"train_batch_size": 8, "optimizer": {"type": "Adam", "params": {"max_grad_norm": 1.0}}}"#,
        1,
    )
    .expect_err("max_grad_norm");
    assert!(err.to_string().contains("gradient_clipping"), "{err}");
}

#[test]
fn precision_and_zero_defaults_are_deepspeed_019s() {
    let c = parse(r#"{"train_batch_size": 8, "fp16": {"enabled": true}}"#, 1).expect("ok");
    let Precision::Fp16(f) = c.precision else {
        panic!("fp16 expected")
    };
    assert_eq!(
        (
            f.static_scale,
            f.initial_scale_power,
            f.loss_scale_window,
            f.hysteresis,
            f.min_loss_scale
        ),
        (None, 16, 1000, 2, 1.0)
    );
    assert!(!f.consecutive_hysteresis);
    assert_eq!(c.gradient_clipping, 1.0);
    assert_eq!(c.steps_per_print, None);
    assert_eq!(c.zero.stage, 0);
    let c = parse(
        r#"{"train_batch_size": 8, "fp16": {"enabled": true, "loss_scale": 128}}"#,
        1,
    )
    .expect("ok");
    assert!(matches!(c.precision, Precision::Fp16(f) if f.static_scale == Some(128.0)));
    let c = parse(
        r#"{"train_batch_size": 8, "bfloat16": {"enabled": true}}"#,
        1,
    )
    .expect("legacy key");
    assert_eq!(c.precision, Precision::Bf16);
    let err = parse(
        r#"{"train_batch_size": 8, "fp16": {"enabled": true}, "bf16": {"enabled": true}}"#,
        1,
    )
    .expect_err("both");
    assert!(err.to_string().contains("fp16 and bf16"), "{err}");
    let c = parse(r#"{"train_batch_size": 8, "zero_optimization": true}"#, 1).expect("legacy bool");
    assert_eq!(c.zero.stage, 1);
    let c = parse(
        r#"{"train_batch_size": 8, "zero_optimization": {"stage": 2}}"#,
        1,
    )
    .expect("ok");
    assert_eq!(
        (c.zero.reduce_bucket_size, c.zero.overlap_comm),
        (500_000_000, false)
    );
    let c = parse(
        r#"{"train_batch_size": 8, "zero_optimization": {"stage": 3}}"#,
        1,
    )
    .expect("ok");
    assert!(c.zero.overlap_comm);
}

#[test]
fn the_resolved_settings_print_as_json() {
    let c = parse(
        r#"{"train_batch_size": 32, "gradient_accumulation_steps": 2, "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
            "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 10}}, "fp16": {"enabled": true},
            "zero_optimization": {"stage": 2, "reduce_bucket_size": 1000}}"#,
        4,
    )
    .expect("ok");
    let j = c.to_json();
    assert_eq!(j["train_micro_batch_size_per_gpu"], 4);
    assert_eq!(j["optimizer"]["mode"], "adamw (decoupled weight decay)");
    assert_eq!(j["scheduler"]["type"], "WarmupLR");
    assert_eq!(j["precision"]["initial_scale"], 65536.0);
    assert_eq!(j["zero_optimization"]["reduce_bucket_size"], 1000);
}

#[test]
fn stage_3_keys_resolve_with_deepspeeds_defaults_and_refuse_what_ds_does_not_do_by_name() {
    let zero = |keys: &str| {
        parse(
            &format!(r#"{{"train_batch_size": 8, "zero_optimization": {{"stage": 3 {keys}}}}}"#),
            1,
        )
    };
    let d = zero("").expect("defaults").zero.stage3;
    assert_eq!(
        (
            d.max_live_parameters,
            d.max_reuse_distance,
            d.prefetch_bucket_size,
            d.param_persistence_threshold,
            d.gather_16bit_weights_on_model_save
        ),
        (1_000_000_000, 1_000_000_000, 50_000_000, 100_000, false)
    );
    // The short spellings and the deprecated fp16 flag are the same settings.
    let c = zero(
        r#", "max_live_parameters": 5e6, "stage3_prefetch_bucket_size": 1e6, "param_persistence_threshold": 10,
           "stage3_gather_fp16_weights_on_model_save": true, "sub_group_size": 1e9"#,
    )
    .expect("aliases")
    .zero
    .stage3;
    assert_eq!(
        (
            c.max_live_parameters,
            c.prefetch_bucket_size,
            c.param_persistence_threshold,
            c.gather_16bit_weights_on_model_save
        ),
        (5_000_000, 1_000_000, 10, true)
    );
    let err = |keys: &str| zero(keys).expect_err(keys).to_string();
    assert!(
        err(r#", "stage3_max_live_parameters": 10, "max_live_parameters": 20"#)
            .contains("disagrees with `stage3_max_live_parameters`")
    );
    for (keys, key, named) in [
        (
            r#", "stage3_module_granularity_threshold": 100"#,
            "stage3_module_granularity_threshold",
            "granularity",
        ),
        (
            r#", "stage3_use_all_reduce_for_fetch_params": true"#,
            "stage3_use_all_reduce_for_fetch_params",
            "all-reduce",
        ),
        (
            r#", "zero_hpz_partition_size": 8"#,
            "zero_hpz_partition_size",
            "hpZ",
        ),
    ] {
        let e = err(keys);
        assert!(
            e.contains(&format!("`zero_optimization.{key}` configures"))
                && e.contains(named)
                && e.contains("which ds does not implement"),
            "{e}"
        );
    }
    // 0 is accepted, as DeepSpeed accepts it (axolotl's ZeRO-3 configs set it).
    assert_eq!(
        zero(r#", "stage3_max_live_parameters": 0"#)
            .expect("0")
            .zero
            .stage3
            .max_live_parameters,
        0
    );
    let e = err(r#", "stage3_prefetch_bucket_sise": 1"#);
    assert!(
        e.contains("did you mean `zero_optimization.stage3_prefetch_bucket_size`?"),
        "{e}"
    );
}
