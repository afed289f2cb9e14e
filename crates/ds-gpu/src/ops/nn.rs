//! Neural-network kernels.

use super::suffix;
use super::{count, ptr, ptr_mut};
use crate::THREADS;
use crate::backend::GpuBackend;
use crate::buffer::GpuBuffer;
use crate::driver::Driver;
use crate::driver::Grid;
use crate::launch::Arg;
use ds_core::id_groups::IdGroups;
use ds_core::kernels::{
    AttentionArgs, AttentionBackwardArgs, LayerNormArgs, LayerNormBackwardArgs, NnKernels,
    Validated, View, ViewMut,
};
use ds_core::params::{AttentionShape, Shape2};
use ds_core::{BufferExt, DType, Device, Error, Result};

fn f32_arg(v: f32) -> Arg {
    Arg::F32(v)
}

impl<D: Driver> GpuBackend<D> {
    /// One block per row with `extra` floats of dynamic shared memory.
    fn row_blocks(&self, rows: usize, extra_floats: usize) -> Result<Grid> {
        let bytes = u32::try_from(extra_floats * 4).map_err(|_| {
            Error::invalid(
                D::BACKEND,
                "shape",
                "a row needs more shared memory than a block has",
            )
        })?;
        self.rows(rows, bytes)
    }

    /// The gradient of an embedding through a host-built index of positions per id: ids are
    /// read back, grouped in position order, and each distinct id's rows summed by one block.
    fn embedding_grad(
        &self,
        shape: Shape2,
        accumulate: bool,
        ids: View<'_, Self>,
        dout: View<'_, Self>,
        mut dtable: ViewMut<'_, Self>,
    ) -> Result<()> {
        let dev = Device::new(self.clone());
        let host_ids: Vec<i32> = dev.to_vec(ids)?;
        let groups = IdGroups::new(&host_ids, shape.rows);
        if !accumulate {
            dev.fill(dtable.reborrow(), 0.0)?;
        }
        if groups.ids.is_empty() || shape.cols == 0 {
            return Ok(());
        }
        // u32 index arrays travel as raw bytes in f32-typed buffers: the kernel sees addresses.
        let to_buf = |v: &[u32]| -> Result<GpuBuffer<D>> {
            let mut b = dev.alloc(DType::F32, v.len())?;
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            dev.upload_bytes(&bytes, b.all_mut())?;
            Ok(b)
        };
        let (pos_b, start_b, uid_b) = (
            to_buf(&groups.positions)?,
            to_buf(&groups.starts)?,
            to_buf(&groups.ids)?,
        );
        // ds_embedding_backward_<T>(const u32* order, const u32* starts, const u32* uids,
        //   const T* dout, T* dtable, u64 dim, int acc)
        self.launch(
            &format!("ds_embedding_backward_{}", suffix(dtable.dtype())),
            self.rows(groups.ids.len(), 0)?,
            &[
                Arg::Ptr(pos_b.addr(0)),
                Arg::Ptr(start_b.addr(0)),
                Arg::Ptr(uid_b.addr(0)),
                ptr(&dout),
                ptr_mut(&dtable),
                count(shape.cols),
                Arg::I32(1),
            ],
        )
        // The index buffers go back to the pool when this returns; anything that reuses them is
        // queued on the same stream after this kernel, so no wait is needed.
    }
}

impl<D: Driver> NnKernels for GpuBackend<D> {
    fn bias_add(
        &self,
        shape: Shape2,
        x: ViewMut<'_, Self>,
        bias: View<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        // ds_bias_add_<T>(T* x, const T* b, u64 rows, u64 cols)
        let n = shape.rows * shape.cols;
        self.launch(
            &format!("ds_bias_add_{}", suffix(x.dtype())),
            self.grid(n),
            &[
                ptr_mut(&x),
                ptr(&bias),
                count(shape.rows),
                count(shape.cols),
            ],
        )
    }

    fn bias_grad(
        &self,
        shape: Shape2,
        dy: View<'_, Self>,
        db: ViewMut<'_, Self>,
        accumulate: bool,
        _: Validated,
    ) -> Result<()> {
        // ds_bias_grad_<T>(const T* dy, T* db, u64 rows, u64 cols, int acc)
        let args = [
            ptr(&dy),
            ptr_mut(&db),
            count(shape.rows),
            count(shape.cols),
            Arg::I32(i32::from(accumulate)),
        ];
        self.launch(
            &format!("ds_bias_grad_{}", suffix(dy.dtype())),
            self.grid(shape.cols),
            &args,
        )
    }

    fn gelu(&self, x: View<'_, Self>, y: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        // ds_gelu_<T>(const T* x, T* y, u64 n)
        self.launch(
            &format!("ds_gelu_{}", suffix(x.dtype())),
            self.grid(x.len()),
            &[ptr(&x), ptr_mut(&y), count(x.len())],
        )
    }

