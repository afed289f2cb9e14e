//! The engine's training contract on a model whose gradients are known in closed form:
//! averaging, clipping and unscaling against DeepSpeed's formulas, overflow handling (skipped
//! steps, the LR schedule held, the flag shared by all ranks, the floor error), counters, and
//! refusals of calls out of order and of configs it cannot run.

mod common;

use ds_core::collectives::run_threaded;
use ds_core::cpu::CpuBackend;
use ds_core::kernels::ViewMut;
use ds_core::{Collectives, Device, SingleRank};
use ds_nn::Blobs;
use ds_zero::config::Config;
use ds_zero::data::Dataset;
use ds_zero::host::{download_f32, upload_f32};
use ds_zero::model::{GradSink, Model, ParamGroup, ParamSpec, Params};
use ds_zero::{Engine, Error, initialize};

/// `loss = factor * (c . w + sum(b))`: the gradient is `factor * c` for `w` and `factor` for
/// each element of `b`, whatever the weights. `factor` is the rank's number plus one, so the
/// ranks' gradients differ and averaging is visible. Backward writes NaN on the micro-steps
/// listed in `poison`.
struct Linear {
    factor: f32,
    poison: Vec<u64>,
    backwards: u64,
    duplicate_names: bool,
    /// Reads `b` without opening its group's scope (the error a model gets for that).
    unscoped: bool,
}

const C: [f32; 4] = [0.5, -1.0, 1.5, 2.0];
const W0: [f32; 4] = [1.0, 2.0, 3.0, 4.0];
const B0: f32 = 0.25;

impl Linear {
    fn new(rank: usize) -> Self {
        Linear {
            factor: rank as f32 + 1.0,
            poison: Vec::new(),
            backwards: 0,
            duplicate_names: false,
            unscoped: false,
        }
    }
}

fn accumulate(
    dev: &Device<CpuBackend>,
    mut view: ViewMut<'_, CpuBackend>,
    add: impl Fn(usize) -> f32,
) {
    let mut v = download_f32(dev, view.as_ref()).expect("download");
    v.iter_mut().enumerate().for_each(|(i, x)| *x += add(i));
    upload_f32(dev, &v, view.reborrow()).expect("upload");
}

impl Model<CpuBackend> for Linear {
    type Batch = Vec<ds_nn::Sample>;

    fn parameters(&self) -> Vec<ParamSpec> {
        let b = if self.duplicate_names { "w" } else { "b" };
        vec![ParamSpec::new("w", &[4]), ParamSpec::new(b, &[3])]
    }

    /// Two groups, `w` and `b`, so a stage-3 run gathers each on its own.
    fn groups(&self) -> Vec<ParamGroup> {
        vec![
            ParamGroup::new("weight", 0..1),
            ParamGroup::new("bias", 1..2),
        ]
    }

    fn init(&self, index: usize, _seed: u64, out: &mut [f32]) {
        match index {
            0 => out.copy_from_slice(&W0),
            _ => out.fill(B0),
        }
    }

    fn forward(
        &mut self,
        dev: &Device<CpuBackend>,
        params: &mut Params<'_, CpuBackend>,
        _: &Self::Batch,
    ) -> ds_core::Result<f32> {
        let w = params.scoped(0, |p| download_f32(dev, p.get(0)?))?;
        let b = if self.unscoped {
            download_f32(dev, params.get(1)?)?
        } else {
            params.scoped(1, |p| download_f32(dev, p.get(1)?))?
        };
        let dot: f32 = w.iter().zip(C).map(|(w, c)| w * c).sum::<f32>() + b.iter().sum::<f32>();
        Ok(self.factor * dot)
    }

    fn backward(
        &mut self,
        dev: &Device<CpuBackend>,
        _: &mut Params<'_, CpuBackend>,
        grads: &mut dyn GradSink<CpuBackend>,
        scale: f32,
    ) -> ds_core::Result<()> {
        let poisoned = self.poison.contains(&self.backwards);
        self.backwards += 1;
        let f = self.factor;
        accumulate(dev, grads.grad(1)?, |_| {
            if poisoned { f32::NAN } else { scale * f }
        });
        grads.done(1)?;
        accumulate(dev, grads.grad(0)?, |i| scale * f * C[i]);
        grads.done(0)?;
        Ok(())
    }
}

