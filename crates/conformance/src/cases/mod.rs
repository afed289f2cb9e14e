//! Generic case bodies: each checks one kernel for one dtype on any backend against the
//! oracle, over inputs drawn by proptest (sizes, offsets inside padded buffers, special values,
//! hyper-parameters). A failure reports proptest's shrunk minimal input.

pub mod collective_errors;
pub mod collectives;
mod elementwise;
pub mod errors;
mod errors_one_state;
mod linalg;
mod nn;
mod optim;
mod optim_one_state;
mod reduce;

use crate::oracle::{Expected, round_to};
use crate::tolerance::{Tolerance, compare};
use ds_core::info::Support;
use ds_core::kernels::View;
use ds_core::{Backend, BufferExt, DType, Device, DeviceBuffer, Error, Kernel, bf16, f16};
use proptest::prelude::*;
use proptest::test_runner::{
    Config as ProptestConfig, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};
use std::cell::{Cell, RefCell};
use std::ops::Range;

/// How much of the suite to run.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Random inputs per kernel and dtype.
    pub cases: u32,
}

impl Config {
    /// `DS_CONFORMANCE_CASES` random inputs per kernel and dtype (default 24).
    pub fn from_env() -> Self {
        let cases = std::env::var("DS_CONFORMANCE_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(24);
        Config { cases }
    }
}

/// The result of one kernel x dtype cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every check passed; the number of values compared.
    Pass(usize),
    /// A check failed; the message names the minimal failing input.
    Fail(String),
    /// The backend declares the combination unsupported and refused it, with its reason.
    Unsupported(String),
}

/// Why a case body stopped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CaseError {
    Unsupported(String),
    Fail(String),
}

impl From<Error> for CaseError {
    fn from(e: Error) -> Self {
        match e {
            Error::Unsupported { reason, .. } => CaseError::Unsupported(reason),
            other => CaseError::Fail(other.to_string()),
        }
    }
}

impl From<String> for CaseError {
    fn from(s: String) -> Self {
        CaseError::Fail(s)
    }
}

pub(crate) type CaseResult = Result<usize, CaseError>;

/// `prop!(cfg, strategy, |pattern| body)`: [`prop_run`] with the closure's pattern as the
/// inputs' names, so a failure reads `(n, seed, pad) = (12, 7, Pad { .. })`.
macro_rules! prop {
    ($cfg:expr, $strategy:expr, |$pat:pat_param| $body:block $(,)?) => {
        $crate::cases::prop_run($cfg, $strategy, stringify!($pat), |$pat| $body)
    };
}
pub(crate) use prop;

/// Runs `body` over `cfg.cases` inputs from `strategy` with a fixed seed (reproducible), and
/// adds up the values checked; a failure names the minimal failing input with `labels`.
pub(crate) fn prop_run<S>(
    cfg: &Config,
    strategy: S,
    labels: &str,
    body: impl Fn(S::Value) -> CaseResult,
) -> CaseResult
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let config = ProptestConfig {
        cases: cfg.cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let checked = Cell::new(0usize);
    let unsupported = RefCell::new(None);
    let result = runner.run(&strategy, |input| match body(input) {
        Ok(n) => {
            checked.set(checked.get() + n);
            Ok(())
        }
        Err(CaseError::Unsupported(why)) => {
            *unsupported.borrow_mut() = Some(why.clone());
            Err(TestCaseError::fail(format!("unsupported: {why}")))
        }
        Err(CaseError::Fail(msg)) => Err(TestCaseError::fail(msg)),
    });
    if let Some(why) = unsupported.into_inner() {
        return Err(CaseError::Unsupported(why));
    }
    match result {
        Ok(()) => Ok(checked.get()),
        Err(TestError::Fail(why, input)) => Err(CaseError::Fail(format!(
            "{why}; minimal failing input {labels} = {input:?}"
        ))),
        Err(e) => Err(CaseError::Fail(e.to_string())),
    }
}