    fn gelu_backward(
        &self,
        x: View<'_, Self>,
        dy: View<'_, Self>,
        dx: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        // ds_gelu_backward_<T>(const T* x, const T* dy, T* dx, u64 n)
        let args = [ptr(&x), ptr(&dy), ptr_mut(&dx), count(x.len())];
        self.launch(
            &format!("ds_gelu_backward_{}", suffix(x.dtype())),
            self.grid(x.len()),
            &args,
        )
    }

    fn relu(&self, x: View<'_, Self>, y: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        // ds_relu_<T>(const T* x, T* y, u64 n)
        self.launch(
            &format!("ds_relu_{}", suffix(x.dtype())),
            self.grid(x.len()),
            &[ptr(&x), ptr_mut(&y), count(x.len())],
        )
    }

    fn relu_backward(
        &self,
        x: View<'_, Self>,
        dy: View<'_, Self>,
        dx: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        // ds_relu_backward_<T>(const T* x, const T* dy, T* dx, u64 n)
        let args = [ptr(&x), ptr(&dy), ptr_mut(&dx), count(x.len())];
        self.launch(
            &format!("ds_relu_backward_{}", suffix(x.dtype())),
            self.grid(x.len()),
            &args,
        )
    }

    fn layer_norm(
        &self,
        shape: Shape2,
        eps: f32,
        args: LayerNormArgs<'_, GpuBuffer<D>>,
        _: Validated,
    ) -> Result<()> {
        if shape.rows == 0 || shape.cols == 0 {
            return Ok(());
        }
        // ds_layer_norm_<T>(const T* x, const T* gamma, const T* beta, T* y, float* mean,
        //   float* rstd, u64 cols, float eps)
        self.launch(
            &format!("ds_layer_norm_{}", suffix(args.x.dtype())),
            self.rows(shape.rows, 0)?,
            &[
                ptr(&args.x),
                ptr(&args.gamma),
                ptr(&args.beta),
                ptr_mut(&args.y),
                ptr_mut(&args.mean),
                ptr_mut(&args.rstd),
                count(shape.cols),
                f32_arg(eps),
            ],
        )
    }

    fn layer_norm_backward(
        &self,
        shape: Shape2,
        accumulate: bool,
        args: LayerNormBackwardArgs<'_, GpuBuffer<D>>,
        _: Validated,
    ) -> Result<()> {
        let t = suffix(args.x.dtype());
        if shape.rows > 0 && shape.cols > 0 {
            // ds_layer_norm_dx_<T>(const T* x, const T* gamma, const float* mean,
            //   const float* rstd, const T* dy, T* dx, u64 cols)
            self.launch(
                &format!("ds_layer_norm_dx_{t}"),
                self.rows(shape.rows, 0)?,
                &[
                    ptr(&args.x),
                    ptr(&args.gamma),
                    ptr(&args.mean),
                    ptr(&args.rstd),
                    ptr(&args.dy),
                    ptr_mut(&args.dx),
                    count(shape.cols),
                ],
            )?;
        }
        // ds_layer_norm_dparams_<T>(const T* x, const float* mean, const float* rstd,
        //   const T* dy, T* dgamma, T* dbeta, u64 rows, u64 cols, int acc)
        self.launch(
            &format!("ds_layer_norm_dparams_{t}"),
            self.grid(shape.cols),
            &[
                ptr(&args.x),
                ptr(&args.mean),
                ptr(&args.rstd),
                ptr(&args.dy),
                ptr_mut(&args.dgamma),
                ptr_mut(&args.dbeta),
                count(shape.rows),
                count(shape.cols),
                Arg::I32(i32::from(accumulate)),
            ],
        )
    }

    fn softmax_cross_entropy(
        &self,
        shape: Shape2,
        ignore_index: i32,
        logits: View<'_, Self>,
        labels: View<'_, Self>,
        losses: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        if shape.rows == 0 {
            return Ok(());
        }
        // ds_xent_<T>(const T* logits, const int* labels, float* losses, u64 classes, int ignore)
        self.launch(
            &format!("ds_xent_{}", suffix(logits.dtype())),
            self.rows(shape.rows, 0)?,
            &[
                ptr(&logits),
                ptr(&labels),
                ptr_mut(&losses),
                count(shape.cols),
                Arg::I32(ignore_index),
            ],
        )
    }

