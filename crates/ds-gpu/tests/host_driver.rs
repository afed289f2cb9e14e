//! The shared GPU layer over a driver whose "device memory" is host memory, so the parts of
//! `GpuBackend` that are not kernels run here without a GPU: memory and the pool, GEMM's
//! row-major-to-BLAS mapping (the driver computes the column-major product it is handed), and
//! every kernel family's launch, whose arguments must pass the launch table (the driver
//! records each launch; it runs no kernel, so the values kernels would write are not checked
//! here: the conformance suite does that on a GPU), and the shared communicator at one rank.

use ds_core::kernels::{
    AdagradArgs, AdamArgs, AttentionArgs, AttentionBackwardArgs, LambApplyArgs, LambMomentArgs,
    LayerNormArgs, LayerNormBackwardArgs, LionArgs, SgdArgs,
};
use ds_core::params::{
    AdagradParams, AdamParams, AttentionShape, GemmSpec, LambParams, LionParams, SgdParams, Shape2,
};
use ds_core::pool::RawFailure;
use ds_core::{BufferExt, Capabilities, DType, Device, DeviceInfo, Error, Result};
use ds_gpu::launch::ArgKind;
use ds_gpu::{Arg, Driver, Gemm, GpuBackend, Grid};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Host memory posing as a device of `CAPACITY` bytes.
#[derive(Debug)]
struct HostDriver {
    info: DeviceInfo,
    held: AtomicUsize,
    launches: Mutex<Vec<(String, Vec<ArgKind>)>>,
}

const CAPACITY: usize = 64 << 20;

impl HostDriver {
    fn bytes(block: &mut [u8], offset: usize, len: usize) -> &mut [u8] {
        &mut block[offset..offset + len]
    }
}

/// Reads the f32 at device address `addr` + `i` elements.
///
/// # Safety
/// The address is inside a live block of this driver with room for element `i`.
unsafe fn load(addr: u64, i: i64) -> f32 {
    // SAFETY: the caller's guarantee; unaligned reads, as blocks are byte arrays.
    unsafe { std::ptr::read_unaligned((addr as *const f32).offset(i as isize)) }
}

/// Writes the f32 at device address `addr` + `i` elements.
///
/// # Safety
/// As for [`load`], and nothing else is reading the element.
unsafe fn store(addr: u64, i: i64, v: f32) {
    // SAFETY: the caller's guarantee.
    unsafe { std::ptr::write_unaligned((addr as *mut f32).offset(i as isize), v) }
}

impl Driver for HostDriver {
    type Block = Box<[u8]>;
    const BACKEND: &'static str = "host-test";

    fn open(_ordinal: usize) -> Result<Self> {
        Ok(HostDriver {
            info: DeviceInfo {
                backend: "host-test",
                name: "host-test:0".into(),
                vendor: "test".into(),
                memory_total: CAPACITY as u64,
                compute_units: 4,
                max_buffer_elements: None,
                capabilities: Capabilities::all_floats(),
            },
            held: AtomicUsize::new(0),
            launches: Mutex::new(Vec::new()),
        })
    }

    fn device_count() -> Result<usize> {
        Ok(1)
    }

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn compute_units(&self) -> u32 {
        4
    }

    fn alloc(&self, bytes: usize) -> std::result::Result<Box<[u8]>, RawFailure> {
        if self.held.load(Ordering::Relaxed) + bytes > CAPACITY {
            return Err(RawFailure::OutOfMemory);
        }
        self.held.fetch_add(bytes, Ordering::Relaxed);
        // Garbage, as a device allocation would be: the layer must zero it.
        Ok(vec![0xA5u8; bytes].into_boxed_slice())
    }

    fn available(&self) -> u64 {
        (CAPACITY - self.held.load(Ordering::Relaxed)) as u64
    }

    fn addr(&self, block: &Box<[u8]>) -> u64 {
        block.as_ptr() as u64
    }

    fn zero(&self, block: &mut Box<[u8]>) -> Result<()> {
        block.fill(0);
        Ok(())
    }

    fn upload(&self, src: &[u8], dst: &mut Box<[u8]>, offset: usize) -> Result<()> {
        Self::bytes(dst, offset, src.len()).copy_from_slice(src);
        Ok(())
    }

    fn download(&self, src: &Box<[u8]>, offset: usize, dst: &mut [u8]) -> Result<()> {
        dst.copy_from_slice(&src[offset..offset + dst.len()]);
        Ok(())
    }

