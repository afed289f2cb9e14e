//! Each layer alone against central finite differences: for a random weighting `w` of its
//! output, `L = sum(w * y)`; the layer's backward with `dy = w` must give dL/dparam for every
//! parameter tensor and dL/dx for its input (7 elements each, within 2% of the gradient's
//! norm). Covers Linear, Embedding, LayerNorm, causal self-attention, GELU, ReLU and softmax
//! cross-entropy (whose "output" is the loss itself).

use ds_core::cpu::CpuBackend;
use ds_core::kernels::{Memory, ViewMut};
use ds_core::params::Shape2;
use ds_core::{BufferExt, DType, Device, Result};
use ds_model::{GradSink, ParamTable, Params, Slot};
use ds_nn::layers::{CausalSelfAttention, Embedding, LayerNorm, Linear, Tokens};
use ds_nn::{Init, Registry};

type B = CpuBackend;
type Buf = <B as Memory>::Buffer;

struct Sink {
    grads: Buf,
    slots: Vec<Slot>,
}

impl GradSink<B> for Sink {
    fn grad(&mut self, index: usize) -> Result<ViewMut<'_, B>> {
        let s = self.slots[index];
        Ok(self.grads.range_mut(s.offset..s.offset + s.len))
    }
    fn done(&mut self, _: usize) -> Result<()> {
        Ok(())
    }
}

/// One layer under test: forward to a host output, backward from a host `dy` to a host `dx`
/// (empty when the input is not differentiable, such as token ids).
trait Probe {
    fn forward(&self, dev: &Device<B>, p: &Params<'_, B>, x: &[f32]) -> Result<Vec<f32>>;
    fn backward(
        &self,
        dev: &Device<B>,
        p: &Params<'_, B>,
        g: &mut dyn GradSink<B>,
        x: &[f32],
        dy: &[f32],
    ) -> Result<Vec<f32>>;
}

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The parameters in `buf` with every group's scope open (a layer on its own reads them
/// directly; the models open scopes themselves).
fn opened<'a>(buf: &'a Buf, slots: &'a [Slot], table: &'a ParamTable) -> Params<'a, CpuBackend> {
    let mut p = Params::flat(buf, slots, table);
    for g in 0..table.groups().len() {
        p.open(g).expect("open");
    }
    p
}

