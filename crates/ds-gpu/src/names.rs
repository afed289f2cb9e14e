//! The name of every kernel a GPU backend launches: `ds_<op>_<dtype>[_<dtype>]`.

/// The float storage types every kernel is instantiated for, as they appear in names.
const FLOATS: [&str; 3] = ["f32", "f16", "bf16"];

/// Kernels instantiated once per float storage type.
const ONE_TYPE: [&str; 26] = [
    "fill",
    "scale",
    "add",
    "mul",
    "sum_partials",
    "non_finite",
    "unscale",
    "lamb_moments",
    "lamb_apply",
    "bias_add",
    "bias_grad",
    "gelu",
    "gelu_backward",
    "relu",
    "relu_backward",
    "layer_norm",
    "layer_norm_dx",
    "layer_norm_dparams",
    "xent",
    "xent_backward",
    "embedding",
    "embedding_backward",
    "attention",
    "attention_delta",
    "attention_dq",
    "attention_dkv",
];

/// Kernels instantiated for every pair of float storage types (source, destination or
/// gradient, weight copy).
const TWO_TYPES: [&str; 6] = ["cast", "axpy", "adam", "sgd", "adagrad", "lion"];

/// Every kernel name a backend may launch (a test checks each is defined in the sources).
pub fn kernel_names() -> Vec<String> {
    let mut names = vec![
        "ds_fill_i32".to_string(),
        "ds_fill_u8".into(),
        "ds_sum_finalize".into(),
    ];
    for a in FLOATS {
        names.extend(ONE_TYPE.iter().map(|op| format!("ds_{op}_{a}")));
        for b in FLOATS {
            names.extend(TWO_TYPES.iter().map(|op| format!("ds_{op}_{a}_{b}")));
        }
    }
    names
}
