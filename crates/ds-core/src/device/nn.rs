//! Checked neural-network forward and backward kernels.

use super::Device;
use crate::dtype::DType;
use crate::error::Result;
use crate::kernel::Kernel;
use crate::kernels::{
    AttentionArgs, AttentionBackwardArgs, Backend, LayerNormArgs, LayerNormBackwardArgs, Validated,
    View, ViewMut,
};
use crate::params::{AttentionShape, Shape2};
use crate::validate::Check;

impl<B: Backend> Device<B> {
    /// `x[r, c] += bias[c]` over a `rows x cols` matrix.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `x` or `bias`.
    pub fn bias_add(&self, shape: Shape2, x: ViewMut<'_, B>, bias: View<'_, B>) -> Result<()> {
        let check = Check::new(Kernel::BiasAdd);
        let n = check.product("shape", &[shape.rows, shape.cols])?;
        check.float("x", &x)?;
        check.len("x", &x, n, "rows*cols")?;
        check.like("bias", &bias, "x", &x)?;
        check.len("bias", &bias, shape.cols, "cols")?;
        check.supported(self.info(), Kernel::BiasAdd, x.dtype())?;
        self.backend.bias_add(shape, x, bias, Validated::new())
    }

    /// `db[c] = sum over rows of dy[r, c]`, added to db's contents when `accumulate`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `dy` or `db`.
    pub fn bias_grad(
        &self,
        shape: Shape2,
        dy: View<'_, B>,
        db: ViewMut<'_, B>,
        accumulate: bool,
    ) -> Result<()> {
        let check = Check::new(Kernel::BiasGrad);
        let n = check.product("shape", &[shape.rows, shape.cols])?;
        check.float("dy", &dy)?;
        check.len("dy", &dy, n, "rows*cols")?;
        check.like("db", &db, "dy", &dy)?;
        check.len("db", &db, shape.cols, "cols")?;
        check.supported(self.info(), Kernel::BiasGrad, dy.dtype())?;
        self.backend
            .bias_grad(shape, dy, db, accumulate, Validated::new())
    }

    /// `y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, GELU's tanh form.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `x` or `y`.
    pub fn gelu(&self, x: View<'_, B>, y: ViewMut<'_, B>) -> Result<()> {
        self.check_unary(Kernel::Gelu, &x, &y, "y")?;
        self.backend.gelu(x, y, Validated::new())
    }

    /// `dx = dy * d gelu(x) / dx` for the tanh form.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `x`, `dy` or `dx`.
    pub fn gelu_backward(&self, x: View<'_, B>, dy: View<'_, B>, dx: ViewMut<'_, B>) -> Result<()> {
        self.check_unary_backward(Kernel::GeluBackward, &x, &dy, &dx)?;
        self.backend.gelu_backward(x, dy, dx, Validated::new())
    }

    /// `y = max(x, 0)` (NaN stays NaN).
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `x` or `y`.
    pub fn relu(&self, x: View<'_, B>, y: ViewMut<'_, B>) -> Result<()> {
        self.check_unary(Kernel::Relu, &x, &y, "y")?;
        self.backend.relu(x, y, Validated::new())
    }

    /// `dx = x > 0 ? dy : 0`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `x`, `dy` or `dx`.
    pub fn relu_backward(&self, x: View<'_, B>, dy: View<'_, B>, dx: ViewMut<'_, B>) -> Result<()> {
        self.check_unary_backward(Kernel::ReluBackward, &x, &dy, &dx)?;
        self.backend.relu_backward(x, dy, dx, Validated::new())
    }

