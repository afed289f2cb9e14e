//! DeepSpeed's config as ds reads it: the batch triple's derivations and failures, the strict
//! schema's errors, and the defaults DeepSpeed 0.19 resolves.

use ds_core::params::AdamMode;
use ds_zero::config::{AutoFill, Config, ConfigError, OptimizerKind, Precision};

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
    let err = parse(
        r#"{"train_batch_size": 8, "compression_training":
            {"sparse_pruning": {"shared_parameters": {"enabled": true}}}}"#,
        1,
    )
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
    // Plain `parse` fills nothing (a batch key the others determine is derived, as DeepSpeed
    // derives a missing one).
    let c = parse(
        r#"{"train_batch_size": 8, "train_micro_batch_size_per_gpu": "auto"}"#,
        2,
    )
    .expect("derived");
    assert_eq!(c.batch.micro_batch_per_gpu, 4);
    for (text, key) in [
        (
            r#"{"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto"}"#,
            "train_batch_size",
        ),
        (
            r#"{"train_batch_size": 8, "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}"#,
            "optimizer.params.lr",
        ),
    ] {
        let err = parse(text, 1).expect_err("auto");
        assert!(
            matches!(&err, ConfigError::Auto { key: k, .. } if k == key),
            "{err:?}"
        );
        assert!(err.to_string().contains("write the value"), "{err}");
    }
    // A key no integration fills stays an error whatever the caller offers.
    let fill = AutoFill::none().with("optimizer.params.lr", 0.1, "test");
    let err = Config::parse_with(r#"{"train_batch_size": 8, "seed": "auto"}"#, 1, &fill)
        .expect_err("seed");
    assert!(
        matches!(&err, ConfigError::Auto { key, reason } if key == "seed" && reason.contains("no integration")),
        "{err:?}"
    );
}