fn check(what: &str, reg: &Registry, probe: &dyn Probe, x: &[f32], h: f32) {
    let dev = Device::new(CpuBackend::with_threads(1).expect("backend"));
    let table = ParamTable::new(reg.specs(), reg.groups()).expect("table");
    let specs = reg.specs();
    let slots = Slot::packed(&specs);
    let offset: usize = slots.iter().map(|s| s.len).sum();
    let mut host = noise(offset.max(1), 11);
    host.truncate(offset);
    let mut buf = dev
        .alloc_from(&host.clone().into_iter().chain([0.0]).collect::<Vec<_>>())
        .expect("params");
    let loss = |host: &[f32], x: &[f32], buf: &mut Buf, w: &[f32]| -> f64 {
        let mut padded = host.to_vec();
        padded.push(0.0);
        dev.upload(&padded, buf.all_mut()).expect("upload");
        let y = probe
            .forward(&dev, &opened(buf, &slots, &table), x)
            .expect("forward");
        y.iter()
            .zip(w)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum()
    };
    let y0 = probe
        .forward(&dev, &opened(&buf, &slots, &table), x)
        .expect("forward");
    let w = noise(y0.len(), 5);
    let mut sink = Sink {
        grads: dev.alloc(DType::F32, offset.max(1)).expect("grads"),
        slots: slots.clone(),
    };
    let dx = probe
        .backward(&dev, &opened(&buf, &slots, &table), &mut sink, x, &w)
        .expect("backward");
    let grads: Vec<f32> = dev.to_vec(sink.grads.all()).expect("grads");
    let compare = |name: &str, pairs: Vec<(f64, f64)>| {
        let diff: f64 = pairs.iter().map(|(f, a)| (f - a).powi(2)).sum();
        let norm: f64 = pairs.iter().map(|(f, a)| f.powi(2).max(a.powi(2))).sum();
        let rel = (diff / norm.max(1e-12)).sqrt();
        assert!(
            rel <= 0.02 || diff.sqrt() <= 1e-4,
            "{what}: {name}: relative error {rel:.4}: {pairs:?}"
        );
    };
    for (spec, s) in specs.iter().zip(&slots) {
        let picks: Vec<usize> = (0..7).map(|k| k * (s.len - 1) / 6).collect();
        let mut pairs = Vec::new();
        for j in picks {
            let mut p = host.clone();
            p[s.offset + j] += h;
            let plus = loss(&p, x, &mut buf, &w);
            p[s.offset + j] -= 2.0 * h;
            let minus = loss(&p, x, &mut buf, &w);
            pairs.push((
                (plus - minus) / (2.0 * f64::from(h)),
                f64::from(grads[s.offset + j]),
            ));
        }
        compare(&spec.name, pairs);
    }
    if !dx.is_empty() {
        let picks: Vec<usize> = (0..7).map(|k| k * (x.len() - 1) / 6).collect();
        let mut pairs = Vec::new();
        for j in picks {
            let mut xp = x.to_vec();
            xp[j] += h;
            let plus = loss(&host, &xp, &mut buf, &w);
            xp[j] -= 2.0 * h;
            let minus = loss(&host, &xp, &mut buf, &w);
            pairs.push(((plus - minus) / (2.0 * f64::from(h)), f64::from(dx[j])));
        }
        compare("input", pairs);
    }
}

fn up(dev: &Device<B>, v: &[f32]) -> Buf {
    dev.alloc_from(v).expect("upload")
}

fn down(dev: &Device<B>, b: &Buf) -> Vec<f32> {
    dev.to_vec(b.all()).expect("download")
}

struct LinearProbe(Linear, usize);
impl Probe for LinearProbe {
    fn forward(&self, dev: &Device<B>, p: &Params<'_, B>, x: &[f32]) -> Result<Vec<f32>> {
        Ok(down(
            dev,
            &self.0.forward(dev, p, up(dev, x).all(), self.1)?,
        ))
    }
    fn backward(
        &self,
        dev: &Device<B>,
        p: &Params<'_, B>,
        g: &mut dyn GradSink<B>,
        x: &[f32],
        dy: &[f32],
    ) -> Result<Vec<f32>> {
        let dx = self
            .0
            .backward(dev, p, g, up(dev, x).all(), up(dev, dy).all(), self.1)?;
        Ok(down(dev, &dx))
    }
}

#[test]
fn linear() {
    let mut reg = Registry::new();
    let layer = Linear::new(&mut reg, "fc", 5, 7, Init::Normal(0.5));
    check("linear", &reg, &LinearProbe(layer, 4), &noise(20, 3), 1e-2);
}

struct NormProbe(LayerNorm, usize);
impl Probe for NormProbe {
    fn forward(&self, dev: &Device<B>, p: &Params<'_, B>, x: &[f32]) -> Result<Vec<f32>> {
        Ok(down(
            dev,
            &self.0.forward(dev, p, up(dev, x).all(), self.1)?.y,
        ))
    }
    fn backward(
        &self,
        dev: &Device<B>,
        p: &Params<'_, B>,
        g: &mut dyn GradSink<B>,
        x: &[f32],
        dy: &[f32],
    ) -> Result<Vec<f32>> {
        let xb = up(dev, x);
        let saved = self.0.forward(dev, p, xb.all(), self.1)?;
        let dx = self
            .0
            .backward(dev, p, g, &saved, xb.all(), up(dev, dy).all(), self.1)?;
        Ok(down(dev, &dx))
    }
}

