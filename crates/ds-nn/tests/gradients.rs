//! Every layer's backward against central finite differences of the forward loss, through the
//! two models (which use every layer: Linear, Embedding for tokens and positions, LayerNorm,
//! causal self-attention, GELU, ReLU, residual additions, softmax cross-entropy and the tied
//! output head). For each parameter tensor, a spread of elements is perturbed by ±h; the
//! analytic gradient must match the difference quotient within 2% of the tensor's gradient
//! norm (f32 kernels: the quotient itself carries ~1e-4 of rounding noise).

use ds_core::cpu::CpuBackend;
use ds_core::kernels::ViewMut;
use ds_core::{BufferExt, DType, Device, Result};
use ds_model::{Dataset, GradSink, Model, ParamTable, Params, Slot};
use ds_nn::Blobs;
use ds_nn::{Gpt, GptConfig, MlpClassifier};

type B = CpuBackend;

struct Sink {
    grads: <B as ds_core::kernels::Memory>::Buffer,
    slots: Vec<Slot>,
    done: Vec<usize>,
}

impl GradSink<B> for Sink {
    fn grad(&mut self, index: usize) -> Result<ViewMut<'_, B>> {
        let s = self.slots[index];
        Ok(self.grads.range_mut(s.offset..s.offset + s.len))
    }

    fn done(&mut self, index: usize) -> Result<()> {
        self.done[index] += 1;
        Ok(())
    }
}

fn check<M: Model<B>>(model: &mut M, batch: &M::Batch, h: f32, what: &str) {
    let dev = Device::new(CpuBackend::with_threads(1).expect("backend"));
    let table = ParamTable::of::<B, M>(model).expect("table");
    let specs = table.specs().to_vec();
    let slots = Slot::packed(&specs);
    let offset: usize = slots.iter().map(|s| s.len).sum();
    let mut host = vec![0f32; offset];
    for (i, s) in slots.iter().enumerate() {
        model.init(i, 5, &mut host[s.offset..s.offset + s.len]);
        // Biases and gains start at 0 and 1; move them so their gradients are generic.
        if host[s.offset..s.offset + s.len]
            .iter()
            .all(|&v| v == 0.0 || v == 1.0)
        {
            for (j, v) in host[s.offset..s.offset + s.len].iter_mut().enumerate() {
                *v += 0.05 * ((j * 7 + i) % 5) as f32 - 0.1;
            }
        }
    }
    let mut buf = dev.alloc_from(&host).expect("params");
    let loss_at = |model: &mut M, buf: &<B as ds_core::kernels::Memory>::Buffer| {
        let mut params = Params::flat(buf, &slots, &table);
        model.forward(&dev, &mut params, batch).expect("forward")
    };
    let loss = loss_at(model, &buf);
    assert!(loss.is_finite(), "{what}: loss {loss}");
    let mut sink = Sink {
        grads: dev.alloc(DType::F32, offset).expect("grads"),
        slots: slots.clone(),
        done: vec![0; slots.len()],
    };
    {
        let mut params = Params::flat(&buf, &slots, &table);
        model
            .backward(&dev, &mut params, &mut sink, 1.0)
            .expect("backward");
    }
    assert!(
        sink.done.iter().all(|&d| d == 1),
        "{what}: every parameter must be marked done exactly once: {:?}",
        sink.done
    );
    let analytic: Vec<f32> = dev.to_vec(sink.grads.all()).expect("download");
    for (i, (spec, s)) in specs.iter().zip(&slots).enumerate() {
        let picks: Vec<usize> = (0..7).map(|k| (k * (s.len - 1)) / 6).collect();
        let mut diff = 0f64;
        let mut norm = 0f64;
        let mut rows = Vec::new();
        for &j in &picks {
            let at = s.offset + j;
            let orig = host[at];
            host[at] = orig + h;
            dev.upload(&host, buf.all_mut()).expect("upload");
            let plus = loss_at(model, &buf);
            host[at] = orig - h;
            dev.upload(&host, buf.all_mut()).expect("upload");
            let minus = loss_at(model, &buf);
            host[at] = orig;
            let fd = (f64::from(plus) - f64::from(minus)) / (2.0 * f64::from(h));
            let an = f64::from(analytic[at]);
            diff += (fd - an).powi(2);
            norm += fd.powi(2).max(an.powi(2));
            rows.push(format!("[{j}] fd {fd:.6} analytic {an:.6}"));
        }
        dev.upload(&host, buf.all_mut()).expect("upload");
        let rel = (diff / norm.max(1e-12)).sqrt();
        let abs = (diff / picks.len() as f64).sqrt();
        assert!(
            rel <= 0.02 || abs <= 2e-4,
            "{what}: {} (param {i}): relative error {rel:.4}, rms {abs:.2e}\n{}",
            spec.name,
            rows.join("\n")
        );
    }
}

#[test]
fn gpt_backward_matches_finite_differences() {
    let config = GptConfig {
        vocab: 11,
        context: 6,
        layers: 2,
        heads: 2,
        dim: 8,
    };
    let mut gpt = Gpt::<B>::new(config, DType::F32).expect("gpt");
    assert_eq!(
        gpt.parameters().iter().map(|p| p.numel()).sum::<usize>(),
        config.numel()
    );
    let batch: Vec<Vec<i32>> = (0..3)
        .map(|b: i32| (0..6).map(|t| (b * 5 + t * 3) % 11).collect())
        .collect();
    check(&mut gpt, &batch, 1e-2, "gpt");
}

#[test]
fn mlp_backward_matches_finite_differences() {
    let mut mlp = MlpClassifier::<B>::new(6, &[12, 10], 4, DType::F32);
    let blobs = Blobs::new(16, 6, 4, 3);
    let batch: Vec<_> = (0..16).map(|i| blobs.get(i)).collect();
    check(&mut mlp, &batch, 1e-3, "mlp");
}

#[test]
fn bad_batches_are_refused_naming_the_batch() {
    let dev = Device::new(CpuBackend::with_threads(1).expect("backend"));
    let config = GptConfig {
        vocab: 5,
        context: 4,
        layers: 1,
        heads: 1,
        dim: 4,
    };
    let mut gpt = Gpt::<B>::new(config, DType::F32).expect("gpt");
    let n = config.numel();
    let buf = dev.alloc(DType::F32, n).expect("params");
    let table = ParamTable::of::<B, _>(&gpt).expect("table");
    let slots = Slot::packed(table.specs());
    let mut params = Params::flat(&buf, &slots, &table);
    for (batch, why) in [
        (vec![], "empty"),
        (vec![vec![1, 2, 3, 4, 0, 1]], "context + 1 = 5"),
        (vec![vec![1, 2], vec![1, 2, 3]], "differ in length"),
        (vec![vec![1, 7]], "outside the vocabulary"),
    ] {
        let e = gpt
            .forward(&dev, &mut params, &batch)
            .expect_err(why)
            .to_string();
        assert!(e.contains("batch") && e.contains(why), "{e}");
    }
    for bad in [
        GptConfig { heads: 3, ..config },
        GptConfig {
            layers: 0,
            ..config
        },
    ] {
        assert!(Gpt::<B>::new(bad, DType::F32).is_err());
    }
}