    /// LayerNorm over each row: `y = (x - mean) * rstd * gamma + beta` with
    /// `rstd = 1/sqrt(var + eps)` (biased variance), saving mean and rstd (f32) for backward.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the view or `eps`.
    pub fn layer_norm(
        &self,
        shape: Shape2,
        eps: f32,
        args: LayerNormArgs<'_, B::Buffer>,
    ) -> Result<()> {
        let check = Check::new(Kernel::LayerNorm);
        check.within("eps", eps, 0.0, f32::MAX)?;
        let n = check.product("shape", &[shape.rows, shape.cols])?;
        check.float("x", &args.x)?;
        check.len("x", &args.x, n, "rows*cols")?;
        check.like("gamma", &args.gamma, "x", &args.x)?;
        check.len("gamma", &args.gamma, shape.cols, "cols")?;
        check.like("beta", &args.beta, "x", &args.x)?;
        check.len("beta", &args.beta, shape.cols, "cols")?;
        check.like("y", &args.y, "x", &args.x)?;
        check.len("y", &args.y, n, "rows*cols")?;
        check.typed("mean", &args.mean, DType::F32)?;
        check.len("mean", &args.mean, shape.rows, "rows")?;
        check.typed("rstd", &args.rstd, DType::F32)?;
        check.len("rstd", &args.rstd, shape.rows, "rows")?;
        check.supported(self.info(), Kernel::LayerNorm, args.x.dtype())?;
        self.backend.layer_norm(shape, eps, args, Validated::new())
    }

    /// LayerNorm's gradients: dx (overwritten), dgamma and dbeta (added to when `accumulate`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the view at fault.
    pub fn layer_norm_backward(
        &self,
        shape: Shape2,
        accumulate: bool,
        args: LayerNormBackwardArgs<'_, B::Buffer>,
    ) -> Result<()> {
        let check = Check::new(Kernel::LayerNormBackward);
        let n = check.product("shape", &[shape.rows, shape.cols])?;
        check.float("x", &args.x)?;
        check.len("x", &args.x, n, "rows*cols")?;
        check.like("gamma", &args.gamma, "x", &args.x)?;
        check.len("gamma", &args.gamma, shape.cols, "cols")?;
        check.typed("mean", &args.mean, DType::F32)?;
        check.len("mean", &args.mean, shape.rows, "rows")?;
        check.typed("rstd", &args.rstd, DType::F32)?;
        check.len("rstd", &args.rstd, shape.rows, "rows")?;
        check.like("dy", &args.dy, "x", &args.x)?;
        check.len("dy", &args.dy, n, "rows*cols")?;
        check.like("dx", &args.dx, "x", &args.x)?;
        check.len("dx", &args.dx, n, "rows*cols")?;
        check.like("dgamma", &args.dgamma, "x", &args.x)?;
        check.len("dgamma", &args.dgamma, shape.cols, "cols")?;
        check.like("dbeta", &args.dbeta, "x", &args.x)?;
        check.len("dbeta", &args.dbeta, shape.cols, "cols")?;
        check.supported(self.info(), Kernel::LayerNormBackward, args.x.dtype())?;
        self.backend
            .layer_norm_backward(shape, accumulate, args, Validated::new())
    }

    /// Per-row softmax cross-entropy of `rows x classes` logits against i32 labels:
    /// `losses[r] = logsumexp(logits[r]) - logits[r, labels[r]]` in f32, and 0 for rows whose
    /// label is `ignore_index`. A label outside `[0, classes)` that is not `ignore_index`
    /// gives a NaN loss (labels live on the device; validate them where they are made).
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `logits`, `labels` or `losses`.
    pub fn softmax_cross_entropy(
        &self,
        shape: Shape2,
        ignore_index: i32,
        logits: View<'_, B>,
        labels: View<'_, B>,
        losses: ViewMut<'_, B>,
    ) -> Result<()> {
        let check = Check::new(Kernel::SoftmaxCrossEntropy);
        self.check_xent(&check, shape, &logits, &labels)?;
        check.typed("losses", &losses, DType::F32)?;
        check.len("losses", &losses, shape.rows, "rows")?;
        self.backend.softmax_cross_entropy(
            shape,
            ignore_index,
            logits,
            labels,
            losses,
            Validated::new(),
        )
    }

