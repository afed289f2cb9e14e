//! The conformance suite: one oracle, one tolerance policy, every backend.
//!
//! - [`oracle`]: plain f64 loops, the reference every backend (the CPU one included) is held to.
//! - [`tolerance`]: the single policy deciding "close enough", scaled by the output dtype's
//!   epsilon and the reduction length, with NaN and infinity positions exact.
//! - [`cases`]: generic bodies `fn(&Device<B>, DType, &Config)`, driven by proptest over sizes,
//!   offsets inside padded buffers (pads must survive), special values and hyper-parameters;
//!   plus bad-input checks and collective cases.
//! - [`backend_tests!`]: stamps one `#[test]` per kernel x dtype (and the bad-input and
//!   collective tests) for a backend in one line.
//! - [`run_suite`] / [`Report`]: the coverage matrix `ds conformance` prints.
//!
//! Adding a backend: implement `ds_core::Backend`, then in the backend crate's tests write
//!
//! ```ignore
//! conformance::backend_tests!(my_backend, my_crate::MyBackend::new());
//! ```

pub mod cases;
pub mod data;
mod matrix;
pub mod oracle;
pub mod tolerance;

pub use cases::{Config, Outcome, run_case};
pub use matrix::{Report, Row, run_suite};

/// Re-exported for the macro.
#[doc(hidden)]
pub use ds_core;

use ds_core::{Backend, DType, Device, Kernel};

/// Opens a device for a stamped test, failing the test with the reason when the backend has
/// no device here: a test that cannot run is never counted as passed.
#[doc(hidden)]
pub fn open<B: Backend, E: std::fmt::Display>(made: Result<B, E>) -> Device<B> {
    match made {
        Ok(b) => Device::new(b),
        Err(e) => panic!("NOT RUN: the backend has no device here: {e}"),
    }
}

/// Runs one kernel x dtype cell in a stamped test: panics on failure; a combination the
/// backend declares unsupported passes only if the backend refused it, and says so.
#[doc(hidden)]
pub fn assert_case<B: Backend>(dev: &Device<B>, kernel: Kernel, dtype: DType) {
    match run_case(dev, kernel, dtype, &Config::from_env()) {
        Outcome::Pass(_) => {}
        Outcome::Unsupported(why) => println!(
            "{kernel} {dtype}: unsupported on {} (declared and refused): {why}",
            dev.info().backend
        ),
        Outcome::Fail(msg) => panic!("{kernel} {dtype} on {}: {msg}", dev.info().backend),
    }
}

/// Runs a check returning `Result<usize, String>`, panicking with its message on failure.
#[doc(hidden)]
pub fn assert_ok(what: &str, r: Result<usize, String>) {
    if let Err(e) = r {
        panic!("{what}: {e}");
    }
}

