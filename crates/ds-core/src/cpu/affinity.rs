//! Pinning the CPU backend's worker threads to their own cores.
//!
//! A pool that idles (between steps, while the caller does serial work, after another
//! library's threads ran) puts its workers to sleep; the first parallel region after it wakes
//! them from the worker that got the job, and Linux tends to wake a thread on the waker's core
//! ("wake-affine"), where the two then share one core until the load balancer moves one, some
//! milliseconds later. Measured on a 2-vCPU Zen 5: an f32 GEMM 1024^3 after 100 ms of idling
//! ran at 237 GFLOP/s unpinned (one core's speed) and 415 pinned, the same as back to back.
//! OpenMP runtimes avoid it by spinning their workers and binding them (`OMP_PROC_BIND`);
//! DeepSpeed's launcher binds ranks to cores with `--bind_cores_to_rank`.
//!
//! `DS_CPU_BIND=auto` (the default) pins worker `i` of a pool to the `i`-th CPU it may use:
//! the CPUs of the process's affinity mask, offset by `local rank x threads` when the mask is
//! the whole machine and several MPI ranks share it (Open MPI's `OMPI_COMM_WORLD_LOCAL_*`,
//! MPICH's `MPI_LOCAL*`, Slurm's); a launcher that already bound the rank (a narrower mask) is
//! followed as it is. A pool is left unpinned when its threads would not each get a CPU of
//! their own, counting the CPUs this process's live pools hold (so a second pool, or a test
//! harness creating many at once, never piles onto the first one's cores; a rank sharing the
//! machine pins only one pool at a time); a dropped pool gives its CPUs back.
//! `DS_CPU_BIND=none` pins nothing.

use crate::error::{Error, Result};
use std::sync::Mutex;

/// The environment variable that chooses the binding policy.
pub const BIND_ENV: &str = "DS_CPU_BIND";

/// CPUs reserved by the live pools of this process, in order.
static TAKEN: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Whether `DS_CPU_BIND` asks for pinning (`auto`, the default) or not (`none`).
fn wanted() -> Result<bool> {
    match std::env::var(BIND_ENV) {
        Err(_) => Ok(true),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(true),
            "none" => Ok(false),
            _ => Err(Error::invalid(
                "cpu thread binding",
                BIND_ENV,
                format!("`{v}` is neither `auto` nor `none`"),
            )),
        },
    }
}

/// This process's local MPI rank and the number of ranks on its machine, when a launcher set
/// them (Open MPI, MPICH/Hydra, Slurm); `(0, 1)` otherwise.
fn local_ranks() -> (usize, usize) {
    let read = |keys: [&str; 3]| {
        keys.iter()
            .find_map(|k| std::env::var(k).ok()?.trim().parse::<usize>().ok())
    };
    let rank = read([
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]);
    let size = read([
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "MPI_LOCALNRANKS",
        "SLURM_NTASKS_PER_NODE",
    ]);
    (rank.unwrap_or(0), size.unwrap_or(1).max(1))
}

/// Which CPU each of `threads` workers goes to, given the CPUs the process may use, how many
/// the machine has, this process's local rank and rank count, and the CPUs earlier pools took;
/// `None` when they would not each get one of their own.
fn plan(
    threads: usize,
    allowed: &[usize],
    online: usize,
    (rank, ranks): (usize, usize),
    taken: &[usize],
) -> Option<Vec<usize>> {
    let shared_machine = allowed.len() >= online && ranks > 1;
    if shared_machine && !taken.is_empty() {
        // Beyond this rank's first slice lie its neighbours' cores.
        return None;
    }
    let offset = if shared_machine { rank * threads } else { 0 };
    let cpus: Vec<usize> = allowed
        .iter()
        .copied()
        .filter(|c| !taken.contains(c))
        .skip(offset)
        .take(threads)
        .collect();
    (cpus.len() == threads).then_some(cpus)
}

/// CPUs reserved for one pool, released when it is dropped (with the pool).
#[derive(Debug)]
pub(crate) struct Reservation {
    cpus: Vec<usize>,
}

impl Reservation {
    /// The CPU for worker `i`.
    pub(crate) fn cpu(&self, i: usize) -> Option<usize> {
        self.cpus.get(i).copied()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        taken.retain(|c| !self.cpus.contains(c));
    }
}

