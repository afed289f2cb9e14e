//! N threads of one process as N ranks: the collectives the tests and a single machine use.
//!
//! Every call is a rendezvous: each rank deposits its contribution (a host copy of its
//! buffer and a description of the call), waits until all ranks have, computes its own result
//! from all contributions, and leaves; the last to leave clears the round. Because every rank
//! sees every description, a rank that calls a different operation, dtype or length is caught
//! and all ranks fail with a message naming them, instead of hanging or corrupting data. A
//! rank whose communicator is dropped (its thread ended or panicked) is reported at once, and
//! a rendezvous that does not complete within the timeout fails naming the missing ranks.

use super::{Collectives, ReduceOp, host_reduce::reduce_into, mismatch, partition};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kernels::{Backend, Validated, View, ViewMut};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a rank waits for the others by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq)]
struct CallDesc {
    op: &'static str,
    dtype: Option<DType>,
    len: usize,
    detail: String,
}

#[derive(Debug, Clone)]
struct Contribution {
    desc: CallDesc,
    data: Arc<Vec<u8>>,
}

#[derive(Debug)]
struct Round {
    slots: Vec<Option<Contribution>>,
    ready: bool,
    leaving: usize,
    departed: Vec<bool>,
    /// Set when a rendezvous failed (timeout, a departed rank): the group can no longer agree
    /// on what was exchanged, so every later call fails at once with this reason.
    broken: Option<Error>,
}

#[derive(Debug)]
struct Shared {
    world: usize,
    round: Mutex<Round>,
    changed: Condvar,
}

/// One rank of an in-process group. Create a group with [`ThreadedComm::group`] and move one
/// communicator into each thread, or use [`run_threaded`].
#[derive(Debug)]
pub struct ThreadedComm {
    rank: usize,
    shared: Arc<Shared>,
    timeout: Duration,
}

impl ThreadedComm {
    /// A group of `world` ranks with the default timeout; element r is rank r.
    pub fn group(world: usize) -> Vec<ThreadedComm> {
        Self::group_with_timeout(world, DEFAULT_TIMEOUT)
    }

    /// A group whose rendezvous give up after `timeout`.
    pub fn group_with_timeout(world: usize, timeout: Duration) -> Vec<ThreadedComm> {
        let shared = Arc::new(Shared {
            world,
            round: Mutex::new(Round {
                slots: vec![None; world],
                ready: false,
                leaving: 0,
                departed: vec![false; world],
                broken: None,
            }),
            changed: Condvar::new(),
        });
        (0..world)
            .map(|rank| ThreadedComm {
                rank,
                shared: Arc::clone(&shared),
                timeout,
            })
            .collect()
    }