    fn softmax_cross_entropy_backward(
        &self,
        shape: Shape2,
        ignore_index: i32,
        scale: f32,
        logits: View<'_, Self>,
        labels: View<'_, Self>,
        dlogits: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        if shape.rows == 0 {
            return Ok(());
        }
        // ds_xent_backward_<T>(const T* logits, const int* labels, T* dlogits, u64 classes,
        //   int ignore, float scale)
        self.launch(
            &format!("ds_xent_backward_{}", suffix(logits.dtype())),
            self.rows(shape.rows, 0)?,
            &[
                ptr(&logits),
                ptr(&labels),
                ptr_mut(&dlogits),
                count(shape.cols),
                Arg::I32(ignore_index),
                f32_arg(scale),
            ],
        )
    }

    fn embedding(
        &self,
        shape: Shape2,
        ids: View<'_, Self>,
        table: View<'_, Self>,
        out: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        let n = ids.len();
        // ds_embedding_<T>(const int* ids, const T* table, T* out, u64 n, u64 vocab, u64 dim)
        self.launch(
            &format!("ds_embedding_{}", suffix(table.dtype())),
            self.grid(n * shape.cols),
            &[
                ptr(&ids),
                ptr(&table),
                ptr_mut(&out),
                count(n),
                count(shape.rows),
                count(shape.cols),
            ],
        )
    }

    fn embedding_backward(
        &self,
        shape: Shape2,
        accumulate: bool,
        ids: View<'_, Self>,
        dout: View<'_, Self>,
        dtable: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        self.embedding_grad(shape, accumulate, ids, dout, dtable)
    }

    fn attention(
        &self,
        sh: &AttentionShape,
        args: AttentionArgs<'_, GpuBuffer<D>>,
        _: Validated,
    ) -> Result<()> {
        let rows = sh.batch * sh.heads * sh.seq;
        if rows == 0 || sh.head_dim == 0 {
            return Ok(());
        }
        // ds_attention_<T>(const T* q, const T* k, const T* v, T* out, float* lse, u64 s, u64 h,
        //   u64 d, float scale); dynamic shared memory: blockDim + d floats
        self.launch(
            &format!("ds_attention_{}", suffix(args.q.dtype())),
            self.row_blocks(rows, THREADS as usize + sh.head_dim)?,
            &[
                ptr(&args.q),
                ptr(&args.k),
                ptr(&args.v),
                ptr_mut(&args.out),
                ptr_mut(&args.lse),
                count(sh.seq),
                count(sh.heads),
                count(sh.head_dim),
                f32_arg(sh.scale),
            ],
        )
    }

    fn attention_backward(
        &self,
        sh: &AttentionShape,
        args: AttentionBackwardArgs<'_, GpuBuffer<D>>,
        _: Validated,
    ) -> Result<()> {
        let rows = sh.batch * sh.heads * sh.seq;
        if rows == 0 || sh.head_dim == 0 {
            return Ok(());
        }
        let t = suffix(args.q.dtype());
        let delta = Device::new(self.clone()).alloc(DType::F32, rows)?;
        let dp = Arg::Ptr(delta.addr(0));
        // ds_attention_delta_<T>(const T* out, const T* dout, float* delta, u64 s, u64 h, u64 d)
        self.launch(
            &format!("ds_attention_delta_{t}"),
            self.rows(rows, 0)?,
            &[
                ptr(&args.out),
                ptr(&args.dout),
                dp,
                count(sh.seq),
                count(sh.heads),
                count(sh.head_dim),
            ],
        )?;
        // ds_attention_dq_<T>(const T* q, const T* k, const T* v, const float* lse,
        //   const float* delta, const T* dout, T* dq, u64 s, u64 h, u64 d, float scale)
        self.launch(
            &format!("ds_attention_dq_{t}"),
            self.row_blocks(rows, THREADS as usize + sh.head_dim)?,
            &[
                ptr(&args.q),
                ptr(&args.k),
                ptr(&args.v),
                ptr(&args.lse),
                dp,
                ptr(&args.dout),
                ptr_mut(&args.dq),
                count(sh.seq),
                count(sh.heads),
                count(sh.head_dim),
                f32_arg(sh.scale),
            ],
        )?;
        // ds_attention_dkv_<T>(const T* q, const T* k, const T* v, const float* lse,
        //   const float* delta, const T* dout, T* dk, T* dv, u64 s, u64 h, u64 d, float scale)
        self.launch(
            &format!("ds_attention_dkv_{t}"),
            self.row_blocks(rows, 2 * THREADS as usize + 2 * sh.head_dim)?,
            &[
                ptr(&args.q),
                ptr(&args.k),
                ptr(&args.v),
                ptr(&args.lse),
                dp,
                ptr(&args.dout),
                ptr_mut(&args.dk),
                ptr_mut(&args.dv),
                count(sh.seq),
                count(sh.heads),
                count(sh.head_dim),
                f32_arg(sh.scale),
            ],
        )
    }
}
