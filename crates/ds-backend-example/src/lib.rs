//! A template for a new backend, the way a vendor adds one: a pretend accelerator that stores
//! f32 and bf16 only (f16 declared unsupported in its capabilities) and hands its arithmetic to
//! ds's CPU backend. Copy this crate, replace the delegation with your device's memory and
//! kernels, and keep the one-line conformance suite in `tests/conformance.rs`.
//!
//! What it shows:
//!
//! - the backend contract is [`Memory`] plus the five kernel traits; [`ds_core::Backend`] is
//!   implemented for anything that has them;
//! - the checked front door, [`ds_core::Device`], validates every call (views, dtypes, and the
//!   capabilities declared here) before the backend sees it, and hands the backend a
//!   [`Validated`] token as proof. A backend cannot make one, but it can pass the one it was
//!   given on to another backend of the same buffer type (here the CPU backend), which is how
//!   a backend falls back to another for some of its kernels;
//! - declaring a dtype unsupported is all it takes for the suite to expect refusals: the front
//!   door refuses the dtype for every kernel of the declared families, with the reason given
//!   here, and the suite counts those cells as "unsupported", not failed.

use ds_core::cpu::{CpuBackend, CpuBuffer};
use ds_core::kernels::{
    AdagradArgs, AdamArgs, AttentionArgs, AttentionBackwardArgs, ElementwiseKernels, LambApplyArgs,
    LambMomentArgs, LayerNormArgs, LayerNormBackwardArgs, LinalgKernels, LionArgs, Memory,
    NnKernels, OptimizerKernels, ReductionKernels, SgdArgs, Validated, View, ViewMut,
};
use ds_core::params::{
    AdagradParams, AdamParams, AttentionShape, GemmSpec, LambParams, LionParams, SgdParams, Shape2,
};
use ds_core::{
    Capabilities, DType, DeviceInfo, KernelFamily, MemoryStats, Result, Slice, SliceMut,
};

/// The pretend accelerator: its own description and capabilities, the CPU backend's memory and
/// kernels.
#[derive(Clone)]
pub struct ExampleBackend {
    cpu: CpuBackend,
    info: DeviceInfo,
}

impl ExampleBackend {
    /// The device, with f16 unsupported by every kernel family.
    ///
    /// # Errors
    /// The CPU backend's (its thread pool).
    pub fn new() -> Result<Self> {
        let cpu = CpuBackend::new()?;
        let mut capabilities = Capabilities::all_floats();
        for family in KernelFamily::ALL {
            capabilities = capabilities.without(
                family,
                DType::F16,
                "the example accelerator stores f32 and bf16 only",
            );
        }
        let info = DeviceInfo {
            backend: "example",
            name: "example accelerator (delegating to the CPU backend)".into(),
            vendor: "ds".into(),
            capabilities,
            ..cpu.info().clone()
        };
        Ok(ExampleBackend { cpu, info })
    }
}

impl Memory for ExampleBackend {
    type Buffer = CpuBuffer;

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn alloc(&self, dtype: DType, len: usize, checked: Validated) -> Result<CpuBuffer> {
        self.cpu.alloc(dtype, len, checked)
    }

    fn upload(&self, src: &[u8], dst: SliceMut<'_, CpuBuffer>, checked: Validated) -> Result<()> {
        self.cpu.upload(src, dst, checked)
    }

    fn download(
        &self,
        src: Slice<'_, CpuBuffer>,
        dst: &mut [u8],
        checked: Validated,
    ) -> Result<()> {
        self.cpu.download(src, dst, checked)
    }

    fn copy(
        &self,
        src: Slice<'_, CpuBuffer>,
        dst: SliceMut<'_, CpuBuffer>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.copy(src, dst, checked)
    }

    fn sync(&self) -> Result<()> {
        self.cpu.sync()
    }

    fn memory_stats(&self) -> MemoryStats {
        self.cpu.memory_stats()
    }

    fn reset_peak_memory(&self) {
        self.cpu.reset_peak_memory()
    }
}

// Every kernel goes to the CPU backend with the token the front door issued.

impl ElementwiseKernels for ExampleBackend {
    fn fill(&self, dst: ViewMut<'_, Self>, value: f64, checked: Validated) -> Result<()> {
        self.cpu.fill(dst, value, checked)
    }
    fn cast(&self, src: View<'_, Self>, dst: ViewMut<'_, Self>, checked: Validated) -> Result<()> {
        self.cpu.cast(src, dst, checked)
    }
    fn scale(&self, x: ViewMut<'_, Self>, alpha: f32, checked: Validated) -> Result<()> {
        self.cpu.scale(x, alpha, checked)
    }
    fn axpy(
        &self,
        alpha: f32,
        x: View<'_, Self>,
        y: ViewMut<'_, Self>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.axpy(alpha, x, y, checked)
    }
    fn add(
        &self,
        a: View<'_, Self>,
        b: View<'_, Self>,
        out: ViewMut<'_, Self>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.add(a, b, out, checked)
    }
    fn mul(
        &self,
        a: View<'_, Self>,
        b: View<'_, Self>,
        out: ViewMut<'_, Self>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.mul(a, b, out, checked)
    }
}

