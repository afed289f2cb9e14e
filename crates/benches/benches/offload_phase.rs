//! The offloaded optimizer phase ds runs on the host (issue "Offload"), beside the machine's
//! ceiling for it, in one run: from the reduced 16-bit gradients in host memory to the updated
//! 16-bit parameters, fp32 master weights and Adam moments, AdamW with gradient clipping 1.0
//! and fp16's loss scale 2^16, for one rank.
//!
//! ds's phase is two passes over the gradients: `sum_squares` reads the 16-bit gradients once
//! (2 B/param) for the squared norm, whose non-finite value is also the overflow flag; the host
//! computes the clip coefficient and folds unscaling and clipping into the optimizer's
//! `grad_scale`; then one fused `adam_step` reads the 16-bit gradient, master, m and v and
//! writes master, m, v and the 16-bit parameter copy (2 + 12 + 12 + 2 = 28 B/param): 30 B/param
//! in all, against DeepSpeed's 82 (42 of them host work in a GPU run; shared/peers/
//! bench_ds_offload_phase.py counts and times them part by part). The in-place 4-read/3-write
//! kernel (28 B/param) run alternately is the bandwidth ceiling the phase is stated against.
//!
//! Run: `DS_CPU_THREADS=2 cargo bench -p benches --bench offload_phase` (`SIZES_M=16,64`,
//! `ROUNDS=n`); `scripts/bench-offload-phase.sh VENV` alternates it with the DeepSpeed peer.

use benches::setup::{cpu, filled, rounds, threads, varied};
use benches::timing::{interleaved, median, paired_speed};
use ds_core::cpu::roofline;
use ds_core::kernels::AdamArgs;
use ds_core::params::AdamParams;
use ds_core::{BufferExt, DType, Result};

const M: usize = 1 << 20;
const LOSS_SCALE: f32 = 65536.0;
const CLIP: f32 = 1.0;

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let rounds = rounds(15);
    let sizes: Vec<usize> = std::env::var("SIZES_M")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![16, 64]);
    let dev = cpu()?;
    println!(
        "ds offload phase: {} threads, {rounds} interleaved rounds, fp16 gradients scaled by 2^16, AdamW, clip {CLIP}",
        threads()
    );
    for size in sizes {
        let n = size * M;
        // The reduced gradients as the backward leaves them: 16-bit, loss-scaled.
        let mut grads = varied(&dev, DType::F32, n)?;
        dev.scale(grads.all_mut(), 1e-3 * LOSS_SCALE)?;
        let mut grad16 = dev.alloc(DType::F16, n)?;
        dev.cast(grads.all(), grad16.all_mut())?;
        drop(grads);
        let (mut master, mut m, mut v) = (
            varied(&dev, DType::F32, n)?,
            filled(&dev, DType::F32, n, 0.0)?,
            filled(&dev, DType::F32, n, 0.0)?,
        );
        let mut param16 = dev.alloc(DType::F16, n)?;
        let mut norm = dev.alloc(DType::F32, 1)?;
        let (mut rp, rg, mut rm, mut rv) = (
            varied(&dev, DType::F32, n)?,
            filled(&dev, DType::F32, n, 0.0)?,
            varied(&dev, DType::F32, n)?,
            varied(&dev, DType::F32, n)?,
        );
        let be = dev.backend().clone();
        let d = dev.clone();
        let mut step = 0u64;
        let mut phase = || -> Result<()> {
            d.sum_squares(grad16.all(), norm.all_mut())?;
            let sum_sq = d.read_scalar(norm.all())?;
            let overflow = !sum_sq.is_finite();
            if overflow {
                return Ok(());
            }
            let grad_norm = f64::from(sum_sq).sqrt() / f64::from(LOSS_SCALE);
            let clip = (((grad_norm + 1e-6) / f64::from(CLIP)) as f32).max(1.0);
            step += 1;
            let hp = AdamParams {
                lr: 1e-3,
                weight_decay: 0.01,
                step,
                grad_scale: 1.0 / (LOSS_SCALE * clip),
                ..AdamParams::default()
            };
            d.adam_step(
                &hp,
                AdamArgs {
                    param: master.all_mut(),
                    grad: grad16.all(),
                    exp_avg: m.all_mut(),
                    exp_avg_sq: v.all_mut(),
                    param_copy: Some(param16.all_mut()),
                },
            )
        };
        let mut roof =
            || roofline::inplace_4r3w(&be, rp.all_mut(), rg.all(), rm.all_mut(), rv.all_mut());
        let s = interleaved(rounds, &mut [&mut roof, &mut phase])?;
        let (t_roof, t_phase) = (median(&s[0]), median(&s[1]));
        let share = (30.0 / 28.0) * paired_speed(&s[0], &s[1]);
        println!("\n{size}M parameters");
        println!(
            "  in-place 4r/3w kernel (28 B/param)  {:>8.2} ms  {:>6.1} GB/s",
            t_roof * 1e3,
            28.0 * n as f64 / t_roof / 1e9
        );
        println!(
            "  ds offload phase (30 B/param)       {:>8.2} ms  {:>6.1} GB/s  = {:.1}% of the 4r/3w kernel's bytes/s",
            t_phase * 1e3,
            30.0 * n as f64 / t_phase / 1e9,
            100.0 * share
        );
        println!("ds-offload-phase {size}M ms={:.3}", t_phase * 1e3);
    }
    Ok(())
}