/// Runs one kernel x dtype cell on a device.
pub fn run_case<B: Backend>(
    dev: &Device<B>,
    kernel: Kernel,
    dtype: DType,
    cfg: &Config,
) -> Outcome {
    let result = match kernel {
        Kernel::Copy => elementwise::copy(dev, dtype, cfg),
        Kernel::Fill => elementwise::fill(dev, dtype, cfg),
        Kernel::Cast => elementwise::cast(dev, dtype, cfg),
        Kernel::Scale => elementwise::scale(dev, dtype, cfg),
        Kernel::Axpy => elementwise::axpy(dev, dtype, cfg),
        Kernel::Add => elementwise::binary(dev, dtype, cfg, false),
        Kernel::Mul => elementwise::binary(dev, dtype, cfg, true),
        Kernel::Sum => reduce::sum(dev, dtype, cfg, false),
        Kernel::SumSquares => reduce::sum(dev, dtype, cfg, true),
        Kernel::NonFinite => reduce::non_finite(dev, dtype, cfg),
        Kernel::UnscaleCheck => reduce::unscale(dev, dtype, cfg),
        Kernel::AdamStep => optim::adam(dev, dtype, cfg),
        Kernel::SgdStep => optim::sgd(dev, dtype, cfg),
        Kernel::LambStep => optim::lamb(dev, dtype, cfg),
        Kernel::AdagradStep => optim_one_state::adagrad(dev, dtype, cfg),
        Kernel::LionStep => optim_one_state::lion(dev, dtype, cfg),
        Kernel::Gemm => linalg::gemm(dev, dtype, cfg),
        Kernel::BiasAdd => nn::bias_add(dev, dtype, cfg),
        Kernel::BiasGrad => nn::bias_grad(dev, dtype, cfg),
        Kernel::Gelu => nn::activation(dev, dtype, cfg, nn::Act::Gelu),
        Kernel::GeluBackward => nn::activation(dev, dtype, cfg, nn::Act::GeluBackward),
        Kernel::Relu => nn::activation(dev, dtype, cfg, nn::Act::Relu),
        Kernel::ReluBackward => nn::activation(dev, dtype, cfg, nn::Act::ReluBackward),
        Kernel::LayerNorm => nn::layer_norm(dev, dtype, cfg),
        Kernel::LayerNormBackward => nn::layer_norm_backward(dev, dtype, cfg),
        Kernel::SoftmaxCrossEntropy => nn::xent(dev, dtype, cfg),
        Kernel::SoftmaxCrossEntropyBackward => nn::xent_backward(dev, dtype, cfg),
        Kernel::Embedding => nn::embedding(dev, dtype, cfg),
        Kernel::EmbeddingBackward => nn::embedding_backward(dev, dtype, cfg),
        Kernel::Attention => nn::attention(dev, dtype, cfg),
        Kernel::AttentionBackward => nn::attention_backward(dev, dtype, cfg),
    };
    let declared = dev.info().capabilities.support(kernel.family(), dtype);
    match (result, declared) {
        (Ok(n), Support::Yes) => Outcome::Pass(n),
        (Ok(_), Support::No(why)) => Outcome::Fail(format!(
            "declared unsupported ({why}) but the kernel ran instead of refusing"
        )),
        (Err(CaseError::Unsupported(why)), Support::No(_)) => Outcome::Unsupported(why),
        (Err(CaseError::Unsupported(why)), Support::Yes) => {
            Outcome::Fail(format!("declared supported but refused: {why}"))
        }
        (Err(CaseError::Fail(msg)), _) => Outcome::Fail(msg),
    }
}

/// Host values (already representable in `dtype`) as that dtype's little-endian bytes.
pub(crate) fn to_bytes(dtype: DType, vals: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(vals.len() * dtype.size_bytes());
    for &v in vals {
        match dtype {
            DType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            DType::F16 => out.extend_from_slice(&f16::from_f64(v).to_bits().to_le_bytes()),
            DType::BF16 => out.extend_from_slice(&bf16::from_f64(v).to_bits().to_le_bytes()),
            DType::I32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
            DType::U8 => out.push(v as u8),
        }
    }
    out
}