type LinearEngine = Engine<CpuBackend, Linear>;

fn linear_engine(
    json: &str,
    comm: Box<dyn Collectives<CpuBackend>>,
    poison: &[u64],
) -> Result<LinearEngine, Error> {
    let config = Config::parse(json, comm.world_size())?;
    let dev = Device::new(CpuBackend::with_threads(1)?);
    let mut model = Linear::new(comm.rank());
    model.poison = poison.to_vec();
    Ok(initialize(&config, dev, comm, model, Blobs::new(8, 2, 2, 1))?.engine)
}

fn step(e: &mut LinearEngine) -> ds_zero::StepReport {
    let batch = Vec::new();
    loop {
        let loss = e.forward(&batch).expect("forward");
        e.backward(&loss).expect("backward");
        if let Some(r) = e.step().expect("step") {
            return r;
        }
    }
}

/// The expected weights after one plain SGD step (lr 1) on the mean gradient of `world` ranks
/// with DeepSpeed's clipping: `g / max(1, (|g| + 1e-6) / max_norm)`.
fn expected_after_one_step(world: usize, max_norm: f64) -> (Vec<f64>, f64) {
    let mean_factor = (1..=world).map(|r| r as f64).sum::<f64>() / world as f64;
    let g: Vec<f64> = C
        .iter()
        .map(|&c| f64::from(c) * mean_factor)
        .chain([mean_factor; 3])
        .collect();
    let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
    let clip = if max_norm > 0.0 {
        ((norm + 1e-6) / max_norm).max(1.0)
    } else {
        1.0
    };
    let p0: Vec<f64> = W0
        .iter()
        .map(|&w| f64::from(w))
        .chain([f64::from(B0); 3])
        .collect();
    (p0.iter().zip(&g).map(|(p, g)| p - g / clip).collect(), norm)
}

fn flat(e: &LinearEngine) -> Vec<f32> {
    e.parameters()
        .expect("params")
        .into_iter()
        .flat_map(|(_, v)| v)
        .collect()
}