impl ReductionKernels for ExampleBackend {
    fn sum(&self, x: View<'_, Self>, out: ViewMut<'_, Self>, checked: Validated) -> Result<()> {
        self.cpu.sum(x, out, checked)
    }
    fn sum_squares(
        &self,
        x: View<'_, Self>,
        out: ViewMut<'_, Self>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.sum_squares(x, out, checked)
    }
    fn non_finite(
        &self,
        x: View<'_, Self>,
        flag: ViewMut<'_, Self>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.non_finite(x, flag, checked)
    }
    fn unscale_and_check(
        &self,
        x: ViewMut<'_, Self>,
        inv_scale: f32,
        flag: ViewMut<'_, Self>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.unscale_and_check(x, inv_scale, flag, checked)
    }
}

impl OptimizerKernels for ExampleBackend {
    fn adam_step(
        &self,
        hp: &AdamParams,
        args: AdamArgs<'_, Self::Buffer>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.adam_step(hp, args, checked)
    }
    fn sgd_step(
        &self,
        hp: &SgdParams,
        args: SgdArgs<'_, Self::Buffer>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.sgd_step(hp, args, checked)
    }
    fn adagrad_step(
        &self,
        hp: &AdagradParams,
        args: AdagradArgs<'_, Self::Buffer>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.adagrad_step(hp, args, checked)
    }
    fn lion_step(
        &self,
        hp: &LionParams,
        args: LionArgs<'_, Self::Buffer>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.lion_step(hp, args, checked)
    }
    fn lamb_moments(
        &self,
        hp: &LambParams,
        args: LambMomentArgs<'_, Self::Buffer>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.lamb_moments(hp, args, checked)
    }
    fn lamb_apply(
        &self,
        hp: &LambParams,
        args: LambApplyArgs<'_, Self::Buffer>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.lamb_apply(hp, args, checked)
    }
}

impl LinalgKernels for ExampleBackend {
    fn gemm(
        &self,
        spec: &GemmSpec,
        a: View<'_, Self>,
        b: View<'_, Self>,
        c: ViewMut<'_, Self>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.gemm(spec, a, b, c, checked)
    }
}

impl NnKernels for ExampleBackend {
    fn bias_add(
        &self,
        shape: Shape2,
        x: ViewMut<'_, Self>,
        bias: View<'_, Self>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.bias_add(shape, x, bias, checked)
    }
    fn bias_grad(
        &self,
        shape: Shape2,
        dy: View<'_, Self>,
        db: ViewMut<'_, Self>,
        accumulate: bool,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.bias_grad(shape, dy, db, accumulate, checked)
    }
    fn gelu(&self, x: View<'_, Self>, y: ViewMut<'_, Self>, checked: Validated) -> Result<()> {
        self.cpu.gelu(x, y, checked)
    }
    fn gelu_backward(
        &self,
        x: View<'_, Self>,
        dy: View<'_, Self>,
        dx: ViewMut<'_, Self>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.gelu_backward(x, dy, dx, checked)
    }
    fn relu(&self, x: View<'_, Self>, y: ViewMut<'_, Self>, checked: Validated) -> Result<()> {
        self.cpu.relu(x, y, checked)
    }
    fn relu_backward(
        &self,
        x: View<'_, Self>,
        dy: View<'_, Self>,
        dx: ViewMut<'_, Self>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.relu_backward(x, dy, dx, checked)
    }
    fn layer_norm(
        &self,
        shape: Shape2,
        eps: f32,
        args: LayerNormArgs<'_, Self::Buffer>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.layer_norm(shape, eps, args, checked)
    }
    fn layer_norm_backward(
        &self,
        shape: Shape2,
        accumulate: bool,
        args: LayerNormBackwardArgs<'_, Self::Buffer>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu
            .layer_norm_backward(shape, accumulate, args, checked)
    }
    fn softmax_cross_entropy(
        &self,
        shape: Shape2,
        ignore_index: i32,
        logits: View<'_, Self>,
        labels: View<'_, Self>,
        losses: ViewMut<'_, Self>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu
            .softmax_cross_entropy(shape, ignore_index, logits, labels, losses, checked)
    }
    fn softmax_cross_entropy_backward(
        &self,
        shape: Shape2,
        ignore_index: i32,
        scale: f32,
        logits: View<'_, Self>,
        labels: View<'_, Self>,
        dlogits: ViewMut<'_, Self>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.softmax_cross_entropy_backward(
            shape,
            ignore_index,
            scale,
            logits,
            labels,
            dlogits,
            checked,
        )
    }
    fn embedding(
        &self,
        shape: Shape2,
        ids: View<'_, Self>,
        table: View<'_, Self>,
        out: ViewMut<'_, Self>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.embedding(shape, ids, table, out, checked)
    }
    fn embedding_backward(
        &self,
        shape: Shape2,
        accumulate: bool,
        ids: View<'_, Self>,
        dout: View<'_, Self>,
        dtable: ViewMut<'_, Self>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu
            .embedding_backward(shape, accumulate, ids, dout, dtable, checked)
    }
    fn attention(
        &self,
        shape: &AttentionShape,
        args: AttentionArgs<'_, Self::Buffer>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.attention(shape, args, checked)
    }
    fn attention_backward(
        &self,
        shape: &AttentionShape,
        args: AttentionBackwardArgs<'_, Self::Buffer>,
        checked: Validated,
    ) -> Result<()> {
        self.cpu.attention_backward(shape, args, checked)
    }
}