    fn copy(
        &self,
        src: &Box<[u8]>,
        src_offset: usize,
        dst: &mut Box<[u8]>,
        dst_offset: usize,
        bytes: usize,
    ) -> Result<()> {
        Self::bytes(dst, dst_offset, bytes).copy_from_slice(&src[src_offset..src_offset + bytes]);
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    unsafe fn launch(&self, name: &str, grid: Grid, args: &[Arg]) -> Result<()> {
        assert!(
            grid.blocks > 0 && grid.threads == ds_gpu::THREADS,
            "{name}: {grid:?}"
        );
        let kinds = args.iter().map(|a| a.kind()).collect();
        self.launches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_string(), kinds));
        Ok(())
    }

    fn native_collectives(
        backend: &GpuBackend<Self>,
        rank: usize,
        world: usize,
        share: &mut dyn FnMut(Option<[u8; 128]>) -> Result<[u8; 128]>,
    ) -> Option<Result<Box<dyn ds_core::Collectives<GpuBackend<Self>>>>> {
        Some(ds_gpu::comm::bootstrap(backend, rank, world, share))
    }

    unsafe fn gemm(&self, g: &Gemm) -> Result<()> {
        assert_eq!(g.dtype, DType::F32, "the test driver multiplies f32 only");
        for batch in 0..i64::from(g.batch) {
            let (a, b, c) = (batch * g.stride_a, batch * g.stride_b, batch * g.stride_c);
            for j in 0..i64::from(g.n) {
                for i in 0..i64::from(g.m) {
                    let mut acc = 0.0f32;
                    for p in 0..i64::from(g.k) {
                        let ai = if g.trans_a {
                            p + i * i64::from(g.lda)
                        } else {
                            i + p * i64::from(g.lda)
                        };
                        let bi = if g.trans_b {
                            j + p * i64::from(g.ldb)
                        } else {
                            p + j * i64::from(g.ldb)
                        };
                        // SAFETY: the shared layer hands addresses ds-core validated for the
                        // whole strided batch at these leading dimensions.
                        acc += unsafe { load(g.a, a + ai) * load(g.b, b + bi) };
                    }
                    let ci = c + i + j * i64::from(g.ldc);
                    // SAFETY: as above, for C.
                    unsafe {
                        let old = load(g.c, ci);
                        store(g.c, ci, g.alpha * acc + g.beta * old);
                    }
                }
            }
        }
        Ok(())
    }
}

type Host = GpuBackend<HostDriver>;

fn device() -> Device<Host> {
    Device::new(Host::new(0).expect("the host driver opens"))
}