#[test]
fn averaging_clipping_and_unscaling_follow_deepspeeds_formulas() {
    let cases = [
        // (precision, stage, world, gradient accumulation, clipping)
        (r#""fp16": {"enabled": false}"#, 0, 1, 1, 0.0),
        (r#""fp16": {"enabled": false}"#, 0, 2, 1, 1.0),
        (r#""fp16": {"enabled": false}"#, 1, 2, 2, 2.5),
        (r#""fp16": {"enabled": false}"#, 2, 4, 1, 1.0),
        (
            r#""fp16": {"enabled": true, "loss_scale": 1024}"#,
            2,
            2,
            2,
            1.0,
        ),
        (
            r#""fp16": {"enabled": true, "initial_scale_power": 10}"#,
            1,
            4,
            1,
            3.0,
        ),
        (r#""bf16": {"enabled": true}"#, 2, 2, 1, 1.0),
        (r#""fp16": {"enabled": false}"#, 3, 2, 2, 1.0),
        (r#""fp16": {"enabled": false}"#, 3, 4, 1, 2.5),
        (
            r#""fp16": {"enabled": true, "loss_scale": 1024}"#,
            3,
            2,
            1,
            1.0,
        ),
        (r#""bf16": {"enabled": true}"#, 3, 4, 2, 1.0),
    ];
    for (precision, stage, world, gas, clip) in cases {
        let json = format!(
            r#"{{"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": {gas}, "gradient_clipping": {clip},
                "optimizer": {{"type": "SGD", "params": {{"lr": 1.0}}}}, {precision},
                "zero_optimization": {{"stage": {stage}}}}}"#
        );
        let results = run_threaded(world, |comm| {
            let mut e = linear_engine(&json, Box::new(comm), &[]).expect("engine");
            let r = step(&mut e);
            (r, flat(&e), e.dtype())
        });
        let (want, norm) = expected_after_one_step(world, clip);
        for (r, got, dtype) in results {
            let tol = if dtype == ds_core::DType::F32 {
                1e-6
            } else {
                1e-2
            };
            let g = r.grad_norm.unwrap_or_else(|| panic!("{json}: overflow"));
            assert!(
                (f64::from(g) - norm).abs() <= 1e-5 * norm,
                "{json}: norm {g} vs {norm}"
            );
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (f64::from(*g) - w).abs() <= tol * w.abs().max(1.0),
                    "{json}: element {i}: {g} vs {w}"
                );
            }
        }
    }
}

const WARMUP: &str = r#""scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0.01, "warmup_max_lr": 0.1,
    "warmup_num_steps": 4, "warmup_type": "linear"}}"#;

#[test]
fn an_overflow_on_one_rank_skips_the_step_on_every_rank_and_holds_the_lr() {
    let json = format!(
        r#"{{"train_micro_batch_size_per_gpu": 1, "gradient_clipping": 0,
            "optimizer": {{"type": "SGD", "params": {{"lr": 0.1}}}}, {WARMUP},
            "fp16": {{"enabled": true, "initial_scale_power": 8, "hysteresis": 1}},
            "zero_optimization": {{"stage": 2}}}}"#
    );
    let ranks = run_threaded(2, |comm| {
        let rank = Collectives::<CpuBackend>::rank(&comm);
        // Only rank 1 overflows, on its second backward.
        let poison: &[u64] = if rank == 1 { &[1] } else { &[] };
        let mut e = linear_engine(&json, Box::new(comm), poison).expect("engine");
        let mut seen = Vec::new();
        for _ in 0..4 {
            let before = flat(&e);
            let lr_before = e.lr();
            let r = step(&mut e);
            seen.push((
                r,
                before,
                flat(&e),
                lr_before,
                e.lr_schedule_iteration(),
                e.loss_scale(),
            ));
        }
        (seen, e.counters())
    });
    for (seen, counters) in &ranks {
        let skipped: Vec<bool> = seen.iter().map(|s| s.0.skipped).collect();
        assert_eq!(skipped, [false, true, false, false]);
        // A skipped step changes no weight, does not advance the schedule, halves the scale.
        let (r, before, after, lr, iter, scale) = &seen[1];
        assert_eq!(before, after);
        assert_eq!(r.grad_norm, None);
        assert_eq!(*iter, 0);
        assert_eq!(*scale, 128.0);
        assert_eq!(
            *lr, seen[2].3,
            "the LR after a skipped step is the one it would have used"
        );
        // LR(k) = min + (max - min) k/W with the counter at -1 (min), 0, 0 (held), then 1.
        let lrs: Vec<f64> = seen.iter().map(|s| s.0.lr).collect();
        assert_eq!(lrs, [0.01, 0.01, 0.01, 0.01 + (0.1 - 0.01) * 0.25]);
        assert_eq!(
            (
                counters.global_steps,
                counters.skipped_steps,
                counters.micro_steps,
                counters.global_samples
            ),
            (4, 1, 4, 8)
        );
    }
    assert_eq!(
        ranks[0].0.last().map(|s| &s.2),
        ranks[1].0.last().map(|s| &s.2)
    );
}

#[test]
fn overflowing_at_the_minimum_loss_scale_is_an_error_not_a_loop() {
    let json = r#"{"train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
        "fp16": {"enabled": true, "initial_scale_power": 2, "hysteresis": 1, "min_loss_scale": 1}}"#;
    let mut e = linear_engine(json, Box::new(SingleRank), &[0, 1, 2, 3]).expect("engine");
    let batch = Vec::new();
    let mut outcome = Vec::new();
    for _ in 0..3 {
        let loss = e.forward(&batch).expect("forward");
        e.backward(&loss).expect("backward");
        outcome.push(e.step());
    }
    assert!(matches!(&outcome[0], Ok(Some(r)) if r.skipped && r.loss_scale == 4.0));
    assert!(matches!(&outcome[1], Ok(Some(r)) if r.skipped && r.loss_scale == 2.0));
    let err = outcome.pop().expect("third").expect_err("floor");
    assert!(matches!(err, Error::ScaleFloor(_)), "{err}");
    assert!(err.to_string().contains("minimum"), "{err}");
}