    /// `dlogits[r] = scale * (softmax(logits[r]) - onehot(labels[r]))`, zero for ignored
    /// rows; `scale` is the loss gradient divided by the number of counted rows for a mean.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the view or `scale`.
    pub fn softmax_cross_entropy_backward(
        &self,
        shape: Shape2,
        ignore_index: i32,
        scale: f32,
        logits: View<'_, B>,
        labels: View<'_, B>,
        dlogits: ViewMut<'_, B>,
    ) -> Result<()> {
        let check = Check::new(Kernel::SoftmaxCrossEntropyBackward);
        check.finite("scale", scale)?;
        self.check_xent(&check, shape, &logits, &labels)?;
        check.like("dlogits", &dlogits, "logits", &logits)?;
        check.same_len("dlogits", &dlogits, "logits", &logits)?;
        self.backend.softmax_cross_entropy_backward(
            shape,
            ignore_index,
            scale,
            logits,
            labels,
            dlogits,
            Validated::new(),
        )
    }

    /// `out[i, :] = table[ids[i], :]` for a `vocab x dim` table (`shape.rows = vocab`,
    /// `shape.cols = dim`) and i32 ids. An id outside `[0, vocab)` gives a NaN row.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `ids`, `table` or `out`.
    pub fn embedding(
        &self,
        shape: Shape2,
        ids: View<'_, B>,
        table: View<'_, B>,
        out: ViewMut<'_, B>,
    ) -> Result<()> {
        let check = Check::new(Kernel::Embedding);
        self.check_embedding(&check, shape, &ids, &table)?;
        let n = check.product("ids", &[ids.len(), shape.cols])?;
        check.like("out", &out, "table", &table)?;
        check.len("out", &out, n, "ids * dim")?;
        self.backend
            .embedding(shape, ids, table, out, Validated::new())
    }

    /// The embedding's gradient: `dtable[ids[i], :] += dout[i, :]`, summed in f32 in the order
    /// of `i` (deterministic), after zeroing `dtable` unless `accumulate`. Out-of-range ids
    /// contribute nothing.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `ids`, `dout` or `dtable`.
    pub fn embedding_backward(
        &self,
        shape: Shape2,
        accumulate: bool,
        ids: View<'_, B>,
        dout: View<'_, B>,
        dtable: ViewMut<'_, B>,
    ) -> Result<()> {
        let check = Check::new(Kernel::EmbeddingBackward);
        check.float("dtable", &dtable)?;
        let table_len = check.product("shape", &[shape.rows, shape.cols])?;
        check.len("dtable", &dtable, table_len, "vocab*dim")?;
        check.typed("ids", &ids, DType::I32)?;
        let n = check.product("ids", &[ids.len(), shape.cols])?;
        check.like("dout", &dout, "dtable", &dtable)?;
        check.len("dout", &dout, n, "ids * dim")?;
        check.supported(self.info(), Kernel::EmbeddingBackward, dtable.dtype())?;
        self.backend
            .embedding_backward(shape, accumulate, ids, dout, dtable, Validated::new())
    }

    /// Causal softmax attention: for each query position i,
    /// `out[i] = sum_{j<=i} softmax_j(scale * q_i . k_j) v_j`, saving
    /// `lse[i] = log sum_{j<=i} exp(scale * q_i . k_j)` (f32) for backward.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the view or `shape.scale`.
    pub fn attention(
        &self,
        shape: &AttentionShape,
        args: AttentionArgs<'_, B::Buffer>,
    ) -> Result<()> {
        let check = Check::new(Kernel::Attention);
        let n = self.check_attention_shape(&check, shape)?;
        check.float("q", &args.q)?;
        check.len("q", &args.q, n, "batch*heads*seq*head_dim")?;
        check.like("k", &args.k, "q", &args.q)?;
        check.len("k", &args.k, n, "batch*heads*seq*head_dim")?;
        check.like("v", &args.v, "q", &args.q)?;
        check.len("v", &args.v, n, "batch*heads*seq*head_dim")?;
        check.like("out", &args.out, "q", &args.q)?;
        check.len("out", &args.out, n, "batch*heads*seq*head_dim")?;
        check.typed("lse", &args.lse, DType::F32)?;
        check.len("lse", &args.lse, shape.lse_len(), "batch*heads*seq")?;
        check.supported(self.info(), Kernel::Attention, args.q.dtype())?;
        self.backend.attention(shape, args, Validated::new())
    }