#[test]
fn layer_norm() {
    let mut reg = Registry::new();
    let layer = LayerNorm::new(&mut reg, "ln", 6);
    check(
        "layer_norm",
        &reg,
        &NormProbe(layer, 3),
        &noise(18, 4),
        1e-2,
    );
}

struct AttnProbe(CausalSelfAttention, Tokens);
impl Probe for AttnProbe {
    fn forward(&self, dev: &Device<B>, p: &Params<'_, B>, x: &[f32]) -> Result<Vec<f32>> {
        Ok(down(
            dev,
            &self.0.forward(dev, p, up(dev, x).all(), self.1)?.0,
        ))
    }
    fn backward(
        &self,
        dev: &Device<B>,
        p: &Params<'_, B>,
        g: &mut dyn GradSink<B>,
        x: &[f32],
        dy: &[f32],
    ) -> Result<Vec<f32>> {
        let xb = up(dev, x);
        let (_, saved) = self.0.forward(dev, p, xb.all(), self.1)?;
        let dx = self
            .0
            .backward(dev, p, g, &saved, xb.all(), up(dev, dy).all(), self.1)?;
        Ok(down(dev, &dx))
    }
}

#[test]
fn causal_self_attention() {
    let mut reg = Registry::new();
    let layer = CausalSelfAttention::new(&mut reg, "attn", 8, 2, 0.3);
    let t = Tokens { batch: 2, seq: 5 };
    check(
        "attention",
        &reg,
        &AttnProbe(layer, t),
        &noise(2 * 5 * 8, 6),
        1e-2,
    );
}

struct EmbProbe(Embedding, Vec<i32>);
impl Probe for EmbProbe {
    fn forward(&self, dev: &Device<B>, p: &Params<'_, B>, _: &[f32]) -> Result<Vec<f32>> {
        let ids = dev.alloc_from(&self.1)?;
        Ok(down(dev, &self.0.forward(dev, p, ids.all())?))
    }
    fn backward(
        &self,
        dev: &Device<B>,
        _: &Params<'_, B>,
        g: &mut dyn GradSink<B>,
        _: &[f32],
        dy: &[f32],
    ) -> Result<Vec<f32>> {
        let ids = dev.alloc_from(&self.1)?;
        self.0
            .backward(dev, g, ids.all(), up(dev, dy).all(), false)?;
        Ok(Vec::new())
    }
}

#[test]
fn embedding() {
    let mut reg = Registry::new();
    let layer = Embedding::new(&mut reg, "wte", 9, 4);
    // Repeated ids: their gradients must add up.
    check(
        "embedding",
        &reg,
        &EmbProbe(layer, vec![3, 0, 8, 3, 3, 1]),
        &[],
        1e-2,
    );
}