#[test]
fn calls_out_of_order_are_refused() {
    let json = r#"{"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 2,
        "optimizer": {"type": "SGD", "params": {"lr": 0.1}}}"#;
    let mut e = linear_engine(json, Box::new(SingleRank), &[]).expect("engine");
    let batch = Vec::new();
    assert!(
        matches!(e.step(), Err(Error::Usage(_))),
        "step without backward"
    );
    let stale = e.forward(&batch).expect("forward");
    let fresh = e.forward(&batch).expect("forward again");
    assert!(
        matches!(e.backward(&stale), Err(Error::Usage(_))),
        "a stale loss"
    );
    e.backward(&fresh).expect("backward");
    assert!(
        matches!(e.forward(&batch), Err(Error::Usage(_))),
        "forward before step"
    );
    assert_eq!(e.step().expect("step"), None, "not a boundary yet");
    let dir = std::env::temp_dir().join(format!("ds-order-{}", std::process::id()));
    let err = e
        .save_checkpoint(&dir, "t", &serde_json::Value::Null, None)
        .expect_err("mid-window");
    assert!(err.to_string().contains("accumulation window"), "{err}");
    assert!(e.is_gradient_accumulation_boundary());
}

#[test]
fn configs_the_engine_cannot_run_are_refused_at_initialize() {
    let base = r#""train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "SGD", "params": {"lr": 0.1}}"#;
    let refuse = |json: String, comm: Box<dyn Collectives<CpuBackend>>, part: &str| {
        let err = linear_engine(&json, comm, &[])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains(part), "`{err}` lacks `{part}`");
    };
    // A stage-3 group larger than the live-parameter cap: named with both sizes.
    refuse(
        format!(
            r#"{{{base}, "zero_optimization": {{"stage": 3, "stage3_param_persistence_threshold": 0,
                "stage3_max_live_parameters": 8}}}}"#
        ),
        Box::new(SingleRank),
        "group `weight` gathers 16 elements (4 parameter elements, padded to a multiple of 16 per rank), more than \
         stage3_max_live_parameters = 8",
    );
    refuse(
        format!(
            r#"{{{base}, "zero_optimization": {{"stage": 2, "offload_optimizer": {{"device": "cpu"}}}}}}"#
        ),
        Box::new(SingleRank),
        "offload_optimizer",
    );
    refuse(
        r#"{"train_micro_batch_size_per_gpu": 1}"#.to_string(),
        Box::new(SingleRank),
        "no `optimizer`",
    );
    // A config resolved for 2 ranks used on 1.
    let config = Config::parse(&format!("{{{base}}}"), 2).expect("config");
    let dev = Device::new(CpuBackend::with_threads(1).expect("backend"));
    let err = initialize(
        &config,
        dev,
        Box::new(SingleRank),
        Linear::new(0),
        Blobs::new(8, 2, 2, 1),
    )
    .err()
    .expect("world mismatch");
    assert!(err.to_string().contains("world size 2"), "{err}");
    let config = Config::parse(&format!("{{{base}}}"), 1).expect("config");
    let dev = Device::new(CpuBackend::with_threads(1).expect("backend"));
    let mut dup = Linear::new(0);
    dup.duplicate_names = true;
    let err = initialize(
        &config,
        dev,
        Box::new(SingleRank),
        dup,
        Blobs::new(8, 2, 2, 1),
    )
    .err()
    .expect("duplicate names");
    assert!(err.to_string().contains("named `w`"), "{err}");
}

