//! Shared pieces of ds's benchmarks: device set-up, the machine's FMA peak, and timing helpers
//! for paired measurements.
//!
//! Benchmarks state speed as ratios measured in one run: a kernel's bytes per second over the
//! same machine's copy bandwidth or over an in-place bandwidth kernel of the optimizer's shape
//! ([`ds_core::cpu::roofline`]), and GEMM's FLOP/s over the FMA peak measured here. These
//! machines are shared and noisy; ratios measured side by side survive that, absolute numbers
//! do not.

pub mod peak;
pub mod setup;
pub mod timing;
