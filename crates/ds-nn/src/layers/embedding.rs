//! Token and position embeddings: rows of a table picked by i32 ids.

use crate::profile::{self, Part};
use crate::registry::{Init, Registry};
use ds_core::kernels::View;
use ds_core::params::Shape2;
use ds_core::{Backend, BufferExt, Device, Result};
use ds_model::{GradSink, Params};

/// A `rows x dim` table (`{name}.weight`, normal with std 0.02 as GPT-2).
#[derive(Debug, Clone, Copy)]
pub struct Embedding {
    /// Index of the table.
    pub table: usize,
    /// Rows of the table (vocabulary size or context length).
    pub rows: usize,
    /// Width.
    pub dim: usize,
}

impl Embedding {
    /// Registers the table.
    pub fn new(reg: &mut Registry, name: &str, rows: usize, dim: usize) -> Self {
        Embedding {
            table: reg.add(format!("{name}.weight"), &[rows, dim], Init::Normal(0.02)),
            rows,
            dim,
        }
    }

    /// The rows for `ids` (i32), one per id.
    ///
    /// # Errors
    /// Kernel and allocation errors.
    pub fn forward<B: Backend>(
        &self,
        dev: &Device<B>,
        params: &Params<'_, B>,
        ids: View<'_, B>,
    ) -> Result<B::Buffer> {
        let table = params.get(self.table)?;
        let mut out = dev.alloc_for_overwrite(table.dtype(), ids.len() * self.dim)?;
        profile::timed(dev, Part::Embedding, || {
            dev.embedding(Shape2::new(self.rows, self.dim), ids, table, out.all_mut())
        })?;
        Ok(out)
    }

    /// Accumulates `dout` into the table's gradient rows; marks it done unless `more` (a
    /// table shared with another layer, such as GPT-2's tied output head, adds more first).
    ///
    /// # Errors
    /// Kernel and engine errors.
    pub fn backward<B: Backend>(
        &self,
        dev: &Device<B>,
        grads: &mut dyn GradSink<B>,
        ids: View<'_, B>,
        dout: View<'_, B>,
        more: bool,
    ) -> Result<()> {
        profile::timed(dev, Part::Embedding, || {
            dev.embedding_backward(
                Shape2::new(self.rows, self.dim),
                true,
                ids,
                dout,
                grads.grad(self.table)?,
            )
        })?;
        if !more {
            grads.done(self.table)?;
        }
        Ok(())
    }
}
