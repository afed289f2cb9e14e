//! Checked fused optimizer steps.

use super::Device;
use crate::dtype::DType;
use crate::error::Result;
use crate::kernel::Kernel;
use crate::kernels::{
    AdagradArgs, AdamArgs, Backend, LambApplyArgs, LambMomentArgs, LionArgs, SgdArgs, Validated,
    ViewMut,
};
use crate::params::{AdagradParams, AdamParams, LambParams, LionParams, SgdParams};
use crate::slice::BufferExt;
use crate::validate::Check;

impl<B: Backend> Device<B> {
    /// One fused Adam or AdamW step over fp32 master weights (formulas on [`AdamParams`]),
    /// optionally writing the updated weights to `param_copy` (f32, f16 or bf16) in the same
    /// pass. The gradient may be f32, f16 or bf16.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the view or hyper-parameter at fault.
    pub fn adam_step(&self, hp: &AdamParams, args: AdamArgs<'_, B::Buffer>) -> Result<()> {
        let check = Check::new(Kernel::AdamStep);
        check_moment_hparams(&check, hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay)?;
        check_step(&check, hp.step, hp.bias_correction)?;
        check.finite("grad_scale", hp.grad_scale)?;
        check.typed("param", &args.param, DType::F32)?;
        check.float("grad", &args.grad)?;
        check.same_len("grad", &args.grad, "param", &args.param)?;
        check.typed("exp_avg", &args.exp_avg, DType::F32)?;
        check.same_len("exp_avg", &args.exp_avg, "param", &args.param)?;
        check.typed("exp_avg_sq", &args.exp_avg_sq, DType::F32)?;
        check.same_len("exp_avg_sq", &args.exp_avg_sq, "param", &args.param)?;
        self.check_copy(
            &check,
            Kernel::AdamStep,
            &args.param,
            args.param_copy.as_ref(),
        )?;
        check.supported(self.info(), Kernel::AdamStep, args.grad.dtype())?;
        self.backend.adam_step(hp, args, Validated::new())
    }

    /// One fused SGD step (PyTorch's semantics, on [`SgdParams`]). `momentum` must be given
    /// when `hp.momentum > 0`; it is ignored otherwise.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the view or hyper-parameter at fault.
    pub fn sgd_step(&self, hp: &SgdParams, args: SgdArgs<'_, B::Buffer>) -> Result<()> {
        let check = Check::new(Kernel::SgdStep);
        check.within("lr", hp.lr, 0.0, f32::MAX)?;
        check.within("momentum", hp.momentum, 0.0, f32::MAX)?;
        check.finite("dampening", hp.dampening)?;
        check.within("weight_decay", hp.weight_decay, 0.0, f32::MAX)?;
        check_step(&check, hp.step, true)?;
        check.finite("grad_scale", hp.grad_scale)?;
        if hp.nesterov && (hp.momentum <= 0.0 || hp.dampening != 0.0) {
            return Err(check.err(
                "nesterov",
                "needs momentum > 0 and dampening == 0 (as in PyTorch)",
            ));
        }
        check.typed("param", &args.param, DType::F32)?;
        check.float("grad", &args.grad)?;
        check.same_len("grad", &args.grad, "param", &args.param)?;
        match &args.momentum {
            Some(buf) => {
                check.typed("momentum", buf, DType::F32)?;
                check.same_len("momentum", buf, "param", &args.param)?;
            }
            None if hp.momentum > 0.0 => {
                return Err(check.err(
                    "momentum",
                    "a momentum buffer is required when hp.momentum > 0",
                ));
            }
            None => {}
        }
        self.check_copy(
            &check,
            Kernel::SgdStep,
            &args.param,
            args.param_copy.as_ref(),
        )?;
        check.supported(self.info(), Kernel::SgdStep, args.grad.dtype())?;
        self.backend.sgd_step(hp, args, Validated::new())
    }