/// Little-endian bytes of `dtype` as exact f64 values.
pub(crate) fn from_bytes(dtype: DType, bytes: &[u8]) -> Vec<f64> {
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|b| f64::from(f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()))
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|b| f64::from(bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()))
            .collect(),
        DType::I32 => bytes
            .chunks_exact(4)
            .map(|b| f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        DType::U8 => bytes.iter().map(|&b| f64::from(b)).collect(),
    }
}

/// A buffer holding `vals` (representable in `dtype`).
pub(crate) fn upload<B: Backend>(
    dev: &Device<B>,
    dtype: DType,
    vals: &[f64],
) -> Result<B::Buffer, CaseError> {
    let mut buf = dev.alloc(dtype, vals.len())?;
    dev.upload_bytes(&to_bytes(dtype, vals), buf.all_mut())?;
    Ok(buf)
}

/// A buffer holding i32 ids or labels.
pub(crate) fn upload_i32<B: Backend>(
    dev: &Device<B>,
    vals: &[i32],
) -> Result<B::Buffer, CaseError> {
    Ok(dev.alloc_from(vals)?)
}

/// A view's values as f64.
pub(crate) fn download<B: Backend>(
    dev: &Device<B>,
    view: View<'_, B>,
) -> Result<Vec<f64>, CaseError> {
    let dtype = view.dtype();
    let mut bytes = vec![0u8; view.len() * dtype.size_bytes()];
    dev.download_bytes(view, &mut bytes)?;
    Ok(from_bytes(dtype, &bytes))
}

/// What surrounds a view inside its buffer in a case: `pre` and `post` sentinel elements that
/// no kernel may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pad {
    pub pre: usize,
    pub post: usize,
}

/// Pads to draw: none, one element, an odd count, a cache line's worth.
pub(crate) fn pads() -> impl Strategy<Value = Pad> {
    (
        prop::sample::select(vec![0usize, 1, 3, 64]),
        prop::sample::select(vec![0usize, 1, 5]),
    )
        .prop_map(|(pre, post)| Pad { pre, post })
}

const SENTINEL: f64 = 1234.0;

/// A buffer holding `vals` between sentinel pads; returns it with the range of the values.
pub(crate) fn placed<B: Backend>(
    dev: &Device<B>,
    dtype: DType,
    vals: &[f64],
    pad: Pad,
) -> Result<(B::Buffer, Range<usize>), CaseError> {
    let s = round_to(dtype, SENTINEL);
    let mut all = vec![s; pad.pre];
    all.extend_from_slice(vals);
    all.extend(std::iter::repeat_n(s, pad.post));
    Ok((upload(dev, dtype, &all)?, pad.pre..pad.pre + vals.len()))
}

/// Downloads a padded buffer, checks the pads are untouched, and returns the values in `range`.
pub(crate) fn unpad<B: Backend>(
    dev: &Device<B>,
    buf: &B::Buffer,
    range: Range<usize>,
    what: &str,
) -> Result<Vec<f64>, CaseError> {
    let all = download(dev, buf.all())?;
    let s = round_to(buf.dtype(), SENTINEL);
    let outside = all[..range.start].iter().chain(&all[range.end..]);
    if let Some(bad) = outside.clone().position(|&v| v != s) {
        return Err(CaseError::Fail(format!(
            "{what}: an element outside the view was written (index {bad} of the pads holds {})",
            outside.clone().nth(bad).copied().unwrap_or(f64::NAN)
        )));
    }
    Ok(all[range].to_vec())
}

/// Compares a padded output with the oracle.
pub(crate) fn expect<B: Backend>(
    dev: &Device<B>,
    buf: &B::Buffer,
    range: Range<usize>,
    want: &Expected,
    tol: Tolerance,
    what: &str,
) -> CaseResult {
    let got = unpad(dev, buf, range, what)?;
    Ok(compare(what, &got, &want.value, &want.mag, tol)?)
}

/// Compares a whole (unpadded) buffer with the oracle.
pub(crate) fn expect_all<B: Backend>(
    dev: &Device<B>,
    buf: &B::Buffer,
    want: &Expected,
    tol: Tolerance,
    what: &str,
) -> CaseResult {
    let got = download(dev, buf.all())?;
    Ok(compare(what, &got, &want.value, &want.mag, tol)?)
}
