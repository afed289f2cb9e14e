//! `optimizer`: {type, params} for Adam, AdamW, SGD, Lamb, Adagrad and Lion.
//!
//! Type names match case-insensitively, as in DeepSpeed. `"Adam"` means AdamW (decoupled
//! weight decay) unless `adam_w_mode: false`; `"AdamW"` is always AdamW. Defaults are those of
//! DeepSpeed's FusedAdam / FusedLamb / DeepSpeedCPUAdagrad / FusedLion and PyTorch's SGD.

use super::ConfigError;
use super::json::Obj;
use ds_core::params::{AdagradParams, AdamMode, AdamParams, LambParams, LionParams, SgdParams};
use serde_json::{Value, json};

/// Which optimizer, with its resolved hyper-parameters (the `step` fields are set per step).
#[derive(Debug, Clone, PartialEq)]
pub enum OptimizerKind {
    /// Adam or AdamW.
    Adam(AdamParams),
    /// SGD with optional momentum.
    Sgd(SgdParams),
    /// Lamb (DeepSpeed's FusedLamb).
    Lamb(LambParams),
    /// Adagrad (DeepSpeedCPUAdagrad's update).
    Adagrad(AdagradParams),
    /// Lion (DeepSpeed's FusedLion / DeepSpeedCPULion).
    Lion(LionParams),
}

/// The resolved `optimizer` section.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerConfig {
    /// The type as written in the config.
    pub name: String,
    /// The optimizer and its hyper-parameters.
    pub kind: OptimizerKind,
}

