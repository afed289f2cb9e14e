//! Whether a block of a DeepSpeed feature ds does not implement leaves that feature off.
//!
//! DeepSpeed accepts a disabled feature block and does nothing with it, and published configs
//! carry many (`"tensorboard": {"enabled": false}`, a compression block whose every technique is
//! off, `"memory_breakdown": false`). ds accepts and ignores them too, and refuses,
//! by name, only a feature the config turns on.

use serde_json::{Map, Value};

/// Whether `value`, given for the unsupported feature `key`, leaves the feature off.
pub(crate) fn leaves_off(key: &str, value: &Value) -> bool {
    match (key, value) {
        (_, Value::Null | Value::Bool(false)) => true,
        ("compression_training", Value::Object(m)) => m.values().all(technique_off),
        ("tensor_parallel", Value::Object(m)) => tensor_parallel_off(m),
        ("compile", Value::Object(m)) => compile_off(m),
        (_, Value::Object(m)) => m.get("enabled") == Some(&Value::Bool(false)),
        _ => false,
    }
}

/// A compression technique (`weight_quantization`, `sparse_pruning`, ...) is on when its
/// `shared_parameters.enabled` is; `layer_reduction` when its own `enabled` is.
fn technique_off(t: &Value) -> bool {
    let enabled = |o: &Value| o.get("enabled").and_then(Value::as_bool).unwrap_or(false);
    match t {
        Value::Object(m) => match m.get("shared_parameters") {
            Some(shared) => !enabled(shared),
            None => !enabled(t),
        },
        other => leaves_off("", other),
    }
}

/// Automatic tensor parallelism is on from `autotp_size` 2 (0, the default, is off) or a
/// `tp.tp_size` above 1.
fn tensor_parallel_off(m: &Map<String, Value>) -> bool {
    let size = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let tp = m.get("tp").or_else(|| m.get("tensor_parallel"));
    size(m.get("autotp_size")) <= 1 && size(tp.and_then(|t| t.get("tp_size"))) <= 1
}

/// `compile`: older releases' `{"disable": .., "backend": ..}` (torch.compile is on unless
/// `disable` is true) or 0.19's DeepCompile options (on when `deepcompile` is true).
fn compile_off(m: &Map<String, Value>) -> bool {
    if m.contains_key("disable") || m.contains_key("backend") {
        return m.get("disable") == Some(&Value::Bool(true));
    }
    m.get("deepcompile") != Some(&Value::Bool(true))
}

#[cfg(test)]
mod tests {
    use super::leaves_off;
    use serde_json::json;

    #[test]
    fn disabled_blocks_are_off_and_enabled_ones_are_not() {
        assert!(leaves_off(
            "tensorboard",
            &json!({"enabled": false, "output_path": "x"})
        ));
        assert!(!leaves_off("tensorboard", &json!({"enabled": true})));
        assert!(
            !leaves_off("flops_profiler", &json!({"profile_step": 1})),
            "no flag: on"
        );
        assert!(leaves_off("memory_breakdown", &json!(false)));
        assert!(!leaves_off("memory_breakdown", &json!(true)));
        let off = json!({
            "weight_quantization": {"shared_parameters": {"enabled": false}, "different_groups": {}},
            "layer_reduction": {"enabled": false, "keep_number_layer": 5}
        });
        assert!(leaves_off("compression_training", &off));
        let on = json!({"sparse_pruning": {"shared_parameters": {"enabled": true}}});
        assert!(!leaves_off("compression_training", &on));
        assert!(leaves_off("tensor_parallel", &json!({"autotp_size": 0})));
        assert!(!leaves_off("tensor_parallel", &json!({"autotp_size": 2})));
        assert!(!leaves_off(
            "tensor_parallel",
            &json!({"tp": {"tp_size": 4}})
        ));
        assert!(!leaves_off(
            "compile",
            &json!({"disable": false, "backend": "inductor"})
        ));
        assert!(leaves_off("compile", &json!({"disable": true})));
        assert!(leaves_off("compile", &json!({"deepcompile": false})));
        assert!(!leaves_off("compile", &json!({"deepcompile": true})));
        assert!(!leaves_off(
            "seq_parallel_communication_data_type",
            &json!("bf16")
        ));
    }
}