/// The CPUs to pin a new pool of `threads` workers to, reserved until the reservation is
/// dropped, or `None` to leave it unpinned.
///
/// # Errors
/// [`Error::InvalidArgument`] for a `DS_CPU_BIND` that is neither `auto` nor `none`.
pub(crate) fn reserve(threads: usize) -> Result<Option<Reservation>> {
    if !wanted()? {
        return Ok(None);
    }
    let Some((allowed, online)) = os::allowed_cpus() else {
        return Ok(None);
    };
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let cpus = plan(threads, &allowed, online, local_ranks(), &taken);
    if let Some(c) = &cpus {
        taken.extend(c);
    }
    Ok(cpus.map(|cpus| Reservation { cpus }))
}

/// Pins the calling thread to `cpu` (a failure leaves it unpinned: binding is only a speed
/// hint).
pub(crate) fn pin_current(cpu: usize) {
    os::pin_current(cpu);
}

/// The CPUs this process's live pools are pinned to, for `ds report`.
pub fn pinned_cpus() -> Vec<usize> {
    TAKEN.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[cfg(target_os = "linux")]
mod os {
    /// The CPUs in this process's affinity mask and the number online.
    pub(super) fn allowed_cpus() -> Option<(Vec<usize>, usize)> {
        // SAFETY: cpu_set_t is plain data (all-zero is the empty set); sched_getaffinity writes
        // at most size_of::<cpu_set_t>() bytes into it; CPU_ISSET reads it in bounds for
        // indices below CPU_SETSIZE.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return None;
            }
            let cpus = (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect();
            let online = libc::sysconf(libc::_SC_NPROCESSORS_ONLN);
            Some((cpus, usize::try_from(online).ok()?))
        }
    }

    pub(super) fn pin_current(cpu: usize) {
        if cpu >= libc::CPU_SETSIZE as usize {
            return;
        }
        // SAFETY: as above; `cpu` is below CPU_SETSIZE, and pid 0 names the calling thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    pub(super) fn allowed_cpus() -> Option<(Vec<usize>, usize)> {
        None
    }
    pub(super) fn pin_current(_: usize) {}
}

#[cfg(test)]
mod tests {
    use super::{Reservation, TAKEN, pinned_cpus, plan};

    #[test]
    fn a_dropped_reservation_gives_its_cpus_back() {
        // A cpu no machine here has, so pools of other tests cannot hold it.
        let cpu = 1 << 20;
        TAKEN.lock().expect("lock").push(cpu);
        let r = Reservation { cpus: vec![cpu] };
        assert_eq!(r.cpu(0), Some(cpu));
        assert_eq!(r.cpu(1), None);
        assert!(pinned_cpus().contains(&cpu));
        drop(r);
        assert!(!pinned_cpus().contains(&cpu));
    }

    #[test]
    fn workers_get_cpus_of_their_own_or_stay_unpinned() {
        let all: Vec<usize> = (0..8).collect();
        assert_eq!(plan(2, &all, 8, (0, 1), &[]), Some(vec![0, 1]));
        // Ranks sharing the machine take consecutive slices, and only for their first pool.
        assert_eq!(plan(2, &all, 8, (3, 4), &[]), Some(vec![6, 7]));
        assert_eq!(
            plan(2, &all, 8, (4, 5), &[]),
            None,
            "rank 4 x 2 threads exceeds 8 cpus"
        );
        assert_eq!(plan(1, &all, 8, (0, 2), &[0]), None, "cpu 1 is rank 1's");
        // A launcher's binding (a narrower mask) is followed without the rank offset.
        assert_eq!(plan(2, &[4, 5], 8, (2, 4), &[]), Some(vec![4, 5]));
        // A second pool of a lone process takes what the first left, none when nothing is.
        assert_eq!(plan(2, &all, 8, (0, 1), &[0, 1]), Some(vec![2, 3]));
        assert_eq!(plan(3, &[0, 1, 2, 3], 4, (0, 1), &[0, 1]), None);
        assert_eq!(
            plan(9, &all, 8, (0, 1), &[]),
            None,
            "more threads than cpus"
        );
    }
}