    /// Causal attention's gradients dq, dk, dv (overwritten), from the forward's inputs,
    /// output and saved log-sum-exp.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the view or `shape.scale`.
    pub fn attention_backward(
        &self,
        shape: &AttentionShape,
        args: AttentionBackwardArgs<'_, B::Buffer>,
    ) -> Result<()> {
        let check = Check::new(Kernel::AttentionBackward);
        let n = self.check_attention_shape(&check, shape)?;
        check.float("q", &args.q)?;
        check.len("q", &args.q, n, "batch*heads*seq*head_dim")?;
        for (name, view) in [
            ("k", &args.k),
            ("v", &args.v),
            ("out", &args.out),
            ("dout", &args.dout),
        ] {
            check.like(name, view, "q", &args.q)?;
            check.len(name, view, n, "batch*heads*seq*head_dim")?;
        }
        for (name, view) in [("dq", &args.dq), ("dk", &args.dk), ("dv", &args.dv)] {
            check.like(name, view, "q", &args.q)?;
            check.len(name, view, n, "batch*heads*seq*head_dim")?;
        }
        check.typed("lse", &args.lse, DType::F32)?;
        check.len("lse", &args.lse, shape.lse_len(), "batch*heads*seq")?;
        check.supported(self.info(), Kernel::AttentionBackward, args.q.dtype())?;
        self.backend
            .attention_backward(shape, args, Validated::new())
    }

    fn check_unary(
        &self,
        kernel: Kernel,
        x: &View<'_, B>,
        y: &ViewMut<'_, B>,
        out: &'static str,
    ) -> Result<()> {
        let check = Check::new(kernel);
        check.float("x", x)?;
        check.like(out, y, "x", x)?;
        check.same_len(out, y, "x", x)?;
        check.supported(self.info(), kernel, x.dtype())
    }

    fn check_unary_backward(
        &self,
        kernel: Kernel,
        x: &View<'_, B>,
        dy: &View<'_, B>,
        dx: &ViewMut<'_, B>,
    ) -> Result<()> {
        let check = Check::new(kernel);
        check.float("x", x)?;
        check.like("dy", dy, "x", x)?;
        check.same_len("dy", dy, "x", x)?;
        check.like("dx", dx, "x", x)?;
        check.same_len("dx", dx, "x", x)?;
        check.supported(self.info(), kernel, x.dtype())
    }

    fn check_xent(
        &self,
        check: &Check,
        shape: Shape2,
        logits: &View<'_, B>,
        labels: &View<'_, B>,
    ) -> Result<()> {
        let n = check.product("shape", &[shape.rows, shape.cols])?;
        if shape.rows > 0 && shape.cols == 0 {
            return Err(check.err("shape", "needs at least one class"));
        }
        check.float("logits", logits)?;
        check.len("logits", logits, n, "rows*classes")?;
        check.typed("labels", labels, DType::I32)?;
        check.len("labels", labels, shape.rows, "rows")?;
        check.supported(self.info(), Kernel::SoftmaxCrossEntropy, logits.dtype())
    }

    fn check_embedding(
        &self,
        check: &Check,
        shape: Shape2,
        ids: &View<'_, B>,
        table: &View<'_, B>,
    ) -> Result<()> {
        let table_len = check.product("shape", &[shape.rows, shape.cols])?;
        check.typed("ids", ids, DType::I32)?;
        check.float("table", table)?;
        check.len("table", table, table_len, "vocab*dim")?;
        check.supported(self.info(), Kernel::Embedding, table.dtype())
    }

    fn check_attention_shape(&self, check: &Check, shape: &AttentionShape) -> Result<usize> {
        check.finite("shape.scale", shape.scale)?;
        check.product(
            "shape",
            &[shape.batch, shape.heads, shape.seq, shape.head_dim],
        )
    }
}