    /// One fused Adagrad step (DeepSpeedCPUAdagrad's semantics, on [`AdagradParams`]),
    /// optionally writing the updated weights to `param_copy` in the same pass.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the view or hyper-parameter at fault.
    pub fn adagrad_step(&self, hp: &AdagradParams, args: AdagradArgs<'_, B::Buffer>) -> Result<()> {
        let check = Check::new(Kernel::AdagradStep);
        check.within("lr", hp.lr, 0.0, f32::MAX)?;
        check.within("eps", hp.eps, 0.0, f32::MAX)?;
        check.within("weight_decay", hp.weight_decay, 0.0, f32::MAX)?;
        check.finite("grad_scale", hp.grad_scale)?;
        self.check_one_state_step(
            &check,
            Kernel::AdagradStep,
            &args.param,
            &args.grad,
            ("exp_avg_sq", &args.exp_avg_sq),
            args.param_copy.as_ref(),
        )?;
        self.backend.adagrad_step(hp, args, Validated::new())
    }

    /// One fused Lion step (formulas on [`LionParams`]), optionally writing the updated
    /// weights to `param_copy` in the same pass.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the view or hyper-parameter at fault.
    pub fn lion_step(&self, hp: &LionParams, args: LionArgs<'_, B::Buffer>) -> Result<()> {
        let check = Check::new(Kernel::LionStep);
        check.within("lr", hp.lr, 0.0, f32::MAX)?;
        check.within("beta1", hp.beta1, 0.0, 1.0)?;
        check.within_open("beta2", hp.beta2, 0.0, 1.0)?;
        check.within("weight_decay", hp.weight_decay, 0.0, f32::MAX)?;
        check.finite("grad_scale", hp.grad_scale)?;
        self.check_one_state_step(
            &check,
            Kernel::LionStep,
            &args.param,
            &args.grad,
            ("exp_avg", &args.exp_avg),
            args.param_copy.as_ref(),
        )?;
        self.backend.lion_step(hp, args, Validated::new())
    }

    /// Lamb's first pass: updates the moments and writes `[sum(p*p), sum(u*u)]` into the two
    /// f32 elements of `norms`. When a tensor is partitioned over ranks, all-reduce `norms`
    /// (sum) before [`Device::lamb_apply`].
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the view or hyper-parameter at fault.
    pub fn lamb_moments(&self, hp: &LambParams, args: LambMomentArgs<'_, B::Buffer>) -> Result<()> {
        let check = Check::new(Kernel::LambStep);
        check_lamb(&check, hp)?;
        check.typed("param", &args.param, DType::F32)?;
        check.float("grad", &args.grad)?;
        check.same_len("grad", &args.grad, "param", &args.param)?;
        check.typed("exp_avg", &args.exp_avg, DType::F32)?;
        check.same_len("exp_avg", &args.exp_avg, "param", &args.param)?;
        check.typed("exp_avg_sq", &args.exp_avg_sq, DType::F32)?;
        check.same_len("exp_avg_sq", &args.exp_avg_sq, "param", &args.param)?;
        check.typed("norms", &args.norms, DType::F32)?;
        check.len("norms", &args.norms, 2, "[sum(p*p), sum(u*u)]")?;
        check.supported(self.info(), Kernel::LambStep, args.grad.dtype())?;
        self.backend.lamb_moments(hp, args, Validated::new())
    }

    /// Lamb's second pass: `p -= step_size * trust * u` with the trust ratio from `norms`
    /// (formulas on [`LambParams`]), optionally writing `param_copy` in the same pass.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the view or hyper-parameter at fault.
    pub fn lamb_apply(&self, hp: &LambParams, args: LambApplyArgs<'_, B::Buffer>) -> Result<()> {
        let check = Check::new(Kernel::LambStep);
        check_lamb(&check, hp)?;
        check.typed("param", &args.param, DType::F32)?;
        check.typed("exp_avg", &args.exp_avg, DType::F32)?;
        check.same_len("exp_avg", &args.exp_avg, "param", &args.param)?;
        check.typed("exp_avg_sq", &args.exp_avg_sq, DType::F32)?;
        check.same_len("exp_avg_sq", &args.exp_avg_sq, "param", &args.param)?;
        check.typed("norms", &args.norms, DType::F32)?;
        check.len("norms", &args.norms, 2, "[sum(p*p), sum(u*u)]")?;
        self.check_copy(
            &check,
            Kernel::LambStep,
            &args.param,
            args.param_copy.as_ref(),
        )?;
        self.backend.lamb_apply(hp, args, Validated::new())
    }