#[test]
fn a_parameter_read_outside_its_scope_is_an_error_naming_it_and_its_group() {
    let base = r#""train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "SGD", "params": {"lr": 0.1}}"#;
    for stage in [0, 3] {
        let json = format!(r#"{{{base}, "zero_optimization": {{"stage": {stage}}}}}"#);
        let mut e = linear_engine(&json, Box::new(SingleRank), &[]).expect("engine");
        e.model_mut().unscoped = true;
        let batch = vec![Blobs::new(1, 2, 2, 1).get(0)];
        let err = e.forward(&batch).expect_err("unscoped read").to_string();
        assert!(
            err.contains("parameter `b` was read outside its group's scope: open group `bias`"),
            "stage {stage}: {err}"
        );
        // Nothing is left gathered, and the engine trains once the model behaves.
        e.model_mut().unscoped = false;
        let loss = e.forward(&batch).expect("forward");
        e.backward(&loss).expect("backward");
        e.step().expect("step");
    }
}

#[test]
fn bf16_and_fp16_training_track_fp32() {
    let json = |precision: &str| {
        format!(
            r#"{{"train_batch_size": 16, "optimizer": {{"type": "AdamW", "params": {{"lr": 0.01}}}}, {precision},
                "zero_optimization": {{"stage": 2, "reduce_bucket_size": 200}}}}"#
        )
    };
    let fp32 = common::train(&json(r#""bf16": {"enabled": false}"#), 2, 20)[0]
        .0
        .clone();
    for precision in [
        r#""bf16": {"enabled": true}"#,
        r#""fp16": {"enabled": true, "initial_scale_power": 8}"#,
    ] {
        let low = common::train(&json(precision), 2, 20)[0].0.clone();
        assert!(low[19] < 0.8 * low[0], "{precision} trains: {low:?}");
        common::assert_close(precision, &low, &fp32, 0.05);
    }
}

/// A one-rank engine on `model` for `json`.
fn single_rank(json: &str, model: Linear) -> LinearEngine {
    let config = Config::parse(json, 1).expect("config");
    let dev = Device::new(CpuBackend::with_threads(1).expect("cpu"));
    let comm = ds_core::collectives::run_threaded(1, |c| c)
        .pop()
        .expect("one rank");
    initialize(&config, dev, Box::new(comm), model, Blobs::new(8, 2, 2, 1))
        .expect("engine")
        .engine
}

/// One rank's engine on the linear model with its gradient scaled by `factor`, after one step.
fn one_step_with_factor(json: &str, factor: f32) -> (Vec<f32>, f32) {
    let mut model = Linear::new(0);
    model.factor = factor;
    let mut e = single_rank(json, model);
    let r = step(&mut e);
    (flat(&e), r.grad_norm.expect("no overflow"))
}

#[test]
fn a_gradient_norm_below_the_clipping_threshold_is_not_scaled() {
    // DeepSpeed's coefficient is max(1, (norm + 1e-6) / clip): with the norm (sqrt(10.5) =
    // 3.24) under the threshold 10 the step is the plain SGD step, W0 - C and B0 - 1 exactly.
    // Without the max(1, ...) the gradient would be scaled up by 10 / 3.24.
    let json = r#"{"train_batch_size": 1, "gradient_clipping": 10.0,
                   "optimizer": {"type": "SGD", "params": {"lr": 1.0}}}"#;
    let (p, norm) = one_step_with_factor(json, 1.0);
    assert!((norm - 10.5f32.sqrt()).abs() < 1e-6, "{norm}");
    assert_eq!(p, [0.5, 3.0, 1.5, 2.0, -0.75, -0.75, -0.75]);
}

#[test]
fn the_clipping_coefficients_plus_1e6_shows_at_a_norm_of_1e6() {
    // Gradient norm 1e-6 against a threshold of 1e-6: (1e-6 + 1e-6) / 1e-6 = 2, so the step is
    // half the unclipped one (without the + 1e-6 the coefficient would be 1). lr 1e6 makes the
    // step visible next to the weights: w = W0 - 1e6 * f * C / 2 with f = 1e-6 / sqrt(10.5).
    let f = 1e-6 / 10.5f32.sqrt();
    let json = r#"{"train_batch_size": 1, "gradient_clipping": 1e-6,
                   "optimizer": {"type": "SGD", "params": {"lr": 1e6}}}"#;
    let (p, norm) = one_step_with_factor(json, f);
    assert!((norm - 1e-6).abs() < 1e-12, "{norm}");
    let want: Vec<f32> = W0
        .iter()
        .zip(C)
        .map(|(w, c)| w - 1e6 * f * c / 2.0)
        .chain([B0 - 1e6 * f / 2.0; 3])
        .collect();
    for (g, w) in p.iter().zip(&want) {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{p:?} want {want:?}"
        );
    }
}

