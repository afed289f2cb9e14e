//! A small real model and dataset for tests, examples and backend checks: a two-layer MLP
//! classifier (`x W1 + b1`, ReLU, `h W2 + b2`, mean softmax cross-entropy) trained on
//! Gaussian blobs. Everything runs through the backend's kernels in the training dtype, so
//! the engine drives it exactly as it drives a real model.

use crate::data::{Dataset, splitmix};
use crate::host::upload_f32;
use crate::model::{GradSink, Model, ParamSpec, Params};
use ds_core::params::{GemmSpec, Shape2};
use ds_core::{Backend, BufferExt, DType, Device, Result};

/// One labelled sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Features.
    pub x: Vec<f32>,
    /// Class.
    pub label: i32,
}

/// A uniform value in [-1, 1) from a hash state.
fn uniform(state: &mut u64) -> f32 {
    (splitmix(state) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// `classes` Gaussian-ish blobs in `dim` dimensions, `len` samples, deterministic in `seed`.
#[derive(Debug, Clone)]
pub struct Blobs {
    len: usize,
    dim: usize,
    classes: usize,
    seed: u64,
    centers: Vec<f32>,
}

impl Blobs {
    /// A dataset of `len` samples.
    pub fn new(len: usize, dim: usize, classes: usize, seed: u64) -> Self {
        let mut s = seed ^ 0x5eed;
        let centers = (0..dim * classes.max(1))
            .map(|_| 2.0 * uniform(&mut s))
            .collect();
        Blobs {
            len,
            dim,
            classes: classes.max(1),
            seed,
            centers,
        }
    }
}

impl Dataset for Blobs {
    type Item = Sample;
    fn len(&self) -> usize {
        self.len
    }
    fn get(&self, index: usize) -> Sample {
        let mut s = self.seed.wrapping_mul(31).wrapping_add(index as u64);
        let label = (splitmix(&mut s) % self.classes as u64) as usize;
        let c = &self.centers[label * self.dim..(label + 1) * self.dim];
        let x = c.iter().map(|&m| m + 0.7 * uniform(&mut s)).collect();
        Sample {
            x,
            label: label as i32,
        }
    }
}

/// What forward keeps for backward.
struct Saved<B: Backend> {
    rows: usize,
    x: B::Buffer,
    labels: B::Buffer,
    z1: B::Buffer,
    h: B::Buffer,
    logits: B::Buffer,
}

/// The two-layer MLP classifier.
pub struct Mlp<B: Backend> {
    dim: usize,
    hidden: usize,
    classes: usize,
    dtype: DType,
    saved: Option<Saved<B>>,
}

impl<B: Backend> Mlp<B> {
    /// An MLP `dim -> hidden -> classes` computing in `dtype`.
    pub fn new(dim: usize, hidden: usize, classes: usize, dtype: DType) -> Self {
        Mlp {
            dim,
            hidden,
            classes,
            dtype,
            saved: None,
        }
    }
}

const W1: usize = 0;
const B1: usize = 1;
const W2: usize = 2;
const B2: usize = 3;

impl<B: Backend> Model<B> for Mlp<B> {
    type Batch = Vec<Sample>;

    fn parameters(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("fc1.weight", &[self.dim, self.hidden]),
            ParamSpec::new("fc1.bias", &[self.hidden]),
            ParamSpec::new("fc2.weight", &[self.hidden, self.classes]),
            ParamSpec::new("fc2.bias", &[self.classes]),
        ]
    }

    fn init(&self, index: usize, seed: u64, out: &mut [f32]) {
        let fan_in = if index < W2 { self.dim } else { self.hidden } as f32;
        let bound = 1.0 / fan_in.sqrt();
        let mut s = seed.wrapping_mul(1_000_003).wrapping_add(index as u64);
        for v in out.iter_mut() {
            *v = bound * uniform(&mut s);
        }
    }

    fn forward(
        &mut self,
        dev: &Device<B>,
        params: &Params<'_, B>,
        batch: &Vec<Sample>,
    ) -> Result<f32> {
        let rows = batch.len();
        let (d, hd, c) = (self.dim, self.hidden, self.classes);
        let xs: Vec<f32> = batch.iter().flat_map(|s| s.x.iter().copied()).collect();
        let ys: Vec<i32> = batch.iter().map(|s| s.label).collect();
        let mut x = dev.alloc(self.dtype, rows * d)?;
        upload_f32(dev, &xs, x.all_mut())?;
        let labels = dev.alloc_from(&ys)?;
        let mut z1 = dev.alloc(self.dtype, rows * hd)?;
        dev.gemm(
            &GemmSpec::new(rows, hd, d),
            x.all(),
            params.get(W1)?,
            z1.all_mut(),
        )?;
        dev.bias_add(Shape2::new(rows, hd), z1.all_mut(), params.get(B1)?)?;
        let mut h = dev.alloc(self.dtype, rows * hd)?;
        dev.relu(z1.all(), h.all_mut())?;
        let mut logits = dev.alloc(self.dtype, rows * c)?;
        dev.gemm(
            &GemmSpec::new(rows, c, hd),
            h.all(),
            params.get(W2)?,
            logits.all_mut(),
        )?;
        dev.bias_add(Shape2::new(rows, c), logits.all_mut(), params.get(B2)?)?;
        let mut losses = dev.alloc(DType::F32, rows)?;
        dev.softmax_cross_entropy(
            Shape2::new(rows, c),
            -100,
            logits.all(),
            labels.all(),
            losses.all_mut(),
        )?;
        let host: Vec<f32> = dev.to_vec(losses.all())?;
        self.saved = Some(Saved {
            rows,
            x,
            labels,
            z1,
            h,
            logits,
        });
        let sum: f64 = host.iter().map(|&l| f64::from(l)).sum();
        Ok((sum / rows.max(1) as f64) as f32)
    }

    fn backward(
        &mut self,
        dev: &Device<B>,
        params: &Params<'_, B>,
        grads: &mut dyn GradSink<B>,
        scale: f32,
    ) -> Result<()> {
        let Some(s) = self.saved.take() else {
            return Err(ds_core::Error::invalid(
                "Mlp::backward",
                "forward",
                "backward needs a forward first",
            ));
        };
        let (rows, hd, c, d) = (s.rows, self.hidden, self.classes, self.dim);
        let mut dlogits = dev.alloc(self.dtype, rows * c)?;
        dev.softmax_cross_entropy_backward(
            Shape2::new(rows, c),
            -100,
            scale / rows.max(1) as f32,
            s.logits.all(),
            s.labels.all(),
            dlogits.all_mut(),
        )?;
        // Second layer: dW2 += h^T dlogits, db2 += sum of rows.
        dev.bias_grad(Shape2::new(rows, c), dlogits.all(), grads.grad(B2)?, true)?;
        grads.done(B2)?;
        let acc = |m, n, k| GemmSpec::new(m, n, k).scaled(1.0, 1.0);
        dev.gemm(
            &acc(hd, c, rows).transpose(true, false),
            s.h.all(),
            dlogits.all(),
            grads.grad(W2)?,
        )?;
        grads.done(W2)?;
        // dh = dlogits W2^T, then through the ReLU.
        let mut dh = dev.alloc(self.dtype, rows * hd)?;
        dev.gemm(
            &GemmSpec::new(rows, hd, c).transpose(false, true),
            dlogits.all(),
            params.get(W2)?,
            dh.all_mut(),
        )?;
        let mut dz1 = dev.alloc(self.dtype, rows * hd)?;
        dev.relu_backward(s.z1.all(), dh.all(), dz1.all_mut())?;
        dev.bias_grad(Shape2::new(rows, hd), dz1.all(), grads.grad(B1)?, true)?;
        grads.done(B1)?;
        dev.gemm(
            &acc(d, hd, rows).transpose(true, false),
            s.x.all(),
            dz1.all(),
            grads.grad(W1)?,
        )?;
        grads.done(W1)?;
        Ok(())
    }
}
