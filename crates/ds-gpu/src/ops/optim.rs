//! Fused Adam/AdamW, SGD, Lamb, Adagrad and Lion steps.

use super::suffix;
use super::{count, ptr, ptr_mut};
use crate::backend::GpuBackend;
use crate::buffer::GpuBuffer;
use crate::driver::Driver;
use crate::launch::Arg;
use ds_core::SliceMut;
use ds_core::kernels::{
    AdagradArgs, AdamArgs, LambApplyArgs, LambMomentArgs, LionArgs, OptimizerKernels, SgdArgs,
    Validated,
};
use ds_core::params::{AdagradParams, AdamParams, LambParams, LionParams, SgdParams};
use ds_core::{DType, Result};

/// The copy-out's address (null when absent) and the dtype its kernel is instantiated for.
fn copy_arg<D: Driver>(copy: &Option<SliceMut<'_, GpuBuffer<D>>>) -> (Arg, DType) {
    match copy {
        Some(c) => (ptr_mut(c), c.dtype()),
        None => (Arg::Ptr(0), DType::F32),
    }
}

impl<D: Driver> OptimizerKernels for GpuBackend<D> {
    fn adam_step(
        &self,
        hp: &AdamParams,
        args: AdamArgs<'_, GpuBuffer<D>>,
        _: Validated,
    ) -> Result<()> {
        let n = args.param.len();
        let s = hp.scalars();
        let (copy, cdt) = copy_arg(&args.param_copy);
        let name = format!("ds_adam_{}_{}", suffix(args.grad.dtype()), suffix(cdt));
        // ds_adam_<G>_<C>(float* p, const G* g, float* m, float* v, C* copy, u64 n, float b1,
        //   float c1, float b2, float c2, float eps, float step_size, float inv_sqrt_bc2,
        //   float decay, float l2, float grad_scale)
        self.launch(
            &name,
            self.grid(n.div_ceil(4)),
            &[
                ptr_mut(&args.param),
                ptr(&args.grad),
                ptr_mut(&args.exp_avg),
                ptr_mut(&args.exp_avg_sq),
                copy,
                count(n),
                Arg::F32(hp.beta1),
                Arg::F32(1.0 - hp.beta1),
                Arg::F32(hp.beta2),
                Arg::F32(1.0 - hp.beta2),
                Arg::F32(hp.eps),
                Arg::F32(s.step_size),
                Arg::F32(s.inv_sqrt_bc2),
                Arg::F32(s.decay_factor),
                Arg::F32(s.l2),
                Arg::F32(hp.grad_scale),
            ],
        )
    }

    fn sgd_step(
        &self,
        hp: &SgdParams,
        args: SgdArgs<'_, GpuBuffer<D>>,
        _: Validated,
    ) -> Result<()> {
        let n = args.param.len();
        let (copy, cdt) = copy_arg(&args.param_copy);
        let buf = match (&args.momentum, hp.momentum > 0.0) {
            (Some(b), true) => ptr_mut(b),
            _ => Arg::Ptr(0),
        };
        let name = format!("ds_sgd_{}_{}", suffix(args.grad.dtype()), suffix(cdt));
        // ds_sgd_<G>_<C>(float* p, const G* g, float* buf, C* copy, u64 n, float lr, float mu,
        //   float keep, float wd, int nesterov, int first, float grad_scale)
        self.launch(
            &name,
            self.grid(n),
            &[
                ptr_mut(&args.param),
                ptr(&args.grad),
                buf,
                copy,
                count(n),
                Arg::F32(hp.lr),
                Arg::F32(hp.momentum),
                Arg::F32(1.0 - hp.dampening),
                Arg::F32(hp.weight_decay),
                Arg::I32(i32::from(hp.nesterov)),
                Arg::I32(i32::from(hp.step == 1)),
                Arg::F32(hp.grad_scale),
            ],
        )
    }