/// Stamps out the whole suite for one backend: `backend_tests!(name, expr)` where `expr`
/// evaluates to `Result<B, impl Display>` and uses paths that resolve from a nested module
/// (crate names or `crate::`). Creates module `name` with, per kernel, tests `f32`, `f16`,
/// `bf16` and `bad_input`, and a `collectives` module.
///
/// Attributes written before the name go on every generated test. A backend that needs
/// hardware CI does not have marks its tests ignored with the reason, so they are reported as
/// ignored (never as passed) and run with `--ignored` where the hardware is:
///
/// ```ignore
/// conformance::backend_tests!(#[ignore = "needs an NVIDIA GPU"] cuda, my::CudaBackend::new(0));
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($(#[$meta:meta])* $name:ident, $make:expr) => {
        mod $name {
            #[allow(dead_code)]
            fn device() -> $crate::ds_core::Device<impl $crate::ds_core::Backend> {
                $crate::open($make)
            }
            $crate::__kernel_tests!([$(#[$meta])*]
                copy => Copy, fill => Fill, cast => Cast, scale => Scale, axpy => Axpy,
                add => Add, mul => Mul, sum => Sum, sum_squares => SumSquares,
                non_finite => NonFinite, unscale_and_check => UnscaleCheck,
                adam_step => AdamStep, sgd_step => SgdStep, lamb_step => LambStep,
                adagrad_step => AdagradStep, lion_step => LionStep, gemm => Gemm,
                bias_add => BiasAdd, bias_grad => BiasGrad, gelu => Gelu,
                gelu_backward => GeluBackward, relu => Relu, relu_backward => ReluBackward,
                layer_norm => LayerNorm, layer_norm_backward => LayerNormBackward,
                softmax_cross_entropy => SoftmaxCrossEntropy,
                softmax_cross_entropy_backward => SoftmaxCrossEntropyBackward,
                embedding => Embedding, embedding_backward => EmbeddingBackward,
                attention => Attention, attention_backward => AttentionBackward,
            );
            $crate::__collective_tests!([$(#[$meta])*]);
        }
    };
}

/// Implementation detail of [`backend_tests!`]: one module per kernel, one at a time so the
/// attributes can be repeated inside each.
#[doc(hidden)]
#[macro_export]
macro_rules! __kernel_tests {
    ([$($attr:tt)*]) => {};
    ([$($attr:tt)*] $module:ident => $kernel:ident, $($rest:tt)*) => {
        mod $module {
            use $crate::ds_core::{DType, Kernel};
            $($attr)* #[test] fn f32() { $crate::assert_case(&super::device(), Kernel::$kernel, DType::F32) }
            $($attr)* #[test] fn f16() { $crate::assert_case(&super::device(), Kernel::$kernel, DType::F16) }
            $($attr)* #[test] fn bf16() { $crate::assert_case(&super::device(), Kernel::$kernel, DType::BF16) }
            $($attr)* #[test] fn bad_input() {
                $crate::assert_ok("bad input", $crate::cases::errors::bad_input(&super::device(), Kernel::$kernel));
            }
        }
        $crate::__kernel_tests!([$($attr)*] $($rest)*);
    };
}

/// Implementation detail of [`backend_tests!`]: the threaded collectives on the backend.
#[doc(hidden)]
#[macro_export]
macro_rules! __collective_tests {
    ([$($attr:tt)*]) => {
        mod collectives {
            use $crate::cases::collectives::{CollectiveOp, threaded_sweep};
            use $crate::ds_core::{DType, ReduceOp};
            fn sweep(op: CollectiveOp) {
                for dtype in DType::FLOATS {
                    $crate::assert_ok(&format!("{op} {dtype}"), threaded_sweep(&super::device(), op, dtype));
                }
            }
            $($attr)* #[test] fn all_reduce_sum() { sweep(CollectiveOp::AllReduce(ReduceOp::Sum)) }
            $($attr)* #[test] fn all_reduce_avg() { sweep(CollectiveOp::AllReduce(ReduceOp::Avg)) }
            $($attr)* #[test] fn all_reduce_max() { sweep(CollectiveOp::AllReduce(ReduceOp::Max)) }
            $($attr)* #[test] fn reduce_scatter_sum() { sweep(CollectiveOp::ReduceScatter(ReduceOp::Sum)) }
            $($attr)* #[test] fn reduce_scatter_avg() { sweep(CollectiveOp::ReduceScatter(ReduceOp::Avg)) }
            $($attr)* #[test] fn reduce_scatter_max() { sweep(CollectiveOp::ReduceScatter(ReduceOp::Max)) }
            $($attr)* #[test] fn all_gather() { sweep(CollectiveOp::AllGather) }
            $($attr)* #[test] fn reduce_scatter_in_place_sum() { sweep(CollectiveOp::ReduceScatterInPlace(ReduceOp::Sum)) }
            $($attr)* #[test] fn reduce_scatter_in_place_max() { sweep(CollectiveOp::ReduceScatterInPlace(ReduceOp::Max)) }
            $($attr)* #[test] fn all_gather_in_place() { sweep(CollectiveOp::AllGatherInPlace) }
            $($attr)* #[test] fn broadcast() { sweep(CollectiveOp::Broadcast) }
            $($attr)* #[test] fn barrier() { sweep(CollectiveOp::Barrier) }
            $($attr)* #[test] fn bad_arguments_name_the_argument() {
                $crate::assert_ok("bad arguments", $crate::cases::collective_errors::bad_arguments(&super::device()));
            }
            $($attr)* #[test] fn mismatched_calls_fail_every_rank() {
                $crate::assert_ok("mismatch", $crate::cases::collective_errors::mismatch_fails_every_rank(&super::device()));
            }
            $($attr)* #[test] fn a_dead_rank_fails_the_others_fast() {
                $crate::assert_ok("dead rank", $crate::cases::collective_errors::dead_rank_fails_fast(&super::device()));
            }
            $($attr)* #[test] fn a_missing_rank_times_out_by_name() {
                $crate::assert_ok("timeout", $crate::cases::collective_errors::timeout_names_missing_ranks(&super::device()));
            }
        }
    };
}