    fn lock(&self, op: &'static str) -> Result<MutexGuard<'_, Round>> {
        self.shared.round.lock().map_err(|_| Error::Collective {
            op,
            rank: self.rank,
            reason: "another rank panicked while holding the group's lock".into(),
        })
    }

    /// Deposits this rank's contribution and returns every rank's, in rank order.
    fn exchange(&self, desc: CallDesc, data: Vec<u8>) -> Result<Vec<Contribution>> {
        let op = desc.op;
        let deadline = Instant::now() + self.timeout;
        let mut round = self.lock(op)?;
        if let Some(earlier) = &round.broken {
            return Err(Error::Collective {
                op,
                rank: self.rank,
                reason: format!("the group failed earlier and cannot be used: {earlier}"),
            });
        }
        // A previous round may still be being read by slower ranks.
        round = self.wait(op, round, deadline, |r| !r.ready)?;
        round.slots[self.rank] = Some(Contribution {
            desc,
            data: Arc::new(data),
        });
        if round.slots.iter().all(Option::is_some) {
            round.ready = true;
            round.leaving = 0;
            self.shared.changed.notify_all();
        }
        round = self.wait(op, round, deadline, |r| r.ready)?;
        let all: Vec<Contribution> = round.slots.iter().flatten().cloned().collect();
        round.leaving += 1;
        if round.leaving == self.shared.world {
            round.slots.iter_mut().for_each(|s| *s = None);
            round.ready = false;
            self.shared.changed.notify_all();
        }
        drop(round);
        self.check_agreement(op, &all)?;
        Ok(all)
    }

    fn wait<'g>(
        &self,
        op: &'static str,
        mut round: MutexGuard<'g, Round>,
        deadline: Instant,
        done: impl Fn(&Round) -> bool,
    ) -> Result<MutexGuard<'g, Round>> {
        while !done(&round) {
            let missing: Vec<usize> = (0..self.shared.world)
                .filter(|&r| round.slots[r].is_none())
                .collect();
            if let Some(gone) = missing.iter().find(|&&r| round.departed[r]) {
                let error = Error::Collective {
                    op,
                    rank: self.rank,
                    reason: format!(
                        "rank {gone} left the group (its thread ended or panicked) without calling {op}"
                    ),
                };
                return Err(self.break_group(&mut round, error));
            }
            if let Some(earlier) = &round.broken {
                // Another rank of this call already failed: report the same failure.
                return Err(as_rank(earlier, self.rank));
            }
            let now = Instant::now();
            if now >= deadline {
                let error = Error::Timeout {
                    op,
                    rank: self.rank,
                    seconds: self.timeout.as_secs_f64(),
                    missing,
                };
                return Err(self.break_group(&mut round, error));
            }
            round = self
                .shared
                .changed
                .wait_timeout(round, deadline - now)
                .map_err(|_| Error::Collective {
                    op,
                    rank: self.rank,
                    reason: "another rank panicked while holding the group's lock".into(),
                })?
                .0;
        }
        Ok(round)
    }

    /// Records the failure that leaves the group unusable and wakes every waiting rank.
    fn break_group(&self, round: &mut Round, error: Error) -> Error {
        round.broken = Some(error.clone());
        self.shared.changed.notify_all();
        error
    }

    fn check_agreement(&self, op: &'static str, all: &[Contribution]) -> Result<()> {
        let first = &all[0].desc;
        if all.iter().all(|c| c.desc == *first) {
            return Ok(());
        }
        let details: Vec<String> = all
            .iter()
            .enumerate()
            .map(|(r, c)| {
                let d = &c.desc;
                let dtype = d.dtype.map_or("-".to_string(), |t| t.to_string());
                format!("rank {r}: {} dtype {dtype} len {}{}", d.op, d.len, d.detail)
            })
            .collect();
        Err(mismatch(op, self.rank, details.join("; ")))
    }
}

impl Drop for ThreadedComm {
    fn drop(&mut self) {
        if let Ok(mut round) = self.shared.round.lock() {
            round.departed[self.rank] = true;
            self.shared.changed.notify_all();
        }
    }
}

/// The same failure as seen from `rank`.
fn as_rank(error: &Error, rank: usize) -> Error {
    match error.clone() {
        Error::Timeout {
            op,
            seconds,
            missing,
            ..
        } => Error::Timeout {
            op,
            rank,
            seconds,
            missing,
        },
        Error::Collective { op, reason, .. } => Error::Collective { op, rank, reason },
        other => other,
    }
}

fn staged<B: Backend>(device: &Device<B>, view: View<'_, B>) -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; view.len() * view.dtype().size_bytes()];
    device.download_bytes(view, &mut bytes)?;
    Ok(bytes)
}