    fn adagrad_step(
        &self,
        hp: &AdagradParams,
        args: AdagradArgs<'_, GpuBuffer<D>>,
        _: Validated,
    ) -> Result<()> {
        let n = args.param.len();
        let (copy, cdt) = copy_arg(&args.param_copy);
        let name = format!("ds_adagrad_{}_{}", suffix(args.grad.dtype()), suffix(cdt));
        // ds_adagrad_<G>_<C>(float* p, const G* g, float* v, C* copy, u64 n, float lr,
        //   float eps, float wd, float grad_scale)
        self.launch(
            &name,
            self.grid(n.div_ceil(4)),
            &[
                ptr_mut(&args.param),
                ptr(&args.grad),
                ptr_mut(&args.exp_avg_sq),
                copy,
                count(n),
                Arg::F32(hp.lr),
                Arg::F32(hp.eps),
                Arg::F32(hp.weight_decay),
                Arg::F32(hp.grad_scale),
            ],
        )
    }

    fn lion_step(
        &self,
        hp: &LionParams,
        args: LionArgs<'_, GpuBuffer<D>>,
        _: Validated,
    ) -> Result<()> {
        let n = args.param.len();
        let (copy, cdt) = copy_arg(&args.param_copy);
        let name = format!("ds_lion_{}_{}", suffix(args.grad.dtype()), suffix(cdt));
        // ds_lion_<G>_<C>(float* p, const G* g, float* m, C* copy, u64 n, float lr, float b1,
        //   float c1, float b2, float c2, float decay, float grad_scale)
        self.launch(
            &name,
            self.grid(n.div_ceil(4)),
            &[
                ptr_mut(&args.param),
                ptr(&args.grad),
                ptr_mut(&args.exp_avg),
                copy,
                count(n),
                Arg::F32(hp.lr),
                Arg::F32(hp.beta1),
                Arg::F32(1.0 - hp.beta1),
                Arg::F32(hp.beta2),
                Arg::F32(1.0 - hp.beta2),
                Arg::F32(hp.decay_factor()),
                Arg::F32(hp.grad_scale),
            ],
        )
    }

    fn lamb_moments(
        &self,
        hp: &LambParams,
        args: LambMomentArgs<'_, GpuBuffer<D>>,
        _: Validated,
    ) -> Result<()> {
        let n = args.param.len();
        let cfg = self.grid(n);
        let blocks = cfg.blocks.max(1);
        let partials = self.scratch(2 * blocks as usize)?;
        let pp = Arg::Ptr(partials.addr(0));
        // ds_lamb_moments_<G>(const float* p, const G* g, float* m, float* v, u64 n, float b1,
        //   float b2, float eps, float wd, double* partials, float grad_scale)
        self.launch(
            &format!("ds_lamb_moments_{}", suffix(args.grad.dtype())),
            cfg,
            &[
                ptr(&args.param),
                ptr(&args.grad),
                ptr_mut(&args.exp_avg),
                ptr_mut(&args.exp_avg_sq),
                count(n),
                Arg::F32(hp.beta1),
                Arg::F32(hp.beta2),
                Arg::F32(hp.eps),
                Arg::F32(hp.weight_decay),
                pp,
                Arg::F32(hp.grad_scale),
            ],
        )?;
        // ds_sum_finalize(const double* partials, u32 count, float* out, u32 outs)
        self.launch(
            "ds_sum_finalize",
            self.rows(1, 0)?,
            &[pp, Arg::U32(blocks), ptr_mut(&args.norms), Arg::U32(2)],
        )
    }

    fn lamb_apply(
        &self,
        hp: &LambParams,
        args: LambApplyArgs<'_, GpuBuffer<D>>,
        _: Validated,
    ) -> Result<()> {
        let n = args.param.len();
        let (copy, cdt) = copy_arg(&args.param_copy);
        // ds_lamb_apply_<C>(float* p, const float* m, const float* v, const float* norms, C* copy,
        //   u64 n, float eps, float wd, float step_size, float min_coeff, float max_coeff)
        self.launch(
            &format!("ds_lamb_apply_{}", suffix(cdt)),
            self.grid(n),
            &[
                ptr_mut(&args.param),
                ptr(&args.exp_avg),
                ptr(&args.exp_avg_sq),
                ptr(&args.norms),
                copy,
                count(n),
                Arg::F32(hp.eps),
                Arg::F32(hp.weight_decay),
                Arg::F32(hp.step_size()),
                Arg::F32(hp.min_coeff),
                Arg::F32(hp.max_coeff),
            ],
        )
    }
}
