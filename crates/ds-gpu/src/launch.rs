//! The launch table: every kernel's typed argument list, stated once.
//!
//! A backend launches a kernel by name with a list of [`Arg`]s; [`check`] compares them with
//! the kernel's entry here before the driver sees them, so an argument out of step with the
//! kernel is an error instead of undefined behaviour on the device. A test parses every
//! `__global__` signature in the sources and holds this table to them.

/// The C type of one kernel parameter, as passed by value at launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// Any pointer (a device address, or 0 for null).
    Ptr,
    /// `u64` (`unsigned long long`).
    U64,
    /// `u32` (`unsigned int`).
    U32,
    /// `int`.
    I32,
    /// `float`.
    F32,
}

/// One kernel argument, held by value until the launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// A device address (or 0 for a null pointer).
    Ptr(u64),
    /// A 64-bit count.
    U64(u64),
    /// A 32-bit unsigned value.
    U32(u32),
    /// A 32-bit signed value.
    I32(i32),
    /// A float.
    F32(f32),
}

impl Arg {
    /// The parameter type this argument fills.
    pub fn kind(self) -> ArgKind {
        match self {
            Arg::Ptr(_) => ArgKind::Ptr,
            Arg::U64(_) => ArgKind::U64,
            Arg::U32(_) => ArgKind::U32,
            Arg::I32(_) => ArgKind::I32,
            Arg::F32(_) => ArgKind::F32,
        }
    }
}

/// How many float storage types a kernel is instantiated over (its name's dtype suffixes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    /// One kernel under its bare name, e.g. `ds_fill_i32`.
    Plain,
    /// One per float type: `ds_gelu_f32`, `ds_gelu_f16`, `ds_gelu_bf16`.
    PerType,
    /// One per pair of float types: `ds_cast_f32_bf16`, ...
    PerPair,
}

/// A kernel's name stem, instantiation and parameters.
#[derive(Debug, Clone, Copy)]
pub struct Signature {
    /// The name without `ds_` and dtype suffixes, e.g. `adam`.
    pub op: &'static str,
    /// Which names it is instantiated under.
    pub instances: Instances,
    /// The parameters in order.
    pub args: &'static [ArgKind],
}

use ArgKind::{F32, I32, Ptr, U32, U64};
use Instances::{PerPair, PerType, Plain};

const fn sig(op: &'static str, instances: Instances, args: &'static [ArgKind]) -> Signature {
    Signature {
        op,
        instances,
        args,
    }
}

/// Every kernel in the sources, in source order.
pub const KERNELS: [Signature; 35] = [
    sig("fill", PerType, &[Ptr, U64, F32]),
    sig("fill_i32", Plain, &[Ptr, U64, I32]),
    sig("fill_u8", Plain, &[Ptr, U64, U32]),
    sig("cast", PerPair, &[Ptr, Ptr, U64]),
    sig("scale", PerType, &[Ptr, U64, F32]),
    sig("axpy", PerPair, &[F32, Ptr, Ptr, U64]),
    sig("add", PerType, &[Ptr, Ptr, Ptr, U64]),
    sig("mul", PerType, &[Ptr, Ptr, Ptr, U64]),
    sig("sum_partials", PerType, &[Ptr, U64, Ptr, I32]),
    sig("sum_finalize", Plain, &[Ptr, U32, Ptr, U32]),
    sig("non_finite", PerType, &[Ptr, U64, Ptr, I32]),
    sig("unscale", PerType, &[Ptr, U64, F32, Ptr, I32]),
    // p, g, m, v, copy, n, lr, beta1, beta2, eps, wd, bias corrections 1 and 2, adamw, ...
    sig(
        "adam",
        PerPair,
        &[
            Ptr, Ptr, Ptr, Ptr, Ptr, U64, F32, F32, F32, F32, F32, F32, F32, F32, F32, F32,
        ],
    ),
    sig(
        "sgd",
        PerPair,
        &[Ptr, Ptr, Ptr, Ptr, U64, F32, F32, F32, F32, I32, I32, F32],
    ),
    sig(
        "adagrad",
        PerPair,
        &[Ptr, Ptr, Ptr, Ptr, U64, F32, F32, F32, F32],
    ),
    sig(
        "lion",
        PerPair,
        &[Ptr, Ptr, Ptr, Ptr, U64, F32, F32, F32, F32, F32, F32, F32],
    ),
    sig(
        "lamb_moments",
        PerType,
        &[Ptr, Ptr, Ptr, Ptr, U64, F32, F32, F32, F32, Ptr, F32],
    ),
    sig(
        "lamb_apply",
        PerType,
        &[Ptr, Ptr, Ptr, Ptr, Ptr, U64, F32, F32, F32, F32, F32],
    ),
    sig("bias_add", PerType, &[Ptr, Ptr, U64, U64]),
    sig("bias_grad", PerType, &[Ptr, Ptr, U64, U64, I32]),
    sig("gelu", PerType, &[Ptr, Ptr, U64]),
    sig("gelu_backward", PerType, &[Ptr, Ptr, Ptr, U64]),
    sig("relu", PerType, &[Ptr, Ptr, U64]),
    sig("relu_backward", PerType, &[Ptr, Ptr, Ptr, U64]),
    sig(
        "layer_norm",
        PerType,
        &[Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, U64, F32],
    ),
    sig(
        "layer_norm_dx",
        PerType,
        &[Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, U64],
    ),
    sig(
        "layer_norm_dparams",
        PerType,
        &[Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, U64, U64, I32],
    ),
    sig("xent", PerType, &[Ptr, Ptr, Ptr, U64, I32]),
    sig("xent_backward", PerType, &[Ptr, Ptr, Ptr, U64, I32, F32]),
    sig("embedding", PerType, &[Ptr, Ptr, Ptr, U64, U64, U64]),
    sig(
        "embedding_backward",
        PerType,
        &[Ptr, Ptr, Ptr, Ptr, Ptr, U64, I32],
    ),
    sig(
        "attention",
        PerType,
        &[Ptr, Ptr, Ptr, Ptr, Ptr, U64, U64, U64, F32],
    ),
    sig("attention_delta", PerType, &[Ptr, Ptr, Ptr, U64, U64, U64]),
    sig(
        "attention_dq",
        PerType,
        &[Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, U64, U64, U64, F32],
    ),
    sig(
        "attention_dkv",
        PerType,
        &[Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, U64, U64, U64, F32],
    ),
];

