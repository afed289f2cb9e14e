//! How the threaded collectives fail: bad arguments name the argument; ranks that disagree,
//! vanish or never arrive make every rank fail with a message instead of hanging.

use ds_core::collectives::{ThreadedComm, run_threaded};
use ds_core::{Backend, BufferExt, Collectives, DType, Device, Error, ReduceOp};
use std::time::{Duration, Instant};

fn names(what: &str, r: ds_core::Result<()>, arg: &str) -> Result<usize, String> {
    match r {
        Err(e) if e.argument() == Some(arg) => Ok(1),
        Err(e) => Err(format!(
            "{what}: expected an error naming `{arg}`, got: {e}"
        )),
        Ok(()) => Err(format!("{what}: accepted bad input")),
    }
}

/// Argument errors of every collective, on a world of two threads.
///
/// # Errors
/// The first call that was accepted or refused for the wrong reason.
pub fn bad_arguments<B: Backend>(dev: &Device<B>) -> Result<usize, String> {
    let results = run_threaded(2, |comm| -> Result<usize, String> {
        let alloc = |dt, n| dev.alloc(dt, n).map_err(|e| e.to_string());
        let mut ints = alloc(DType::I32, 4)?;
        let mut x = alloc(DType::F32, 10)?;
        let mut part = alloc(DType::F32, 4)?;
        let mut n = 0;
        n += names(
            "all_reduce i32",
            comm.all_reduce(dev, ints.all_mut(), ReduceOp::Sum),
            "buf",
        )?;
        n += names(
            "all_reduce past end",
            comm.all_reduce(dev, x.range_mut(8..12), ReduceOp::Sum),
            "buf",
        )?;
        // 10 elements over 2 ranks: each rank's part is 5, not 4.
        n += names(
            "reduce_scatter output",
            comm.reduce_scatter(dev, x.all(), part.all_mut(), ReduceOp::Sum),
            "output",
        )?;
        n += names(
            "all_gather input",
            comm.all_gather(dev, part.all(), x.all_mut()),
            "input",
        )?;
        n += names(
            "all_gather dtype",
            comm.all_gather(dev, ints.range(0..2), part.all_mut()),
            "input",
        )?;
        n += names(
            "broadcast root",
            comm.broadcast(dev, x.all_mut(), 2),
            "root",
        )?;
        Collectives::<B>::barrier(&comm).map_err(|e| e.to_string())?;
        Ok(n)
    });
    results.into_iter().sum()
}

/// Ranks calling with different lengths: every rank fails, naming both calls.
///
/// # Errors
/// When a rank succeeds or the message does not describe the disagreement.
pub fn mismatch_fails_every_rank<B: Backend>(dev: &Device<B>) -> Result<usize, String> {
    let results = run_threaded(2, |comm| -> Result<(), String> {
        let len = 4 + <ThreadedComm as Collectives<B>>::rank(&comm);
        let mut x = dev.alloc(DType::F32, len).map_err(|e| e.to_string())?;
        match comm.all_reduce(dev, x.all_mut(), ReduceOp::Sum) {
            Err(Error::Collective { reason, .. })
                if reason.contains("rank 0: all_reduce dtype f32 len 4")
                    && reason.contains("rank 1: all_reduce dtype f32 len 5") =>
            {
                Ok(())
            }
            other => Err(format!(
                "expected a disagreement naming both ranks, got {other:?}"
            )),
        }
    });
    results
        .into_iter()
        .collect::<Result<Vec<()>, String>>()
        .map(|v| v.len())
}

/// A rank that leaves (its thread ends) makes the waiting rank fail at once, not hang.
///
/// # Errors
/// When the waiting rank succeeds, hangs past a second, or blames the wrong rank.
pub fn dead_rank_fails_fast<B: Backend>(dev: &Device<B>) -> Result<usize, String> {
    let mut comms = ThreadedComm::group(2);
    let survivor = comms.remove(0);
    let start = Instant::now();
    let waiter = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut x = dev.alloc(DType::F32, 4).map_err(|e| e.to_string())?;
            Ok::<_, String>(survivor.all_reduce(dev, x.all_mut(), ReduceOp::Sum))
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(comms); // rank 1 leaves without calling
        h.join().map_err(|_| "rank 0 panicked".to_string())
    })??;
    match waiter {
        Err(Error::Collective { reason, .. })
            if reason.contains("rank 1 left") && start.elapsed() < Duration::from_secs(1) =>
        {
            Ok(1)
        }
        other => Err(format!(
            "expected rank 0 to fail naming rank 1 within a second, got {other:?} after {:?}",
            start.elapsed()
        )),
    }
}

/// A rank that never arrives makes the others time out naming it; the group then refuses
/// further calls.
///
/// # Errors
/// When the timeout does not fire, names the wrong ranks, or the broken group accepts a call.
pub fn timeout_names_missing_ranks<B: Backend>(dev: &Device<B>) -> Result<usize, String> {
    let mut comms = ThreadedComm::group_with_timeout(3, Duration::from_millis(200));
    let late = comms.pop();
    let results: Vec<ds_core::Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .iter()
            .map(|comm| {
                s.spawn(move || {
                    let mut x = dev.alloc(DType::F32, 4)?;
                    comm.all_reduce(dev, x.all_mut(), ReduceOp::Max)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Ok(())))
            .collect()
    });
    for r in &results {
        match r {
            Err(Error::Timeout { missing, .. }) if missing == &[2] => {}
            other => return Err(format!("expected a timeout naming rank 2, got {other:?}")),
        }
    }
    let late = late.ok_or("no late rank")?;
    let mut x = dev.alloc(DType::F32, 4).map_err(|e| e.to_string())?;
    match late.all_reduce(dev, x.all_mut(), ReduceOp::Max) {
        Err(Error::Collective { reason, .. }) if reason.contains("failed earlier") => {
            Ok(results.len() + 1)
        }
        other => Err(format!(
            "expected the broken group to refuse the late rank, got {other:?}"
        )),
    }
}
