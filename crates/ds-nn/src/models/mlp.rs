//! An MLP classifier: `Linear -> ReLU` for each hidden width, a final `Linear`, and the mean
//! softmax cross-entropy of the labels.

use crate::blobs::Sample;
use crate::layers::Linear;
use crate::loss::{mean_cross_entropy, mean_cross_entropy_backward};
use crate::profile::{self, Part};
use crate::registry::{Init, Registry};
use ds_core::params::Shape2;
use ds_core::{Backend, BufferExt, DType, Device, Error, Result};
use ds_model::host::upload_f32;
use ds_model::{GradSink, Model, ParamGroup, ParamSpec, Params};

struct Saved<B: Backend> {
    rows: usize,
    /// The input of each linear layer (the features, then each ReLU's output).
    inputs: Vec<B::Buffer>,
    /// Each hidden layer's pre-activation.
    pre: Vec<B::Buffer>,
    labels: B::Buffer,
    /// Labels that count in the mean loss.
    counted: usize,
    logits: B::Buffer,
}

/// An MLP classifier over `Sample`s (features and a class label).
pub struct MlpClassifier<B: Backend> {
    registry: Registry,
    layers: Vec<Linear>,
    classes: usize,
    dtype: DType,
    saved: Option<Saved<B>>,
}

impl<B: Backend> MlpClassifier<B> {
    /// `inputs -> hidden[0] -> ... -> classes`, computing in `dtype`; weights uniform in
    /// `±1/sqrt(fan_in)` as PyTorch's Linear.
    pub fn new(inputs: usize, hidden: &[usize], classes: usize, dtype: DType) -> Self {
        let mut registry = Registry::new();
        let mut widths = vec![inputs];
        widths.extend_from_slice(hidden);
        widths.push(classes);
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let bound = 1.0 / (w[0].max(1) as f32).sqrt();
                // One group per layer: group i is layer i.
                registry.group(format!("fc{i}"));
                Linear::new(
                    &mut registry,
                    &format!("fc{i}"),
                    w[0],
                    w[1],
                    Init::Uniform(bound),
                )
            })
            .collect();
        MlpClassifier {
            registry,
            layers,
            classes,
            dtype,
            saved: None,
        }
    }
}

impl<B: Backend> Model<B> for MlpClassifier<B> {
    type Batch = Vec<Sample>;

    fn parameters(&self) -> Vec<ParamSpec> {
        self.registry.specs()
    }

    fn groups(&self) -> Vec<ParamGroup> {
        self.registry.groups()
    }

    fn init(&self, index: usize, seed: u64, out: &mut [f32]) {
        self.registry.init(index, seed, out);
    }

    fn forward(
        &mut self,
        dev: &Device<B>,
        params: &mut Params<'_, B>,
        batch: &Vec<Sample>,
    ) -> Result<f32> {
        let rows = batch.len();
        let width = self.layers.first().map_or(0, |l| l.inputs);
        if let Some(s) = batch.iter().find(|s| s.x.len() != width) {
            return Err(Error::invalid(
                "MlpClassifier::forward",
                "batch",
                format!(
                    "a sample has {} features, the model takes {width}",
                    s.x.len()
                ),
            ));
        }
        let xs: Vec<f32> = batch.iter().flat_map(|s| s.x.iter().copied()).collect();
        let ys: Vec<i32> = batch.iter().map(|s| s.label).collect();
        let mut x = dev.alloc(self.dtype, rows * width)?;
        upload_f32(dev, &xs, x.all_mut())?;
        let counted = crate::loss::counted_rows(&ys);
        let labels = dev.alloc_from(&ys)?;
        let mut inputs = vec![x];
        let mut pre = Vec::new();
        let last = self.layers.len() - 1;
        let mut logits = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let input = inputs
                .last()
                .map(BufferExt::all)
                .ok_or_else(|| Error::invalid("MlpClassifier::forward", "layers", "no input"))?;
            let z = params.scoped(i, |p| layer.forward(dev, p, input, rows))?;
            if i == last {
                logits = Some(z);
            } else {
                let mut h = dev.alloc_for_overwrite(self.dtype, rows * layer.outputs)?;
                profile::timed(dev, Part::Activation, || dev.relu(z.all(), h.all_mut()))?;
                pre.push(z);
                inputs.push(h);
            }
        }
        let logits = logits.ok_or_else(|| {
            Error::invalid(
                "MlpClassifier::forward",
                "layers",
                "the model has no layers",
            )
        })?;
        let loss = mean_cross_entropy(
            dev,
            Shape2::new(rows, self.classes),
            logits.all(),
            labels.all(),
            counted,
        )?;
        self.saved = Some(Saved {
            rows,
            inputs,
            pre,
            labels,
            counted,
            logits,
        });
        Ok(loss)
    }

    fn backward(
        &mut self,
        dev: &Device<B>,
        params: &mut Params<'_, B>,
        grads: &mut dyn GradSink<B>,
        scale: f32,
    ) -> Result<()> {
        let s = self.saved.take().ok_or_else(|| {
            Error::invalid(
                "MlpClassifier::backward",
                "forward",
                "backward needs a forward first",
            )
        })?;
        let rows = s.rows;
        let mut dy = mean_cross_entropy_backward(
            dev,
            Shape2::new(rows, self.classes),
            scale,
            s.logits.all(),
            s.labels.all(),
            s.counted,
        )?;
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let dx = params.scoped(i, |p| {
                layer.backward(dev, p, grads, s.inputs[i].all(), dy.all(), rows)
            })?;
            if i == 0 {
                break;
            }
            let mut dz = dev.alloc_for_overwrite(self.dtype, rows * layer.inputs)?;
            profile::timed(dev, Part::Activation, || {
                dev.relu_backward(s.pre[i - 1].all(), dx.all(), dz.all_mut())
            })?;
            dy = dz;
        }
        Ok(())
    }
}