#[test]
fn auto_values_are_filled_from_the_callers_values_and_reported() {
    let fill = AutoFill::none()
        .with("train_batch_size", 32, "default global batch")
        .with("gradient_accumulation_steps", 1, "default accumulation")
        .with("optimizer.params.lr", 0.003, "--lr")
        .with(
            "optimizer.params.betas",
            serde_json::json!([0.9, 0.95]),
            "betas",
        )
        .with("gradient_clipping", 1.0, "clip")
        .with("bf16.enabled", false, "fp32 by default")
        .with("zero_optimization.reduce_bucket_size", 16384, "width^2");
    let hf = r#"{
        "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto"}},
        "bf16": {"enabled": "auto"},
        "zero_optimization": {"stage": 2, "reduce_bucket_size": "auto"}
    }"#;
    let (c, resolved) = Config::parse_with(hf, 4, &fill).expect("filled");
    assert_eq!(
        (
            c.batch.train_batch_size,
            c.batch.micro_batch_per_gpu,
            c.batch.gradient_accumulation_steps
        ),
        (32, 8, 1)
    );
    let opt = c.optimizer.expect("optimizer");
    match opt.kind {
        OptimizerKind::Adam(p) => assert_eq!((p.lr, p.beta1, p.beta2), (0.003, 0.9, 0.95)),
        other => panic!("expected AdamW, got {other:?}"),
    }
    assert_eq!(c.zero.reduce_bucket_size, 16384);
    let keys: Vec<&str> = resolved.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "bf16.enabled",
            "gradient_accumulation_steps",
            "gradient_clipping",
            "optimizer.params.betas",
            "optimizer.params.lr",
            "train_batch_size",
            "train_micro_batch_size_per_gpu",
            "zero_optimization.reduce_bucket_size",
        ]
    );
    let micro = &resolved[6];
    assert_eq!(micro.value, serde_json::json!(8));
    assert!(micro.source.starts_with("derived"), "{}", micro.source);
    assert_eq!(resolved[5].source, "default global batch");
    // A batch key the others determine is derived, not defaulted: micro 4 x accumulation 2 x
    // world 4 = 32 whatever the caller's default global batch.
    let (c, _) = Config::parse_with(
        r#"{"train_batch_size": "auto", "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2}"#,
        4,
        &AutoFill::none().with("train_batch_size", 1000, "unused"),
    )
    .expect("derived");
    assert_eq!(c.batch.train_batch_size, 32);
    // Accumulation is derived from the other two when both are numbers.
    let (c, _) = Config::parse_with(
        r#"{"train_batch_size": 64, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": "auto"}"#,
        2,
        &AutoFill::none(),
    )
    .expect("accumulation derived");
    assert_eq!(c.batch.gradient_accumulation_steps, 8);
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
fn adagrad_and_lion_take_deepspeeds_keys_and_defaults() {
    let opt = |json: &str| {
        parse(
            &format!(r#"{{"train_batch_size": 8, "optimizer": {json}}}"#),
            1,
        )
        .map(|c| c.optimizer.expect("optimizer").kind)
    };
    // DeepSpeedCPUAdagrad's defaults: lr 1e-2, eps 1e-10, no decay.
    let OptimizerKind::Adagrad(p) = opt(r#"{"type": "adagrad"}"#).expect("adagrad") else {
        panic!("Adagrad expected")
    };
    assert_eq!((p.lr, p.eps, p.weight_decay), (1e-2, 1e-10, 0.0));
    // torch.optim.Adagrad's extra keys at the values that make it DeepSpeedCPUAdagrad.
    let same = r#"{"type": "Adagrad", "params": {"lr": 0.05, "weight_decay": 0.1, "lr_decay": 0,
                   "initial_accumulator_value": 0.0, "foreach": true}}"#;
    let OptimizerKind::Adagrad(p) = opt(same).expect("torch keys") else {
        panic!("Adagrad expected")
    };
    assert_eq!((p.lr, p.weight_decay), (0.05, 0.1));
    for (params, key) in [
        (r#"{"lr_decay": 0.01}"#, "lr_decay"),
        (
            r#"{"initial_accumulator_value": 0.1}"#,
            "initial_accumulator_value",
        ),
        (r#"{"amsgrad": true}"#, "amsgrad"),
    ] {
        let err = opt(&format!(r#"{{"type": "Adagrad", "params": {params}}}"#))
            .expect_err(key)
            .to_string();
        assert!(
            err.contains(key) && err.contains("does not implement"),
            "{err}"
        );
    }
    // Lion: DeepSpeed's FusedLion defaults (lr 1e-3, betas (0.9, 0.999)).
    let OptimizerKind::Lion(p) = opt(r#"{"type": "Lion"}"#).expect("lion") else {
        panic!("Lion expected")
    };
    assert_eq!(
        (p.lr, p.beta1, p.beta2, p.weight_decay),
        (1e-3, 0.9, 0.999, 0.0)
    );
    let lion =
        r#"{"type": "Lion", "params": {"lr": 1e-4, "betas": [0.95, 0.98], "weight_decay": 0.1}}"#;
    let OptimizerKind::Lion(p) = opt(lion).expect("lion") else {
        panic!("Lion expected")
    };
    assert_eq!(
        (p.lr, p.beta1, p.beta2, p.weight_decay),
        (1e-4, 0.95, 0.98, 0.1)
    );
    let err = opt(r#"{"type": "Lion", "params": {"eps": 1e-8}}"#)
        .expect_err("eps")
        .to_string();
    assert!(err.contains("eps"), "{err}");
    let err = opt(r#"{"type": "Lion", "params": {"betas": [0.9, 1.0]}}"#)
        .expect_err("beta2 1")
        .to_string();
    assert!(err.contains("betas"), "{err}");
}

#[test]
fn fp16_auto_cast_is_what_ds_models_do_already() {
    // ds-nn's models upload float inputs in the training dtype: auto_cast on is their
    // behaviour, so it is accepted rather than refused (a bool still, as DeepSpeed reads it).
    let c = parse(
        r#"{"train_batch_size": 8, "fp16": {"enabled": true, "auto_cast": true}}"#,
        1,
    )
    .expect("auto_cast");
    assert!(matches!(c.precision, Precision::Fp16(_)));
    let e = parse(
        r#"{"train_batch_size": 8, "fp16": {"enabled": true, "auto_cast": "yes"}}"#,
        1,
    )
    .expect_err("a string")
    .to_string();
    assert!(e.contains("fp16.auto_cast"), "{e}");
}

#[test]
fn curriculum_schedules_follow_deepspeeds_curriculum_scheduler() {
    use ds_zero::config::Curriculum;
    let curriculum = |block: &str| {
        parse(
            &format!(r#"{{"train_batch_size": 8, "curriculum_learning": {block}}}"#),
            1,
        )
        .map(|c| c.curriculum)
    };
    // Megatron-DeepSpeed's test config: 8 to 128 over 30 steps in multiples of 4.
    let linear = curriculum(
        r#"{"enabled": true, "curriculum_type": "seqlen", "min_difficulty": 8, "max_difficulty": 128,
            "schedule_type": "fixed_linear", "schedule_config": {"total_curriculum_step": 30, "difficulty_step": 4}}"#,
    )
    .expect("linear")
    .expect("enabled");
    // floor(s/30 * 120 + 8) = 4s + 8 up to step 30, then held at 128.
    let at: Vec<u64> = [1, 15, 19, 30, 31]
        .iter()
        .map(|&s| linear.difficulty_at(s))
        .collect();
    assert_eq!(at, [12, 68, 84, 128, 128]);
    let root = curriculum(
        r#"{"enabled": true, "curriculum_type": "seqlen", "min_difficulty": 16, "max_difficulty": 80,
            "schedule_type": "fixed_root", "schedule_config": {"total_curriculum_step": 100, "difficulty_step": 8, "root_degree": 2}}"#,
    )
    .expect("root")
    .expect("enabled");
    // sqrt(25/100) = 0.5: 0.5 * 64 + 16 = 48; sqrt(10/100) * 64 + 16 = 36.2 -> 36, less its
    // remainder by 8: 32.
    assert_eq!((root.difficulty_at(25), root.difficulty_at(10)), (48, 32));
    let discrete = curriculum(
        r#"{"enabled": true, "curriculum_type": "seqlen", "min_difficulty": 2, "max_difficulty": 6,
            "schedule_type": "fixed_discrete", "schedule_config": {"difficulty": [2, 6, 3], "max_step": [5, 10]}}"#,
    )
    .expect("discrete")
    .expect("enabled");
    let at: Vec<u64> = [1, 5, 6, 10, 11]
        .iter()
        .map(|&s| discrete.difficulty_at(s))
        .collect();
    assert_eq!(at, [2, 2, 6, 6, 3]);
    // Once at max_difficulty the scheduler stops updating (DeepSpeed's update_difficulty), and
    // a resumed run replays the steps to the same state.
    let mut c = Curriculum::new(discrete.clone());
    let seen: Vec<u64> = (1..=12).map(|s| c.update(s)).collect();
    assert_eq!(seen, [2, 2, 2, 2, 2, 6, 6, 6, 6, 6, 6, 6]);
    assert_eq!(Curriculum::after(discrete, 11).current(), 6);
    // Disabled blocks are ignored; what ds cannot run is refused by name.
    assert_eq!(
        curriculum(r#"{"enabled": false, "curriculum_type": "vocab"}"#).expect("off"),
        None
    );
    let err = |block: &str| curriculum(block).expect_err(block).to_string();
    let e = err(
        r#"{"enabled": true, "curriculum_type": "vocab", "min_difficulty": 1, "max_difficulty": 2}"#,
    );
    assert!(
        e.contains("curriculum_learning.curriculum_type") && e.contains("does not implement"),
        "{e}"
    );
    let e = err(
        r#"{"enabled": true, "curriculum_type": "seqlen", "min_difficulty": 8, "max_difficulty": 64,
            "schedule_type": "custom", "schedule_config": {}}"#,
    );
    assert!(e.contains("schedule_type") && e.contains("custom"), "{e}");
    let e = err(r#"{"enabled": true, "curriculum_type": "seqlen", "max_difficulty": 64}"#);
    assert!(e.contains("min_difficulty"), "{e}");
    let e = err(
        r#"{"enabled": true, "curriculum_type": "seqlen", "min_difficulty": 8, "max_difficulty": 64,
            "schedule_type": "fixed_discrete", "schedule_config": {"difficulty": [8, 64], "max_step": [1, 2]}}"#,
    );
    assert!(e.contains("one more entry"), "{e}");
}

#[test]
fn gradient_dtypes_follow_deepspeeds_get_data_types() {
    use ds_core::DType::{BF16, F16, F32};
    let dtypes = |json: &str| {
        let c = parse(json, 1).expect("config");
        let d = c.grad_dtypes();
        (d.model, d.accumulate, d.communicate)
    };
    // Defaults: fp32 accumulation for bf16 without ZeRO (DeepSpeed's BF16_Optimizer), the
    // training dtype otherwise; communication in the training dtype.
    let bf16 = r#""bf16": {"enabled": true}"#;
    let at = |stage: u8, extra: &str| {
        format!(
            r#"{{"train_batch_size": 8, {bf16}, "zero_optimization": {{"stage": {stage}}} {extra}}}"#
        )
    };
    assert_eq!(dtypes(&at(0, "")), (BF16, F32, BF16));
    assert_eq!(dtypes(&at(1, "")), (BF16, BF16, BF16));
    assert_eq!(dtypes(&at(3, "")), (BF16, BF16, BF16));
    assert_eq!(
        dtypes(r#"{"train_batch_size": 8, "fp16": {"enabled": true}}"#),
        (F16, F16, F16)
    );
    assert_eq!(dtypes(r#"{"train_batch_size": 8}"#), (F32, F32, F32));
    // Asked for: DeepSpeed's DtypeEnum spellings, and the three communication names in any case.
    let asked = r#", "data_types": {"grad_accum_dtype": "torch.float32"}, "communication_data_type": "FP32""#;
    assert_eq!(dtypes(&at(2, asked)), (BF16, F32, F32));
    let asked = r#", "data_types": {"grad_accum_dtype": "bfloat16", "_note": "x"}"#;
    assert_eq!(dtypes(&at(0, asked)), (BF16, BF16, BF16));
    let err = |json: &str| parse(json, 1).expect_err(json).to_string();
    let e = err(&at(1, r#", "data_types": {"grad_accum_dtype": "fp16"}"#));
    assert!(
        e.contains("data_types.grad_accum_dtype") && e.contains("does not implement"),
        "{e}"
    );
    let e = err(r#"{"train_batch_size": 8, "data_types": {"grad_accum_dtype": "bf16"}}"#);
    assert!(e.contains("accumulating fp32 gradients in bf16"), "{e}");
    let e = err(&at(1, r#", "data_types": {"grad_accum_dtype": "int8"}"#));
    assert!(e.contains("`int8` is not one of fp32, fp16, bf16"), "{e}");
    let e = err(&at(1, r#", "communication_data_type": "float32""#));
    assert!(
        e.contains("communication_data_type") && e.contains("float32"),
        "{e}"
    );
    let e = err(&at(1, r#", "data_types": {"grad_acum_dtype": "fp32"}"#));
    assert!(
        e.contains("grad_acum_dtype") && e.contains("did you mean"),
        "{e}"
    );
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

#[test]
fn disabled_feature_blocks_and_comment_keys_are_accepted_and_change_nothing() {
    let plain = r#"{"train_batch_size": 16, "zero_optimization": {"stage": 2}}"#;
    let with_inert = r#"{
        "_comment": "written for 8 GPUs",
        "train_batch_size": 16,
        "zero_optimization": {"stage": 2, "_note": "stage 2 fits"},
        "tensorboard": {"enabled": false, "output_path": "runs"},
        "wandb": {"enabled": false, "project": "x"},
        "flops_profiler": {"enabled": false, "profile_step": 1},
        "compression_training": {
            "weight_quantization": {"shared_parameters": {"enabled": false}, "different_groups": {}},
            "layer_reduction": {"enabled": false, "keep_number_layer": 5}
        },
        "tensor_parallel": {"autotp_size": 0},
        "memory_breakdown": false,
        "zero_force_ds_cpu_optimizer": false
    }"#;
    assert_eq!(
        parse(with_inert, 1).expect("accepted"),
        parse(plain, 1).expect("plain")
    );
    // The same blocks turned on are refused by name.
    for (key, on) in [
        ("flops_profiler", r#"{"enabled": true}"#),
        ("tensorboard", r#"{"enabled": true, "output_path": "runs"}"#),
        ("tensor_parallel", r#"{"autotp_size": 2}"#),
        ("memory_breakdown", "true"),
    ] {
        let text = format!(r#"{{"train_batch_size": 16, "{key}": {on}}}"#);
        let err = parse(&text, 1).expect_err(key);
        assert!(
            matches!(&err, ConfigError::Unsupported { key: k, .. } if k == key),
            "{key}: {err:?}"
        );
    }
    // `false` leaves bf16's master-weight option off; `true` is refused by name.
    parse(
        r#"{"train_batch_size": 16, "bf16": {"enabled": true, "bf16_master_weights_and_grads": false}}"#,
        1,
    )
    .expect("off");
    let err = parse(
        r#"{"train_batch_size": 16, "bf16": {"enabled": true, "bf16_master_weights_and_grads": true}}"#,
        1,
    )
    .expect_err("on");
    assert!(
        matches!(&err, ConfigError::Unsupported { key, .. } if key == "bf16.bf16_master_weights_and_grads"),
        "{err:?}"
    );
    // Keys DeepSpeed documents are refused by name, never called unknown.
    let err = parse(
        r#"{"train_batch_size": 16, "timers": {"throughput": {"enabled": true}}}"#,
        1,
    )
    .expect_err("timers");
    assert!(matches!(&err, ConfigError::Unsupported { .. }), "{err:?}");
}

#[test]
fn config_text_is_read_as_hjson_with_duplicate_keys_refused() {
    let commented = "{\n  // the global batch\n  \"train_batch_size\": 16, # per step\n  \
                     /* ZeRO */ \"zero_optimization\": {\"stage\": 2,},\n}\n";
    assert_eq!(
        parse(commented, 1).expect("comments and trailing commas"),
        parse(
            r#"{"train_batch_size": 16, "zero_optimization": {"stage": 2}}"#,
            1
        )
        .expect("plain")
    );
    let twice = "{\n  \"train_batch_size\": 16,\n  \"zero_optimization\": {\"stage\": 2,\n    \"stage\": 3}\n}";
    match parse(twice, 1).expect_err("duplicate") {
        ConfigError::Syntax { line, message, .. } => {
            assert_eq!(line, 4, "{message}");
            assert!(message.contains("`stage` is given twice"), "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn activation_checkpointing_is_read_and_its_model_parallel_parts_refused_by_name() {
    let c = parse(
        r#"{"train_batch_size": 8, "activation_checkpointing": {"number_checkpoints": 2,
            "contiguous_memory_optimization": true, "partition_activations": false,
            "cpu_checkpointing": false, "synchronize_checkpoint_boundary": false, "profile": false}}"#,
        1,
    )
    .expect("accepted");
    let ac = c.activation_checkpointing.expect("block");
    assert_eq!((ac.blocks(4), ac.blocks(1)), (2, 1));
    assert!(!ac.cpu_checkpointing);
    let on_host = parse(
        r#"{"train_batch_size": 8, "activation_checkpointing": {"cpu_checkpointing": true}}"#,
        1,
    )
    .expect("cpu_checkpointing")
    .activation_checkpointing
    .expect("block");
    assert!(on_host.cpu_checkpointing);
    let every = parse(
        r#"{"train_batch_size": 8, "activation_checkpointing": {}}"#,
        1,
    )
    .expect("empty block")
    .activation_checkpointing
    .expect("block");
    assert_eq!(every.blocks(6), 6, "default: every block");
    assert_eq!(
        parse(r#"{"train_batch_size": 8}"#, 1)
            .expect("none")
            .activation_checkpointing,
        None
    );
    let text =
        r#"{"train_batch_size": 8, "activation_checkpointing": {"partition_activations": true}}"#;
    let err = parse(text, 1).expect_err("partition_activations");
    assert!(
        matches!(&err, ConfigError::Unsupported { key: k, .. } if k == "activation_checkpointing.partition_activations"),
        "{err:?}"
    );
}