#[test]
fn memory_goes_through_the_shared_pool_zeroed_at_every_offset() {
    let dev = device();
    let before = dev.memory_stats();
    let mut a = dev.alloc(DType::F32, 1000).expect("alloc");
    assert!(
        dev.to_vec::<f32>(a.all())
            .expect("read")
            .iter()
            .all(|&v| v == 0.0)
    );
    let vals: Vec<f32> = (0..10).map(|i| i as f32 + 0.5).collect();
    dev.upload(&vals, a.range_mut(100..110)).expect("upload");
    let back: Vec<f32> = dev.to_vec(a.range(95..115)).expect("read");
    assert_eq!(&back[5..15], vals.as_slice());
    assert!(back[..5].iter().chain(&back[15..]).all(|&v| v == 0.0));
    let mut b = dev.alloc(DType::F32, 64).expect("alloc");
    dev.copy(a.range(100..110), b.range_mut(3..13))
        .expect("copy");
    assert_eq!(dev.to_vec::<f32>(b.range(3..13)).expect("read"), vals);
    let during = dev.memory_stats();
    assert_eq!(during.in_use - before.in_use, 4 * 1064);
    assert_eq!(
        during.reserved - before.reserved,
        4096 + 512,
        "size classes of 512 bytes"
    );
    drop(a);
    // The freed block is cached, and served again zeroed although its old contents remain.
    let again = dev.alloc(DType::F32, 1000).expect("alloc");
    assert_eq!(dev.memory_stats().reserved, during.reserved);
    assert!(
        dev.to_vec::<f32>(again.all())
            .expect("read")
            .iter()
            .all(|&v| v == 0.0)
    );
    let empty = dev.alloc(DType::BF16, 0).expect("an empty buffer");
    assert!(
        dev.to_vec::<ds_core::bf16>(empty.all())
            .expect("read")
            .is_empty()
    );
    match dev.alloc(DType::F32, CAPACITY) {
        Err(Error::OutOfMemory {
            device, requested, ..
        }) => {
            assert_eq!(device, "host-test:0");
            assert_eq!(requested, 4 * CAPACITY as u64);
        }
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
}

/// Row-major `C = alpha op(A) op(B) + beta C` per batch entry, in f64.
#[allow(clippy::too_many_arguments)]
fn reference(s: &GemmSpec, a: &[f32], b: &[f32], c: &[f32]) -> Vec<f32> {
    let mut out = c.to_vec();
    for e in 0..s.batch {
        for i in 0..s.m {
            for j in 0..s.n {
                let mut acc = 0.0f64;
                for p in 0..s.k {
                    let av = if s.trans_a {
                        a[e * s.stride_a + p * s.m + i]
                    } else {
                        a[e * s.stride_a + i * s.k + p]
                    };
                    let bv = if s.trans_b {
                        b[e * s.stride_b + j * s.k + p]
                    } else {
                        b[e * s.stride_b + p * s.n + j]
                    };
                    acc += f64::from(av) * f64::from(bv);
                }
                let ci = e * s.stride_c + i * s.n + j;
                out[ci] = (f64::from(s.alpha) * acc + f64::from(s.beta) * f64::from(c[ci])) as f32;
            }
        }
    }
    out
}

#[test]
fn gemm_maps_row_major_products_onto_column_major_blas() {
    let dev = device();
    let (m, n, k, batch) = (3, 4, 5, 2);
    let fill = |len: usize, seed: f32| -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32 * 0.37 + seed).sin() * 4.0).round() / 4.0)
            .collect()
    };
    for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut spec = GemmSpec::new(m, n, k);
        spec.trans_a = trans_a;
        spec.trans_b = trans_b;
        spec.alpha = 1.5;
        spec.beta = 0.5;
        spec.batch = batch;
        spec.stride_a = m * k;
        spec.stride_b = k * n;
        spec.stride_c = m * n;
        let (ha, hb, hc) = (
            fill(batch * m * k, 0.1),
            fill(batch * k * n, 1.3),
            fill(batch * m * n, 2.7),
        );
        let a = dev.alloc_from(&ha).expect("a");
        let b = dev.alloc_from(&hb).expect("b");
        let mut c = dev.alloc_from(&hc).expect("c");
        dev.gemm(&spec, a.all(), b.all(), c.all_mut())
            .expect("gemm");
        let got: Vec<f32> = dev.to_vec(c.all()).expect("read");
        let want = reference(&spec, &ha, &hb, &hc);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "trans ({trans_a}, {trans_b}): {got:?} vs {want:?}"
            );
        }
    }
}

