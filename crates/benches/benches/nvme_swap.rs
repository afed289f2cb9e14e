//! NVMe offload's swap throughput beside the plain sequential I/O of the same bytes in the
//! same directory, in one run (issue "Offload"): an Adam state (fp32 master and two moments)
//! of 64 MB and 256 MB read and written back through the swapper's 4 buffers, sub-group by
//! sub-group, the I/O thread overlapping reads and writes (what one offloaded optimizer step
//! moves, without the step's arithmetic), against writing the same bytes over a file of that
//! size (written once before timing, as the swap file is reserved before training) in one
//! sequential `write_all` and reading them back with one `read_exact`. Both go through the
//! page cache.
//!
//! Run: `cargo bench -p benches --bench nvme_swap` (`NVME_DIR=/path/on/nvme`, default the
//! system temp directory; `SIZES_MB=64,256`; `ROUNDS=n`; `DS_NVME_IO=pread` forces positional
//! I/O).

use benches::setup::{cpu, rounds};
use benches::timing::{interleaved, median};
use ds_core::Result;
use ds_zero::offload::NvmeSettings;
use ds_zero::offload::nvme::NvmeState;
use ds_zero::optimizer::StateKind;
use std::io::{Read, Write};
use std::path::PathBuf;

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let rounds = rounds(5);
    let dir = std::env::var("NVME_DIR").map_or_else(|_| std::env::temp_dir(), PathBuf::from);
    let sizes: Vec<usize> = std::env::var("SIZES_MB")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![64, 256]);
    let host = cpu()?;
    let kinds = vec![StateKind::Master, StateKind::ExpAvg, StateKind::ExpAvgSq];
    println!(
        "NVMe swap in {}: {rounds} interleaved rounds, 4 buffers of 12 MiB (sub-groups of 1M elements)",
        dir.display()
    );
    for mb in sizes {
        let bytes = mb << 20;
        let elements = bytes / 12;
        let settings = NvmeSettings {
            path: dir.clone(),
            buffer_count: 4,
            buffer_size: 3 << 20,
            sub_group_size: 1_000_000_000,
            pipeline_read: true,
            pipeline_write: true,
            io: ds_zero::offload::swap::IoShape::default(),
        };
        let mut swap = NvmeState::new(host.clone(), &settings, 0, kinds.clone(), elements, |r| {
            Ok(vec![1.0; r.len()])
        })?;
        let moved = 2.0 * swap.state_bytes() as f64;
        let plain_path = dir.join(format!("ds-plain-io-{}", std::process::id()));
        let data = vec![7u8; swap.state_bytes() as usize];
        let mut back = vec![0u8; data.len()];
        std::fs::write(&plain_path, &data).map_err(|e| ds_core::Error::Device {
            device: "plain I/O".into(),
            message: e.to_string(),
        })?;
        let mut swapped = || swap.step(|_, _| Ok(()));
        let mut plain = || -> Result<()> {
            let io = |e: std::io::Error| ds_core::Error::Device {
                device: "plain I/O".into(),
                message: e.to_string(),
            };
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&plain_path)
                .map_err(io)?;
            f.write_all(&data).map_err(io)?;
            drop(f);
            let mut f = std::fs::File::open(&plain_path).map_err(io)?;
            f.read_exact(&mut back).map_err(io)?;
            Ok(())
        };
        let samples = interleaved(rounds, &mut [&mut swapped, &mut plain])?;
        std::fs::remove_file(&plain_path).ok();
        let (s, p) = (median(&samples[0]), median(&samples[1]));
        let gbs = |t: f64| moved / t / 1e9;
        println!(
            "{mb} MB state ({}): swap read+write {:.1} ms = {:.2} GB/s; plain write+read {:.1} ms = {:.2} GB/s; \
             swap / plain = {:.0}%",
            swap.io_path(),
            s * 1e3,
            gbs(s),
            p * 1e3,
            gbs(p),
            100.0 * p / s
        );
    }
    Ok(())
}
