//! `data_types.grad_accum_dtype` and `communication_data_type`: the dtype a rank sums its
//! gradients in over an accumulation window, and the dtype they cross the network in.
//!
//! DeepSpeed's defaults (`DeepSpeedEngine.get_data_types`, `communication_data_type`): the
//! accumulation dtype is fp32 for bf16 without ZeRO (its BF16_Optimizer) and the training dtype
//! otherwise; the communication dtype is the training dtype. Both depend on the stage, so the
//! config keeps what was asked and [`GradDtypes::resolve`] applies the rule.

use super::ConfigError;
use super::json::Obj;
use ds_core::DType;
use serde_json::{Value, json};

/// What the config asks for (`None`: DeepSpeed's default for the precision and stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataTypes {
    /// `data_types.grad_accum_dtype`.
    pub grad_accum: Option<DType>,
    /// `communication_data_type`.
    pub communication: Option<DType>,
}

/// The resolved dtypes of a run's gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GradDtypes {
    /// What the model writes each micro-step's gradients in (the training dtype).
    pub model: DType,
    /// What they are summed in over the accumulation window (and what the optimizer reads).
    pub accumulate: DType,
    /// What they are reduced over ranks in.
    pub communicate: DType,
}

impl GradDtypes {
    /// DeepSpeed's rule for `asked` with training dtype `model` at ZeRO `stage`.
    pub fn resolve(asked: DataTypes, model: DType, stage: u8) -> Self {
        let default_accumulate = if model == DType::BF16 && stage == 0 {
            DType::F32
        } else {
            model
        };
        GradDtypes {
            model,
            accumulate: asked.grad_accum.unwrap_or(default_accumulate),
            communicate: asked.communication.unwrap_or(model),
        }
    }

    /// Whether the window's sum needs a buffer of its own beside the model's gradients.
    pub fn separate_accumulation(&self) -> bool {
        self.accumulate != self.model
    }
}

fn name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "fp16",
        DType::BF16 => "bf16",
        _ => "fp32",
    }
}

impl DataTypes {
    pub(crate) fn to_json(self, resolved: GradDtypes) -> Value {
        json!({
            "grad_accum_dtype": name(resolved.accumulate),
            "communication_data_type": name(resolved.communicate),
            "from_config": {
                "grad_accum_dtype": self.grad_accum.map(name),
                "communication_data_type": self.communication.map(name),
            },
        })
    }
}

/// DeepSpeed's `DtypeEnum` spellings for the float types (int8 is not a gradient dtype).
fn accum_dtype(s: &str) -> Option<DType> {
    match s {
        "fp32" | "float32" | "float" | "torch.float32" => Some(DType::F32),
        "fp16" | "float16" | "half" | "torch.float16" => Some(DType::F16),
        "bf16" | "bfloat16" | "torch.bfloat16" => Some(DType::BF16),
        _ => None,
    }
}

/// Reads both keys and checks them against the training dtype `model`.
pub(super) fn resolve(top: &mut Obj<'_>, model: DType) -> Result<DataTypes, ConfigError> {
    let grad_accum = match top.obj("data_types")? {
        None => None,
        Some(mut d) => {
            let v = match d.raw("grad_accum_dtype")? {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(accum_dtype(s).ok_or_else(|| {
                    ConfigError::invalid(
                        d.key("grad_accum_dtype"),
                        format!("`{s}` is not one of fp32, fp16, bf16 (or DeepSpeed's other spellings of them)"),
                    )
                })?),
                Some(other) => {
                    return Err(ConfigError::Type {
                        key: d.key("grad_accum_dtype"),
                        expected: "a dtype name such as \"fp32\"",
                        found: other.to_string(),
                    });
                }
            };
            d.finish(&["grad_accum_dtype"], &[])?;
            v
        }
    };
    if let Some(a) = grad_accum
        && a != model
        && a != DType::F32
    {
        return Err(ConfigError::Unsupported {
            key: "data_types.grad_accum_dtype".into(),
            feature: format!(
                "accumulating {} gradients in {} (ds accumulates in the training dtype or in fp32)",
                name(model),
                name(a)
            ),
        });
    }
    // DeepSpeed lower-cases the value and takes exactly these three.
    let communication = match top.str("communication_data_type")? {
        None => None,
        Some(s) => Some(match s.to_ascii_lowercase().as_str() {
            "fp32" => DType::F32,
            "fp16" => DType::F16,
            "bf16" => DType::BF16,
            _ => {
                return Err(ConfigError::invalid(
                    "communication_data_type",
                    format!("`{s}` is not one of fp32, fp16, bf16"),
                ));
            }
        }),
    };
    Ok(DataTypes {
        grad_accum,
        communication,
    })
}