#[test]
fn an_fp16_zero_step_divides_by_the_scale_its_gradients_carry_even_when_the_scale_grows() {
    // loss_scale_window 1: the scale doubles after every clean step from the second on. The
    // step that grows it still unscales by the scale its backward used, so each SGD step (lr
    // 0.25) is exactly 0.25 * g; DeepSpeed 0.19's ZeRO path divides by the grown scale and
    // halves that step (docs/engine.md, deliberate differences). All values are exact in fp16.
    let json = r#"{"train_batch_size": 1, "gradient_clipping": 0,
                   "optimizer": {"type": "SGD", "params": {"lr": 0.25}},
                   "fp16": {"enabled": true, "initial_scale_power": 4, "loss_scale_window": 1},
                   "zero_optimization": {"stage": 2}}"#;
    let mut e = single_rank(json, Linear::new(0));
    let first = step(&mut e);
    assert_eq!(flat(&e), [0.875, 2.25, 2.625, 3.5, 0.0, 0.0, 0.0]);
    // The second step is the one that grows the scale (DeepSpeed's count: the first stable
    // window ends after it); its gradients carried 16 and are divided by 16.
    let second = step(&mut e);
    assert_eq!(flat(&e), [0.75, 2.5, 2.25, 3.0, -0.25, -0.25, -0.25]);
    let third = step(&mut e);
    assert_eq!(
        (first.loss_scale, second.loss_scale, third.loss_scale),
        (16.0, 16.0, 32.0),
        "the scale grew at the end of the second step"
    );
    assert_eq!(flat(&e), [0.625, 2.75, 1.875, 2.5, -0.5, -0.5, -0.5]);
}

#[test]
fn evaluate_gives_the_loss_without_training_and_only_between_steps() {
    let json = r#"{"train_batch_size": 1, "optimizer": {"type": "SGD", "params": {"lr": 0.25}}}"#;
    let mut e = single_rank(json, Linear::new(0));
    let before = flat(&e);
    let batch = Vec::new();
    // The linear model's loss: C . W0 + 3 B0 = 0.5 - 2 + 4.5 + 8 + 0.75 = 11.75.
    assert_eq!(e.evaluate(&batch).expect("evaluate"), 11.75);
    assert_eq!(flat(&e), before, "evaluation trains nothing");
    assert_eq!(e.counters().global_steps, 0);
    // A training step still runs normally after it, and evaluation between a forward and its
    // step is refused by name.
    step(&mut e);
    let loss = e.forward(&batch).expect("forward");
    let err = e.evaluate(&batch).expect_err("mid-step");
    assert!(
        err.to_string().contains("evaluate between training steps"),
        "{err}"
    );
    e.backward(&loss).expect("backward");
    e.step().expect("step");
}

/// The linear model's weights after `steps` steps of `optimizer` (gradient `factor * C` for
/// `w`, `factor` for each element of `b`, every step; no clipping).
fn after_steps(optimizer: &str, steps: usize, factor: f32) -> Vec<f32> {
    let json =
        format!(r#"{{"train_batch_size": 1, "gradient_clipping": 0, "optimizer": {optimizer}}}"#);
    let mut model = Linear::new(0);
    model.factor = factor;
    let mut e = single_rank(&json, model);
    for _ in 0..steps {
        step(&mut e);
    }
    flat(&e)
}

fn assert_near(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (f64::from(*g) - w).abs() <= 1e-6 * w.abs().max(1.0),
            "{what}: got {got:?}, want {want:?}"
        );
    }
}

/// The initial weights and their constant gradients, `w` then `b`.
fn weights_and_grads() -> Vec<(f64, f64)> {
    W0.iter()
        .zip(C)
        .map(|(&w, c)| (f64::from(w), f64::from(c)))
        .chain([(f64::from(B0), 1.0); 3])
        .collect()
}