    /// One whole Lamb step on one tensor: [`Device::lamb_moments`] then
    /// [`Device::lamb_apply`] through a two-element scratch buffer on the device.
    ///
    /// # Errors
    /// As the two passes.
    pub fn lamb_step(&self, hp: &LambParams, args: AdamArgs<'_, B::Buffer>) -> Result<()> {
        let mut norms = self.alloc(DType::F32, 2)?;
        let AdamArgs {
            mut param,
            grad,
            mut exp_avg,
            mut exp_avg_sq,
            param_copy,
        } = args;
        self.lamb_moments(
            hp,
            LambMomentArgs {
                param: param.as_ref(),
                grad,
                exp_avg: exp_avg.reborrow(),
                exp_avg_sq: exp_avg_sq.reborrow(),
                norms: norms.all_mut(),
            },
        )?;
        self.lamb_apply(
            hp,
            LambApplyArgs {
                param: param.reborrow(),
                exp_avg: exp_avg.as_ref(),
                exp_avg_sq: exp_avg_sq.as_ref(),
                norms: norms.all(),
                param_copy,
            },
        )
    }

    /// The views of a step with one fp32 state (Adagrad, Lion): fp32 `param`, a float `grad`
    /// and the state of its length, the optional copy, and the gradient's dtype supported.
    fn check_one_state_step(
        &self,
        check: &Check,
        kernel: Kernel,
        param: &ViewMut<'_, B>,
        grad: &crate::kernels::View<'_, B>,
        (state_name, state): (&'static str, &ViewMut<'_, B>),
        copy: Option<&ViewMut<'_, B>>,
    ) -> Result<()> {
        check.typed("param", param, DType::F32)?;
        check.float("grad", grad)?;
        check.same_len("grad", grad, "param", param)?;
        check.typed(state_name, state, DType::F32)?;
        check.same_len(state_name, state, "param", param)?;
        self.check_copy(check, kernel, param, copy)?;
        check.supported(self.info(), kernel, grad.dtype())
    }

    fn check_copy(
        &self,
        check: &Check,
        kernel: Kernel,
        param: &ViewMut<'_, B>,
        copy: Option<&ViewMut<'_, B>>,
    ) -> Result<()> {
        if let Some(copy) = copy {
            check.float("param_copy", copy)?;
            check.same_len("param_copy", copy, "param", param)?;
            check.supported(self.info(), kernel, copy.dtype())?;
        }
        Ok(())
    }
}

fn check_moment_hparams(
    check: &Check,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
) -> Result<()> {
    check.within("lr", lr, 0.0, f32::MAX)?;
    check.within_open("beta1", beta1, 0.0, 1.0)?;
    check.within_open("beta2", beta2, 0.0, 1.0)?;
    check.within("eps", eps, 0.0, f32::MAX)?;
    check.within("weight_decay", weight_decay, 0.0, f32::MAX)
}

fn check_step(check: &Check, step: u64, needs_positive: bool) -> Result<()> {
    if needs_positive && step == 0 {
        return Err(check.err("step", "steps count from 1"));
    }
    Ok(())
}

fn check_lamb(check: &Check, hp: &LambParams) -> Result<()> {
    check_moment_hparams(check, hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay)?;
    check_step(check, hp.step, hp.bias_correction)?;
    check.finite("grad_scale", hp.grad_scale)?;
    check.within("min_coeff", hp.min_coeff, 0.0, f32::MAX)?;
    check.within("max_coeff", hp.max_coeff, hp.min_coeff, f32::MAX)
}