impl<B: Backend> Collectives<B> for ThreadedComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn exec_all_reduce(
        &self,
        device: &Device<B>,
        buf: ViewMut<'_, B>,
        op: ReduceOp,
        _: Validated,
    ) -> Result<()> {
        let desc = CallDesc {
            op: "all_reduce",
            dtype: Some(buf.dtype()),
            len: buf.len(),
            detail: format!(" op {op}"),
        };
        let all = self.exchange(desc, staged(device, buf.as_ref())?)?;
        let parts: Vec<&[u8]> = all.iter().map(|c| c.data.as_slice()).collect();
        let mut out = vec![0u8; buf.len() * buf.dtype().size_bytes()];
        reduce_into(buf.dtype(), op, &parts, 0..buf.len(), &mut out)?;
        device.upload_bytes(&out, buf)
    }

    fn exec_reduce_scatter(
        &self,
        device: &Device<B>,
        input: View<'_, B>,
        output: ViewMut<'_, B>,
        op: ReduceOp,
        _: Validated,
    ) -> Result<()> {
        let desc = CallDesc {
            op: "reduce_scatter",
            dtype: Some(input.dtype()),
            len: input.len(),
            detail: format!(" op {op}"),
        };
        let all = self.exchange(desc, staged(device, input)?)?;
        let parts: Vec<&[u8]> = all.iter().map(|c| c.data.as_slice()).collect();
        let mine = partition(input.len(), self.shared.world, self.rank);
        let mut out = vec![0u8; mine.len() * input.dtype().size_bytes()];
        reduce_into(input.dtype(), op, &parts, mine, &mut out)?;
        device.upload_bytes(&out, output)
    }

    fn exec_all_gather(
        &self,
        device: &Device<B>,
        input: View<'_, B>,
        output: ViewMut<'_, B>,
        _: Validated,
    ) -> Result<()> {
        let desc = CallDesc {
            op: "all_gather",
            dtype: Some(output.dtype()),
            len: output.len(),
            detail: String::new(),
        };
        let all = self.exchange(desc, staged(device, input)?)?;
        let mut out = Vec::with_capacity(output.len() * output.dtype().size_bytes());
        for c in &all {
            out.extend_from_slice(&c.data);
        }
        device.upload_bytes(&out, output)
    }

    fn exec_reduce_scatter_in_place(
        &self,
        device: &Device<B>,
        mut buf: ViewMut<'_, B>,
        op: ReduceOp,
        _: Validated,
    ) -> Result<()> {
        let desc = CallDesc {
            op: "reduce_scatter_in_place",
            dtype: Some(buf.dtype()),
            len: buf.len(),
            detail: format!(" op {op}"),
        };
        let all = self.exchange(desc, staged(device, buf.as_ref())?)?;
        let parts: Vec<&[u8]> = all.iter().map(|c| c.data.as_slice()).collect();
        let mine = partition(buf.len(), self.shared.world, self.rank);
        let mut out = vec![0u8; mine.len() * buf.dtype().size_bytes()];
        reduce_into(buf.dtype(), op, &parts, mine.clone(), &mut out)?;
        device.upload_bytes(&out, buf.sub(mine))
    }

    fn exec_all_gather_in_place(
        &self,
        device: &Device<B>,
        buf: ViewMut<'_, B>,
        _: Validated,
    ) -> Result<()> {
        let desc = CallDesc {
            op: "all_gather_in_place",
            dtype: Some(buf.dtype()),
            len: buf.len(),
            detail: String::new(),
        };
        let mine = partition(buf.len(), self.shared.world, self.rank);
        let all = self.exchange(desc, staged(device, buf.as_ref().sub(mine))?)?;
        let mut out = Vec::with_capacity(buf.len() * buf.dtype().size_bytes());
        for c in &all {
            out.extend_from_slice(&c.data);
        }
        device.upload_bytes(&out, buf)
    }

    fn exec_broadcast(
        &self,
        device: &Device<B>,
        buf: ViewMut<'_, B>,
        root: usize,
        _: Validated,
    ) -> Result<()> {
        let desc = CallDesc {
            op: "broadcast",
            dtype: Some(buf.dtype()),
            len: buf.len(),
            detail: format!(" root {root}"),
        };
        let data = if self.rank == root {
            staged(device, buf.as_ref())?
        } else {
            Vec::new()
        };
        let all = self.exchange(desc, data)?;
        if self.rank == root {
            return Ok(());
        }
        device.upload_bytes(&all[root].data, buf)
    }

    fn barrier(&self) -> Result<()> {
        let desc = CallDesc {
            op: "barrier",
            dtype: None,
            len: 0,
            detail: String::new(),
        };
        self.exchange(desc, Vec::new()).map(|_| ())
    }
}

/// Runs `body` on `world` threads, each with its rank's communicator, and returns the results
/// in rank order. A panicking rank makes the others fail fast (its communicator is dropped)
/// and its panic is resumed here once every thread has finished.
pub fn run_threaded<R, F>(world: usize, body: F) -> Vec<R>
where
    R: Send,
    F: Fn(ThreadedComm) -> R + Sync,
{
    let comms = ThreadedComm::group(world);
    std::thread::scope(|scope| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let body = &body;
                scope.spawn(move || body(comm))
            })
            .collect();
        let results: Vec<std::thread::Result<R>> = handles.into_iter().map(|h| h.join()).collect();
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}