#[test]
fn every_kernel_family_launches_with_the_arguments_the_table_states() {
    let backend = Host::new(0).expect("open");
    let dev = Device::new(backend.clone());
    let f = |len: usize| dev.alloc(DType::F32, len).expect("alloc");
    let (n, rows, cols) = (64, 4, 16);
    let shape = Shape2::new(rows, cols);
    let (x, y, mut out, mut out2, mut out3) = (f(n), f(n), f(n), f(n), f(n));
    let mut flag = f(1);
    let mut copy16 = dev.alloc(DType::BF16, n).expect("alloc");
    dev.fill(out.all_mut(), 1.0).expect("fill");
    dev.cast(x.all(), copy16.all_mut()).expect("cast");
    dev.scale(out.all_mut(), 2.0).expect("scale");
    dev.axpy(0.5, x.all(), out.all_mut()).expect("axpy");
    dev.add(x.all(), y.all(), out.all_mut()).expect("add");
    dev.mul(x.all(), y.all(), out.all_mut()).expect("mul");
    dev.sum(x.all(), flag.all_mut()).expect("sum");
    dev.sum_squares(x.all(), flag.all_mut())
        .expect("sum_squares");
    dev.non_finite(x.all(), flag.all_mut()).expect("non_finite");
    dev.unscale_and_check(out.all_mut(), 0.5, flag.all_mut())
        .expect("unscale");
    let bias = f(cols);
    let mut dbias = f(cols);
    dev.bias_add(shape, out.all_mut(), bias.all())
        .expect("bias_add");
    dev.bias_grad(shape, x.all(), dbias.all_mut(), false)
        .expect("bias_grad");
    dev.gelu(x.all(), out.all_mut()).expect("gelu");
    dev.gelu_backward(x.all(), y.all(), out.all_mut())
        .expect("gelu_backward");
    dev.relu(x.all(), out.all_mut()).expect("relu");
    dev.relu_backward(x.all(), y.all(), out.all_mut())
        .expect("relu_backward");
    let (gamma, beta) = (f(cols), f(cols));
    let (mut mean, mut rstd, mut dgamma, mut dbeta) = (f(rows), f(rows), f(cols), f(cols));
    dev.layer_norm(
        shape,
        1e-5,
        LayerNormArgs {
            x: x.all(),
            gamma: gamma.all(),
            beta: beta.all(),
            y: out.all_mut(),
            mean: mean.all_mut(),
            rstd: rstd.all_mut(),
        },
    )
    .expect("layer_norm");
    dev.layer_norm_backward(
        shape,
        false,
        LayerNormBackwardArgs {
            x: x.all(),
            gamma: gamma.all(),
            mean: mean.all(),
            rstd: rstd.all(),
            dy: y.all(),
            dx: out.all_mut(),
            dgamma: dgamma.all_mut(),
            dbeta: dbeta.all_mut(),
        },
    )
    .expect("layer_norm_backward");
    let labels = dev.alloc_from(&[1i32, 0, 3, -100]).expect("labels");
    let mut losses = f(rows);
    dev.softmax_cross_entropy(shape, -100, x.all(), labels.all(), losses.all_mut())
        .expect("xent");
    dev.softmax_cross_entropy_backward(shape, -100, 0.25, x.all(), labels.all(), out.all_mut())
        .expect("xent_backward");
    let table = f(8 * cols);
    let mut dtable = f(8 * cols);
    let ids = dev.alloc_from(&[1i32, 7, 1, 2]).expect("ids");
    dev.embedding(Shape2::new(8, cols), ids.all(), table.all(), out.all_mut())
        .expect("embedding");
    dev.embedding_backward(
        Shape2::new(8, cols),
        false,
        ids.all(),
        x.all(),
        dtable.all_mut(),
    )
    .expect("embedding_backward");
    let att = AttentionShape::new(1, 2, 2, 16);
    let (mut lse, mut dk, mut dv) = (f(4), f(n), f(n));
    dev.attention(
        &att,
        AttentionArgs {
            q: x.all(),
            k: y.all(),
            v: y.all(),
            out: out.all_mut(),
            lse: lse.all_mut(),
        },
    )
    .expect("attention");
    dev.attention_backward(
        &att,
        AttentionBackwardArgs {
            q: x.all(),
            k: y.all(),
            v: y.all(),
            out: x.all(),
            lse: lse.all(),
            dout: y.all(),
            dq: out2.all_mut(),
            dk: dk.all_mut(),
            dv: dv.all_mut(),
        },
    )
    .expect("attention_backward");
    let (mut m, mut v, mut p) = (f(n), f(n), f(n));
    let grad16 = dev.alloc(DType::F16, n).expect("alloc");
    dev.adam_step(
        &AdamParams::default(),
        AdamArgs {
            param: p.all_mut(),
            grad: grad16.all(),
            exp_avg: m.all_mut(),
            exp_avg_sq: v.all_mut(),
            param_copy: Some(copy16.all_mut()),
        },
    )
    .expect("adam");
    dev.sgd_step(
        &SgdParams {
            momentum: 0.9,
            ..SgdParams::default()
        },
        SgdArgs {
            param: p.all_mut(),
            grad: x.all(),
            momentum: Some(m.all_mut()),
            param_copy: None,
        },
    )
    .expect("sgd");
    dev.adagrad_step(
        &AdagradParams::default(),
        AdagradArgs {
            param: p.all_mut(),
            grad: x.all(),
            exp_avg_sq: v.all_mut(),
            param_copy: None,
        },
    )
    .expect("adagrad");
    dev.lion_step(
        &LionParams::default(),
        LionArgs {
            param: p.all_mut(),
            grad: x.all(),
            exp_avg: m.all_mut(),
            param_copy: None,
        },
    )
    .expect("lion");
    let mut norms = f(2);
    dev.lamb_moments(
        &LambParams::default(),
        LambMomentArgs {
            param: x.all(),
            grad: y.all(),
            exp_avg: m.all_mut(),
            exp_avg_sq: v.all_mut(),
            norms: norms.all_mut(),
        },
    )
    .expect("lamb_moments");
    dev.lamb_apply(
        &LambParams::default(),
        LambApplyArgs {
            param: out3.all_mut(),
            exp_avg: m.all(),
            exp_avg_sq: v.all(),
            norms: norms.all(),
            param_copy: None,
        },
    )
    .expect("lamb_apply");

    let launched = backend
        .driver()
        .launches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for (name, kinds) in &launched {
        let sig =
            ds_gpu::launch::signature(name).unwrap_or_else(|| panic!("{name} is not in the table"));
        assert_eq!(sig.args, kinds.as_slice(), "{name}");
    }
    let mut stems: Vec<&str> = launched
        .iter()
        .filter_map(|(name, _)| ds_gpu::launch::signature(name).map(|s| s.op))
        .collect();
    stems.sort_unstable();
    stems.dedup();
    let every: Vec<&str> = {
        let mut all: Vec<&str> = ds_gpu::launch::KERNELS
            .iter()
            .map(|s| s.op)
            .filter(|op| !op.starts_with("fill_"))
            .collect();
        all.sort_unstable();
        all
    };
    assert_eq!(
        stems, every,
        "every kernel but the integer fills was launched once at least"
    );
}