#[test]
fn adagrad_follows_deepspeed_cpu_adagrads_update_step_by_step() {
    // With a constant gradient g the sum of squares after t steps is t g^2, so step t moves a
    // weight by lr g / (sqrt(t) |g| + eps) = 0.1 sign(g) / sqrt(t) (eps 1e-10 is far below f32's
    // resolution here): after three steps 0.1 (1 + 1/sqrt(2) + 1/sqrt(3)) = 0.22845.
    let plain = r#"{"type": "Adagrad", "params": {"lr": 0.1}}"#;
    let total = 0.1 * (1.0 + 0.5f64.sqrt() + (1.0f64 / 3.0).sqrt());
    let want: Vec<f64> = weights_and_grads()
        .iter()
        .map(|&(p, g)| p - total * g.signum())
        .collect();
    assert_near(&after_steps(plain, 3, 1.0), &want, "Adagrad, 3 steps");
    // Weight decay 0.5 enters the sum of squares but not the numerator (DeepSpeedCPUAdagrad's
    // kernel): w[0] = 1 with g = 0.5 has v = (0.5 + 0.5 * 1)^2 = 1 and steps to
    // 1 - 0.1 * 0.5 / 1 = 0.95, where torch.optim.Adagrad would step to 1 - 0.1 * 1 / 1 = 0.9.
    let decayed = r#"{"type": "Adagrad", "params": {"lr": 0.1, "weight_decay": 0.5}}"#;
    let first = after_steps(decayed, 1, 1.0)[0];
    assert!((first - 0.95).abs() < 1e-7, "{first}");
    let want: Vec<f64> = weights_and_grads()
        .iter()
        .map(|&(mut p, g)| {
            let mut v = 0.0;
            for _ in 0..3 {
                v += (g + 0.5 * p) * (g + 0.5 * p);
                p -= 0.1 * g / (v.sqrt() + 1e-10);
            }
            p
        })
        .collect();
    assert_near(&after_steps(decayed, 3, 1.0), &want, "Adagrad, decay 0.5");
}

#[test]
fn lion_follows_its_formula_step_by_step_and_leaves_idle_weights_alone() {
    // lr 0.1, betas (0.9, 0.99), m_0 = 0: c_1 = 0.1 g, m_1 = 0.01 g, c_2 = 0.9 m_1 + 0.1 g =
    // 0.109 g, ...: the sign is sign(g) every step, so after three steps p = p_0 - 0.3 sign(g).
    let plain = r#"{"type": "Lion", "params": {"lr": 0.1, "betas": [0.9, 0.99]}}"#;
    let want = [0.7, 2.3, 2.7, 3.7, -0.05, -0.05, -0.05];
    assert_near(&after_steps(plain, 3, 1.0), &want, "Lion, 3 steps");
    // Decoupled weight decay 0.5: p = p (1 - 0.1 * 0.5) - 0.1 sign(c); w[0]: 1 -> 0.85 -> 0.7075.
    let decayed = r#"{"type": "Lion", "params": {"lr": 0.1, "weight_decay": 0.5}}"#;
    assert!((after_steps(decayed, 2, 1.0)[0] - 0.7075).abs() < 1e-7);
    // A zero gradient on zero momentum: c = 0 and sign(0) = 0, so nothing moves (DeepSpeed's
    // CPU kernel would step every weight by -0.1 and its CUDA kernel by +0.1).
    let initial: Vec<f32> = W0.iter().copied().chain([B0; 3]).collect();
    assert_eq!(after_steps(plain, 2, 0.0), initial);
}

#[test]
fn curriculum_learning_on_a_model_without_a_sequence_length_is_refused_at_initialize() {
    let json = r#"{"train_batch_size": 1, "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
        "curriculum_learning": {"enabled": true, "curriculum_type": "seqlen", "min_difficulty": 8,
          "max_difficulty": 64, "schedule_type": "fixed_linear",
          "schedule_config": {"total_curriculum_step": 10, "difficulty_step": 8}}}"#;
    let err = linear_engine(json, Box::new(SingleRank), &[])
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("curriculum_learning") && err.contains("set_curriculum_seqlen"),
        "{err}"
    );
}