impl OptimizerConfig {
    /// The base learning rate.
    pub fn lr(&self) -> f32 {
        match &self.kind {
            OptimizerKind::Adam(p) => p.lr,
            OptimizerKind::Sgd(p) => p.lr,
            OptimizerKind::Lamb(p) => p.lr,
            OptimizerKind::Adagrad(p) => p.lr,
            OptimizerKind::Lion(p) => p.lr,
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        match &self.kind {
            OptimizerKind::Adam(p) => json!({
                "type": self.name,
                "mode": match p.mode { AdamMode::AdamW => "adamw (decoupled weight decay)", AdamMode::L2 => "adam (L2 weight decay)" },
                "lr": p.lr, "betas": [p.beta1, p.beta2], "eps": p.eps,
                "weight_decay": p.weight_decay, "bias_correction": p.bias_correction,
            }),
            OptimizerKind::Sgd(p) => json!({
                "type": self.name, "lr": p.lr, "momentum": p.momentum, "dampening": p.dampening,
                "weight_decay": p.weight_decay, "nesterov": p.nesterov,
            }),
            OptimizerKind::Lamb(p) => json!({
                "type": self.name, "lr": p.lr, "betas": [p.beta1, p.beta2], "eps": p.eps,
                "weight_decay": p.weight_decay, "bias_correction": p.bias_correction,
                "max_coeff": p.max_coeff, "min_coeff": p.min_coeff,
            }),
            OptimizerKind::Adagrad(p) => json!({
                "type": self.name, "lr": p.lr, "eps": p.eps, "weight_decay": p.weight_decay,
            }),
            OptimizerKind::Lion(p) => json!({
                "type": self.name, "lr": p.lr, "betas": [p.beta1, p.beta2],
                "weight_decay": p.weight_decay,
            }),
        }
    }
}

/// Optimizer types DeepSpeed offers that ds does not, with what they are.
const UNSUPPORTED_TYPES: [(&str, &str); 7] = [
    ("onebitadam", "1-bit Adam"),
    ("onebitlamb", "1-bit Lamb"),
    ("zerooneadam", "0/1 Adam"),
    ("muadam", "MuAdam"),
    ("muadamw", "MuAdamW"),
    ("musgd", "MuSGD"),
    ("muon", "Muon"),
];

fn max_grad_norm(p: &Obj<'_>) -> Result<(), ConfigError> {
    if p.has("max_grad_norm") {
        return Err(ConfigError::invalid(
            p.key("max_grad_norm"),
            "ds clips gradients with the top-level `gradient_clipping` key; move the value there",
        ));
    }
    Ok(())
}

fn check_lr(p: &Obj<'_>, lr: f32) -> Result<(), ConfigError> {
    if !(lr >= 0.0 && lr.is_finite()) {
        return Err(ConfigError::invalid(
            p.key("lr"),
            "must be a non-negative number",
        ));
    }
    Ok(())
}

fn check_betas(p: &Obj<'_>, b: (f32, f32)) -> Result<(), ConfigError> {
    if !((0.0..1.0).contains(&b.0) && (0.0..1.0).contains(&b.1)) {
        return Err(ConfigError::invalid(
            p.key("betas"),
            "both betas must be in [0, 1)",
        ));
    }
    Ok(())
}

fn adam(mut p: Obj<'_>, always_w: bool) -> Result<AdamParams, ConfigError> {
    max_grad_norm(&p)?;
    let d = AdamParams::default();
    let lr = p.f32("lr")?.unwrap_or(d.lr);
    check_lr(&p, lr)?;
    let betas = p.pair("betas")?.unwrap_or((d.beta1, d.beta2));
    check_betas(&p, betas)?;
    let eps = p.f32("eps")?.unwrap_or(d.eps);
    let weight_decay = p.f32("weight_decay")?.unwrap_or(0.0);
    if !(weight_decay >= 0.0 && weight_decay.is_finite() && eps >= 0.0 && eps.is_finite()) {
        return Err(ConfigError::invalid(
            p.key("weight_decay"),
            "eps and weight_decay must be non-negative numbers",
        ));
    }
    let bias_correction = p.bool("bias_correction")?.unwrap_or(true);
    let w_mode = p.bool("adam_w_mode")?.unwrap_or(true);
    if always_w && !w_mode {
        return Err(ConfigError::invalid(
            p.key("adam_w_mode"),
            "type AdamW is always AdamW; use type Adam for L2 weight decay",
        ));
    }
    if p.bool("amsgrad")?.unwrap_or(false) {
        return Err(ConfigError::Unsupported {
            key: p.key("amsgrad"),
            feature: "AMSGrad".into(),
        });
    }
    // torch_adam selects PyTorch's implementation in DeepSpeed; the formula is the same.
    let _ = p.bool("torch_adam")?;
    p.finish(
        &[
            "lr",
            "betas",
            "eps",
            "weight_decay",
            "bias_correction",
            "adam_w_mode",
            "amsgrad",
            "torch_adam",
        ],
        &[],
    )?;
    Ok(AdamParams {
        lr,
        beta1: betas.0,
        beta2: betas.1,
        eps,
        weight_decay,
        mode: if w_mode {
            AdamMode::AdamW
        } else {
            AdamMode::L2
        },
        bias_correction,
        step: 1,
        grad_scale: 1.0,
    })
}

fn sgd(mut p: Obj<'_>) -> Result<SgdParams, ConfigError> {
    max_grad_norm(&p)?;
    let d = SgdParams::default();
    let lr = p.f32("lr")?.unwrap_or(1e-3);
    check_lr(&p, lr)?;
    let momentum = p.f32("momentum")?.unwrap_or(d.momentum);
    let dampening = p.f32("dampening")?.unwrap_or(d.dampening);
    let weight_decay = p.f32("weight_decay")?.unwrap_or(d.weight_decay);
    let nesterov = p.bool("nesterov")?.unwrap_or(false);
    if !(momentum >= 0.0
        && momentum.is_finite()
        && weight_decay >= 0.0
        && weight_decay.is_finite()
        && dampening.is_finite())
    {
        return Err(ConfigError::invalid(
            p.key("momentum"),
            "momentum and weight_decay must be non-negative numbers",
        ));
    }
    if nesterov && (momentum <= 0.0 || dampening != 0.0) {
        return Err(ConfigError::invalid(
            p.key("nesterov"),
            "needs momentum > 0 and dampening 0",
        ));
    }
    p.finish(
        &["lr", "momentum", "dampening", "weight_decay", "nesterov"],
        &[],
    )?;
    Ok(SgdParams {
        lr,
        momentum,
        dampening,
        weight_decay,
        nesterov,
        step: 1,
        grad_scale: 1.0,
    })
}

fn lamb(mut p: Obj<'_>) -> Result<LambParams, ConfigError> {
    max_grad_norm(&p)?;
    let d = LambParams::default();
    let lr = p.f32("lr")?.unwrap_or(d.lr);
    check_lr(&p, lr)?;
    let betas = p.pair("betas")?.unwrap_or((d.beta1, d.beta2));
    check_betas(&p, betas)?;
    let eps = p.f32("eps")?.unwrap_or(d.eps);
    let weight_decay = p.f32("weight_decay")?.unwrap_or(d.weight_decay);
    let bias_correction = p.bool("bias_correction")?.unwrap_or(true);
    let max_coeff = p.f32("max_coeff")?.unwrap_or(d.max_coeff);
    let min_coeff = p.f32("min_coeff")?.unwrap_or(d.min_coeff);
    if !(min_coeff >= 0.0 && max_coeff >= min_coeff && max_coeff.is_finite()) {
        return Err(ConfigError::invalid(
            p.key("max_coeff"),
            "needs 0 <= min_coeff <= max_coeff",
        ));
    }
    if p.bool("eps_inside_sqrt")?.unwrap_or(false) {
        return Err(ConfigError::Unsupported {
            key: p.key("eps_inside_sqrt"),
            feature: "Lamb with eps inside the square root".into(),
        });
    }
    p.finish(
        &[
            "lr",
            "betas",
            "eps",
            "weight_decay",
            "bias_correction",
            "max_coeff",
            "min_coeff",
            "eps_inside_sqrt",
        ],
        &[],
    )?;
    Ok(LambParams {
        lr,
        beta1: betas.0,
        beta2: betas.1,
        eps,
        weight_decay,
        bias_correction,
        min_coeff,
        max_coeff,
        step: 1,
        grad_scale: 1.0,
    })
}

/// A key that must keep the value ds implements (`want`); any other value is a named
/// unsupported feature.
fn only_default<'a>(
    p: &mut Obj<'a>,
    key: &'a str,
    want: f32,
    feature: &str,
) -> Result<(), ConfigError> {
    match p.f32(key)? {
        Some(v) if v != want => Err(ConfigError::Unsupported {
            key: p.key(key),
            feature: feature.into(),
        }),
        _ => Ok(()),
    }
}