/// GELU, ReLU and cross-entropy: kernels without parameters.
struct KernelProbe(&'static str);
impl Probe for KernelProbe {
    fn forward(&self, dev: &Device<B>, _: &Params<'_, B>, x: &[f32]) -> Result<Vec<f32>> {
        let xb = up(dev, x);
        let mut y = dev.alloc(DType::F32, x.len())?;
        match self.0 {
            "gelu" => dev.gelu(xb.all(), y.all_mut())?,
            "relu" => dev.relu(xb.all(), y.all_mut())?,
            _ => {
                let labels = dev.alloc_from(&[2i32, 0, -100, 4])?;
                let mut losses = dev.alloc(DType::F32, 4)?;
                dev.softmax_cross_entropy(
                    Shape2::new(4, 5),
                    -100,
                    xb.all(),
                    labels.all(),
                    losses.all_mut(),
                )?;
                return Ok(vec![down(dev, &losses).iter().sum()]);
            }
        }
        Ok(down(dev, &y))
    }
    fn backward(
        &self,
        dev: &Device<B>,
        _: &Params<'_, B>,
        _: &mut dyn GradSink<B>,
        x: &[f32],
        dy: &[f32],
    ) -> Result<Vec<f32>> {
        let xb = up(dev, x);
        let mut dx = dev.alloc(DType::F32, x.len())?;
        match self.0 {
            "gelu" => dev.gelu_backward(xb.all(), up(dev, dy).all(), dx.all_mut())?,
            "relu" => dev.relu_backward(xb.all(), up(dev, dy).all(), dx.all_mut())?,
            _ => {
                let labels = dev.alloc_from(&[2i32, 0, -100, 4])?;
                dev.softmax_cross_entropy_backward(
                    Shape2::new(4, 5),
                    -100,
                    dy[0],
                    xb.all(),
                    labels.all(),
                    dx.all_mut(),
                )?;
            }
        }
        Ok(down(dev, &dx))
    }
}

#[test]
fn gelu_relu_and_cross_entropy() {
    let reg = Registry::new();
    // ReLU's kink at 0 is avoided: no input lies within h of it.
    let x: Vec<f32> = noise(20, 8)
        .iter()
        .map(|v| if v.abs() < 0.05 { v + 0.2 } else { *v })
        .collect();
    for kind in ["gelu", "relu", "xent"] {
        check(kind, &reg, &KernelProbe(kind), &x, 1e-2);
    }
}

#[test]
fn mean_cross_entropy_divides_by_the_rows_that_count_as_pytorch_does() {
    // Three rows, two classes, the middle one ignored. Row 0: logits (0, 0), label 0, loss
    // ln 2; row 2: logits (ln 3, 0), label 1, loss ln 4 - 0 = ln 4. PyTorch's
    // F.cross_entropy(..., ignore_index=-100) (reduction='mean') = (ln 2 + ln 4) / 2 = 1.5 ln 2;
    // dividing by all three rows would give ln 2.
    let dev = Device::new(CpuBackend::with_threads(1).expect("cpu"));
    let ln3 = 3f32.ln();
    let logits = dev
        .alloc_from(&[0.0f32, 0.0, 5.0, -5.0, ln3, 0.0])
        .expect("logits");
    let labels = dev
        .alloc_from(&[0i32, ds_nn::loss::IGNORE_INDEX, 1])
        .expect("labels");
    let shape = Shape2::new(3, 2);
    let counted = ds_nn::loss::counted_rows(&[0, ds_nn::loss::IGNORE_INDEX, 1]);
    let loss = ds_nn::loss::mean_cross_entropy(&dev, shape, logits.all(), labels.all(), counted)
        .expect("loss");
    assert!((loss - 1.5 * 2f32.ln()).abs() < 1e-6, "{loss}");
    // d/dlogits of the mean: (softmax - onehot) / 2 on the counted rows, zero on the ignored.
    let d = ds_nn::loss::mean_cross_entropy_backward(
        &dev,
        shape,
        1.0,
        logits.all(),
        labels.all(),
        counted,
    )
    .expect("backward");
    let d: Vec<f32> = dev.to_vec(d.all()).expect("host");
    let want = [-0.25f32, 0.25, 0.0, 0.0, 0.375, -0.375];
    for (g, w) in d.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{d:?} want {want:?}");
    }
    // Every row ignored: NaN, as PyTorch's 0 / 0, and no gradient.
    let none = dev
        .alloc_from(&[ds_nn::loss::IGNORE_INDEX; 3])
        .expect("labels");
    let none_counted = ds_nn::loss::counted_rows(&[ds_nn::loss::IGNORE_INDEX; 3]);
    let nan = ds_nn::loss::mean_cross_entropy(&dev, shape, logits.all(), none.all(), none_counted)
        .expect("loss");
    assert!(nan.is_nan(), "{nan}");
    let d = ds_nn::loss::mean_cross_entropy_backward(
        &dev,
        shape,
        1.0,
        logits.all(),
        none.all(),
        none_counted,
    )
    .expect("backward");
    assert!(
        dev.to_vec::<f32>(d.all())
            .expect("host")
            .iter()
            .all(|&g| g == 0.0)
    );
}