/// A world of one over the host driver: the reductions leave data in place (the sum over one
/// rank is the data) and the gather copies this rank's bytes into its slot, which is what a
/// one-rank NCCL does.
impl ds_gpu::CollectiveDriver for HostDriver {
    type Comm = usize;

    fn unique_id() -> Result<[u8; 128]> {
        Ok([7; 128])
    }

    fn comm_init(&self, world: i32, id: &[u8; 128], rank: i32) -> Result<usize> {
        assert_eq!((world, rank), (1, 0), "the host driver is a world of one");
        assert_eq!(id, &[7; 128], "the id rank 0 made, as shared");
        Ok(1)
    }

    fn comm_destroy(&self, comm: &mut usize) {
        *comm = 0;
    }

    unsafe fn all_reduce(
        &self,
        _: &usize,
        _: u64,
        _: usize,
        _: DType,
        _: ds_core::ReduceOp,
    ) -> Result<()> {
        Ok(())
    }

    unsafe fn all_gather(&self, _: &usize, send: u64, recv: u64, bytes: usize) -> Result<()> {
        // SAFETY: the layer hands a live send block of `bytes` and a receive block of
        // world * `bytes` = `bytes`; they may be the same memory (in place), hence `copy`.
        unsafe { std::ptr::copy(send as *const u8, recv as *mut u8, bytes) };
        Ok(())
    }

    unsafe fn broadcast(&self, _: &usize, _: u64, _: usize, _: i32) -> Result<()> {
        Ok(())
    }
}

#[test]
fn the_shared_communicator_bootstraps_its_id_and_keeps_the_collective_contract_at_one_rank() {
    use conformance::cases::collectives::communicator_sweep;
    use ds_core::Memory;
    let backend = Host::new(0).expect("open");
    let mut shared = Vec::new();
    let mut share = |id: Option<[u8; 128]>| -> Result<[u8; 128]> {
        shared.push(id);
        id.ok_or_else(|| Error::invalid("share", "id", "rank 0 passes its id"))
    };
    let comm = match backend.native_collectives(0, 1, &mut share) {
        Some(Ok(comm)) => comm,
        other => panic!(
            "expected the driver's communicator, got {:?}",
            other.map(|r| r.err())
        ),
    };
    assert_eq!(
        shared,
        vec![Some([7; 128])],
        "rank 0 makes the id and shares it once"
    );
    let dev = Device::new(backend);
    // f32 only: 16-bit sums widen through the cast kernel, which the host driver does not run.
    let checked =
        communicator_sweep(&dev, comm.as_ref(), &[DType::F32]).unwrap_or_else(|e| panic!("{e}"));
    assert!(checked > 0);
}

#[test]
fn a_rank_told_that_rank_0_failed_to_make_the_id_says_so_instead_of_waiting() {
    let backend = Host::new(0).expect("open");
    let mut share = |id: Option<[u8; 128]>| -> Result<[u8; 128]> {
        assert!(id.is_none(), "only rank 0 passes an id");
        Ok([0; 128])
    };
    match ds_gpu::comm::bootstrap(&backend, 1, 2, &mut share) {
        Err(Error::Collective { op, rank, reason }) => {
            assert_eq!((op, rank), ("init", 1));
            assert!(reason.contains("rank 0 could not make"), "{reason}");
        }
        other => panic!("expected a collective error, got {:?}", other.err()),
    }
}