fn non_negative(p: &Obj<'_>, key: &str, v: f32) -> Result<(), ConfigError> {
    if !(v >= 0.0 && v.is_finite()) {
        return Err(ConfigError::invalid(
            p.key(key),
            "must be a non-negative number",
        ));
    }
    Ok(())
}

/// DeepSpeed builds DeepSpeedCPUAdagrad (lr, eps, weight_decay) with offload and
/// `torch.optim.Adagrad` without; ds runs the first's update everywhere and accepts the
/// second's keys at the values that make the two the same.
fn adagrad(mut p: Obj<'_>) -> Result<AdagradParams, ConfigError> {
    max_grad_norm(&p)?;
    let d = AdagradParams::default();
    let lr = p.f32("lr")?.unwrap_or(d.lr);
    check_lr(&p, lr)?;
    let eps = p.f32("eps")?.unwrap_or(d.eps);
    non_negative(&p, "eps", eps)?;
    let weight_decay = p.f32("weight_decay")?.unwrap_or(d.weight_decay);
    non_negative(&p, "weight_decay", weight_decay)?;
    only_default(&mut p, "lr_decay", 0.0, "Adagrad with lr_decay")?;
    only_default(
        &mut p,
        "initial_accumulator_value",
        0.0,
        "Adagrad with a non-zero initial_accumulator_value",
    )?;
    for (key, feature) in [
        ("amsgrad", "Adagrad with amsgrad"),
        ("maximize", "maximize"),
    ] {
        if p.bool(key)?.unwrap_or(false) {
            return Err(ConfigError::Unsupported {
                key: p.key(key),
                feature: feature.into(),
            });
        }
    }
    // PyTorch's implementation switch; the formula is the same.
    let _ = p.bool("foreach")?;
    p.finish(
        &[
            "lr",
            "eps",
            "weight_decay",
            "lr_decay",
            "initial_accumulator_value",
            "amsgrad",
            "maximize",
            "foreach",
        ],
        &[],
    )?;
    Ok(AdagradParams {
        lr,
        eps,
        weight_decay,
        grad_scale: 1.0,
    })
}

fn lion(mut p: Obj<'_>) -> Result<LionParams, ConfigError> {
    max_grad_norm(&p)?;
    let d = LionParams::default();
    let lr = p.f32("lr")?.unwrap_or(d.lr);
    check_lr(&p, lr)?;
    let betas = p.pair("betas")?.unwrap_or((d.beta1, d.beta2));
    check_betas(&p, betas)?;
    let weight_decay = p.f32("weight_decay")?.unwrap_or(d.weight_decay);
    non_negative(&p, "weight_decay", weight_decay)?;
    p.finish(&["lr", "betas", "weight_decay"], &[])?;
    Ok(LionParams {
        lr,
        beta1: betas.0,
        beta2: betas.1,
        weight_decay,
        grad_scale: 1.0,
    })
}

/// Reads the `optimizer` object.
pub(super) fn resolve(mut o: Obj<'_>) -> Result<OptimizerConfig, ConfigError> {
    let name = o
        .str("type")?
        .ok_or_else(|| {
            ConfigError::invalid(
                o.key("type"),
                "missing: name the optimizer (Adam, AdamW, SGD, Lamb, Adagrad or Lion)",
            )
        })?
        .to_string();
    let empty = Value::Object(serde_json::Map::new());
    let params_value = o.raw("params")?.unwrap_or(&empty);
    let params = Obj::new(o.key("params"), params_value)?;
    let lower = name.to_ascii_lowercase();
    let kind = match lower.as_str() {
        "adam" => OptimizerKind::Adam(adam(params, false)?),
        "adamw" => OptimizerKind::Adam(adam(params, true)?),
        "sgd" => OptimizerKind::Sgd(sgd(params)?),
        "lamb" => OptimizerKind::Lamb(lamb(params)?),
        "adagrad" => OptimizerKind::Adagrad(adagrad(params)?),
        "lion" => OptimizerKind::Lion(lion(params)?),
        other => {
            if let Some((_, what)) = UNSUPPORTED_TYPES.iter().find(|(k, _)| *k == other) {
                return Err(ConfigError::Unsupported {
                    key: o.key("type"),
                    feature: format!("the {what} optimizer"),
                });
            }
            return Err(ConfigError::invalid(
                o.key("type"),
                format!(
                    "unknown optimizer `{name}`; ds offers Adam, AdamW, SGD, Lamb, Adagrad and Lion"
                ),
            ));
        }
    };
    o.finish(&["type", "params"], &[])?;
    Ok(OptimizerConfig { name, kind })
}