/// The float storage types kernels are instantiated for, as they appear in names.
pub const FLOATS: [&str; 3] = ["f32", "f16", "bf16"];

/// The entry of the kernel named `name` (`ds_<op>[_<dtype>[_<dtype>]]`).
pub fn signature(name: &str) -> Option<&'static Signature> {
    let stem = name.strip_prefix("ds_")?;
    KERNELS.iter().find(|s| {
        let Some(rest) = stem.strip_prefix(s.op) else {
            return false;
        };
        let suffixes: Vec<&str> = rest.split('_').skip(1).collect();
        let dtypes_ok = suffixes.iter().all(|d| FLOATS.contains(d));
        let want = match s.instances {
            Plain => 0,
            PerType => 1,
            PerPair => 2,
        };
        (rest.is_empty() && want == 0)
            || (rest.starts_with('_') && dtypes_ok && suffixes.len() == want)
    })
}

/// Checks `args` against the kernel `name`'s parameters.
///
/// # Errors
/// The kernel is not in the table, or the arguments differ in number or type.
pub fn check(name: &str, args: &[Arg]) -> Result<(), String> {
    let sig = signature(name).ok_or_else(|| format!("kernel {name} is not in the launch table"))?;
    // Compared in place: this runs on every launch.
    let same =
        args.len() == sig.args.len() && args.iter().zip(sig.args).all(|(a, &k)| a.kind() == k);
    if same {
        return Ok(());
    }
    let kinds: Vec<ArgKind> = args.iter().map(|a| a.kind()).collect();
    Err(format!(
        "kernel {name} takes {:?} but was launched with {kinds:?}",
        sig.args
    ))
}

/// Every kernel name a backend may launch, from [`KERNELS`].
pub fn kernel_names() -> Vec<String> {
    let mut names = Vec::new();
    for s in &KERNELS {
        match s.instances {
            Plain => names.push(format!("ds_{}", s.op)),
            PerType => names.extend(FLOATS.iter().map(|a| format!("ds_{}_{a}", s.op))),
            PerPair => {
                for a in FLOATS {
                    names.extend(FLOATS.iter().map(|b| format!("ds_{}_{a}_{b}", s.op)));
                }
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_find_their_entries_and_only_theirs() {
        assert_eq!(signature("ds_fill_f32").map(|s| s.op), Some("fill"));
        assert_eq!(signature("ds_fill_i32").map(|s| s.op), Some("fill_i32"));
        assert_eq!(
            signature("ds_layer_norm_dx_bf16").map(|s| s.op),
            Some("layer_norm_dx")
        );
        assert_eq!(signature("ds_adam_f16_bf16").map(|s| s.op), Some("adam"));
        assert!(signature("ds_adam_f16").is_none());
        assert!(signature("ds_gelu_f64").is_none());
        assert!(signature("gelu_f32").is_none());
        for name in kernel_names() {
            assert!(signature(&name).is_some(), "{name}");
        }
    }

    #[test]
    fn arguments_out_of_step_are_refused_by_name() {
        let ok = [Arg::Ptr(1), Arg::Ptr(2), Arg::U64(3)];
        assert_eq!(check("ds_gelu_f32", &ok), Ok(()));
        let swapped = [Arg::Ptr(1), Arg::U64(3), Arg::Ptr(2)];
        let err = check("ds_gelu_f32", &swapped).err().unwrap_or_default();
        assert!(err.contains("ds_gelu_f32 takes [Ptr, Ptr, U64]"), "{err}");
        assert!(check("ds_gelu_f32", &ok[..2]).is_err());
        let err = check("ds_nope_f32", &ok).err().unwrap_or_default();
        assert!(err.contains("not in the launch table"), "{err}");
    }
}
