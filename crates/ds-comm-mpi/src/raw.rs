//! The thin layer over MPI's C API that the collectives need, and nothing else.
//!
//! rsmpi's safe API has no `MPI_IN_PLACE` and ties requests to scopes that do not fit
//! "post everything, then wait under a deadline"; this module calls the C functions directly
//! and keeps every `unsafe` block here. Each function takes or returns plain Rust values;
//! requests are owned by [`Requests`], which never lets a posted buffer go before MPI is done
//! with it: it either completes every request or aborts the job.

use ds_core::{DType, Error, Result};
use mpi::ffi;
use std::os::raw::{c_int, c_void};
use std::time::{Duration, Instant};

unsafe extern "C" {
    /// `MPI_IN_PLACE` from `mpi.h` (a macro, so it comes from `csrc/constants.c`).
    fn ds_mpi_in_place() -> *mut c_void;
}

/// Message tags on ds's own communicator: the arrival handshake and the data it guards.
#[derive(Debug, Clone, Copy)]
#[repr(i32)]
pub(crate) enum Tag {
    /// Call descriptors exchanged before a collective.
    Handshake = 1,
    /// Payload of point-to-point exchanges.
    Data = 2,
}

/// A communicator of ds's own (a duplicate of the world), so ds's messages never match a
/// user's. Freed on drop, which must happen before `MPI_Finalize` (the owner orders this).
#[derive(Debug)]
pub(crate) struct RawComm {
    handle: ffi::MPI_Comm,
    rank: usize,
    size: usize,
}

// SAFETY: an MPI communicator handle is a process-wide identifier, valid on any thread; ds
// initializes MPI so that one thread at a time calls it (the collectives are `Send`, not
// `Sync`, so a communicator is used by one thread at a time).
unsafe impl Send for RawComm {}

fn check(call: &'static str, rc: c_int) -> Result<()> {
    // The default error handler (MPI_ERRORS_ARE_FATAL) aborts before returning an error; this
    // covers MPIs configured otherwise.
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::Device {
            device: "MPI".into(),
            message: format!("{call} returned error code {rc}"),
        })
    }
}

/// Converts a count to MPI's `int`; callers chunk so this never fails in practice.
fn count(n: usize) -> Result<c_int> {
    c_int::try_from(n).map_err(|_| {
        Error::invalid(
            "mpi",
            "count",
            format!("{n} elements exceed MPI's 32-bit count (the transfer should be chunked)"),
        )
    })
}

/// The MPI datatype that carries `dtype`'s elements: f32 as `MPI_FLOAT`, 16-bit floats as
/// `MPI_UINT16_T` (MPI has no f16 or bf16).
fn datatype(dtype: DType) -> Result<ffi::MPI_Datatype> {
    // SAFETY: reading link-time constants that rsmpi's C shim defines; MPI is initialized.
    unsafe {
        match dtype {
            DType::F32 => Ok(ffi::RSMPI_FLOAT),
            DType::F16 | DType::BF16 => Ok(ffi::RSMPI_UINT16_T),
            other => Err(Error::invalid(
                "mpi",
                "dtype",
                format!("{other} is not carried by ds's MPI collectives"),
            )),
        }
    }
}

impl RawComm {
    /// Duplicates `MPI_COMM_WORLD`. MPI must be initialized.
    pub(crate) fn dup_world() -> Result<Self> {
        // SAFETY: reading a link-time constant of rsmpi's C shim.
        let mut handle = unsafe { ffi::RSMPI_COMM_NULL };
        // SAFETY: MPI is initialized (the caller holds the universe); `handle` is a valid
        // out-pointer for the new communicator.
        check("MPI_Comm_dup", unsafe {
            ffi::MPI_Comm_dup(ffi::RSMPI_COMM_WORLD, &mut handle)
        })?;
        let (mut rank, mut size) = (0, 0);
        // SAFETY: `handle` is the communicator just created; out-pointers are valid.
        check("MPI_Comm_rank", unsafe {
            ffi::MPI_Comm_rank(handle, &mut rank)
        })?;
        // SAFETY: as above.
        check("MPI_Comm_size", unsafe {
            ffi::MPI_Comm_size(handle, &mut size)
        })?;
        Ok(RawComm {
            handle,
            rank: usize::try_from(rank).unwrap_or(0),
            size: usize::try_from(size).unwrap_or(1),
        })
    }

    /// This process's rank.
    pub(crate) fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// In-place sum of f32 `data` over all ranks (`MPI_Allreduce` with `MPI_IN_PLACE`), in
    /// chunks of at most `chunk` elements.
    pub(crate) fn all_reduce_sum_f32(&self, data: &mut [u8], chunk: usize) -> Result<()> {
        let dt = datatype(DType::F32)?;
        for piece in data.chunks_mut(chunk.max(1) * 4) {
            let n = count(piece.len() / 4)?;
            // SAFETY: `piece` is valid for reads and writes of `n` f32 elements for the whole
            // (blocking) call; MPI_IN_PLACE makes it both input and output; the communicator
            // is live.
            check("MPI_Allreduce", unsafe {
                ffi::MPI_Allreduce(
                    ds_mpi_in_place(),
                    piece.as_mut_ptr().cast(),
                    n,
                    dt,
                    ffi::RSMPI_SUM,
                    self.handle,
                )
            })?;
        }
        Ok(())
    }

    /// Broadcasts `data` (elements of `dtype`) from `root`, in chunks of at most `chunk`.
    pub(crate) fn broadcast(
        &self,
        data: &mut [u8],
        dtype: DType,
        root: usize,
        chunk: usize,
    ) -> Result<()> {
        let dt = datatype(dtype)?;
        let size = dtype.size_bytes();
        let root = count(root)?;
        for piece in data.chunks_mut(chunk.max(1) * size) {
            let n = count(piece.len() / size)?;
            // SAFETY: `piece` is valid for writes (and reads on the root) of `n` elements of
            // `dt` for the whole blocking call; the communicator is live.
            check("MPI_Bcast", unsafe {
                ffi::MPI_Bcast(piece.as_mut_ptr().cast(), n, dt, root, self.handle)
            })?;
        }
        Ok(())
    }

    /// Blocks until every rank has entered the barrier.
    pub(crate) fn barrier(&self) -> Result<()> {
        // SAFETY: the communicator is live.
        check("MPI_Barrier", unsafe { ffi::MPI_Barrier(self.handle) })
    }

    /// Ends the whole job (every rank) with `code`.
    pub(crate) fn abort(&self, code: i32) -> ! {
        // SAFETY: MPI_Abort may be called at any time after initialization.
        unsafe { ffi::MPI_Abort(self.handle, code) };
        // MPI_Abort does not return on a conforming MPI; make sure.
        std::process::exit(code)
    }
}

impl Drop for RawComm {
    fn drop(&mut self) {
        // SAFETY: `handle` came from MPI_Comm_dup and is freed once, here; MPI is still
        // initialized (the owner drops communicators before the universe).
        unsafe { ffi::MPI_Comm_free(&mut self.handle) };
    }
}

/// Outstanding non-blocking operations whose buffers live at least as long as `'buf`.
pub(crate) struct Requests<'buf> {
    comm: &'buf RawComm,
    handles: Vec<ffi::MPI_Request>,
    peers: Vec<usize>,
    done: Vec<bool>,
}

impl<'buf> Requests<'buf> {
    /// An empty set on `comm`.
    pub(crate) fn new(comm: &'buf RawComm) -> Self {
        Requests {
            comm,
            handles: Vec::new(),
            peers: Vec::new(),
            done: Vec::new(),
        }
    }

    /// Posts one non-blocking transfer of `bytes` bytes of `dtype` with `peer`: `start` calls
    /// MPI with the element count, datatype, peer, tag, communicator and request out-pointer.
    /// A transfer that cannot be posted ends the job: earlier requests may point into borrowed
    /// buffers, and returning would let those be freed under MPI.
    fn post(
        &mut self,
        call: &'static str,
        peer: usize,
        bytes: usize,
        dtype: DType,
        tag: Tag,
        start: impl FnOnce(
            c_int,
            ffi::MPI_Datatype,
            c_int,
            c_int,
            ffi::MPI_Comm,
            *mut ffi::MPI_Request,
        ) -> c_int,
    ) {
        let posted = (|| {
            let dt = datatype(dtype)?;
            let n = count(bytes / dtype.size_bytes())?;
            let rank = count(peer)?;
            // SAFETY: MPI_REQUEST_NULL is a link-time constant.
            let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
            check(
                call,
                start(n, dt, rank, tag as i32, self.comm.handle, &mut request),
            )?;
            Ok::<_, Error>(request)
        })();
        match posted {
            Ok(request) => {
                self.handles.push(request);
                self.peers.push(peer);
                self.done.push(false);
            }
            Err(e) => {
                crate::say::say(format_args!(
                    "[ds] rank {}: posting a transfer with rank {peer} failed: {e}; aborting the job",
                    self.comm.rank
                ));
                self.comm.abort(1)
            }
        }
    }

    /// Posts a send of `data` (elements of `dtype`) to `peer`.
    pub(crate) fn send(&mut self, peer: usize, data: &'buf [u8], dtype: DType, tag: Tag) {
        self.post(
            "MPI_Isend",
            peer,
            data.len(),
            dtype,
            tag,
            |n, dt, dest, tag, comm, req| {
                // SAFETY: `data` stays borrowed (and unmodified) for `'buf`, which outlives this
                // set, and the set completes every request before it is dropped (or aborts the
                // job); `req` is a valid out-pointer.
                unsafe { ffi::MPI_Isend(data.as_ptr().cast(), n, dt, dest, tag, comm, req) }
            },
        );
    }

    /// Posts a receive from `peer` into `data` (elements of `dtype`).
    pub(crate) fn receive(&mut self, peer: usize, data: &'buf mut [u8], dtype: DType, tag: Tag) {
        self.post(
            "MPI_Irecv",
            peer,
            data.len(),
            dtype,
            tag,
            |n, dt, src, tag, comm, req| {
                // SAFETY: `data` stays mutably borrowed for `'buf` (nothing else touches it), and
                // the set completes every request before it is dropped (or aborts the job).
                unsafe { ffi::MPI_Irecv(data.as_mut_ptr().cast(), n, dt, src, tag, comm, req) }
            },
        );
    }

    /// Tests every unfinished request once; returns whether all are done.
    fn poll(&mut self) -> bool {
        let mut all = true;
        for (handle, done) in self.handles.iter_mut().zip(&mut self.done) {
            if *done {
                continue;
            }
            let mut flag: c_int = 0;
            // SAFETY: `handle` is a request this set posted and has not completed (MPI sets it
            // to MPI_REQUEST_NULL on completion); the status is ignored.
            let rc = unsafe { ffi::MPI_Test(handle, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
            if rc != 0 {
                crate::say::say(format_args!(
                    "[ds] rank {}: MPI_Test failed with code {rc}; aborting the job",
                    self.comm.rank
                ));
                self.comm.abort(1)
            }
            *done = flag != 0;
            all &= *done;
        }
        all
    }

    /// Waits for every request. Until `deadline` (if any) it polls; past it, returns the peers
    /// of the requests still unfinished, which stay posted: the caller must then abort.
    pub(crate) fn wait(
        &mut self,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), Vec<usize>> {
        let mut spins = 0u32;
        loop {
            if self.poll() {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let mut late: Vec<usize> = self
                    .peers
                    .iter()
                    .zip(&self.done)
                    .filter(|(_, done)| !**done)
                    .map(|(p, _)| *p)
                    .collect();
                late.sort_unstable();
                late.dedup();
                return Err(late);
            }
            // Spin briefly (transfers in flight finish fast), then back off so a rank that
            // waits for a slower one leaves the cores to it.
            spins = spins.saturating_add(1);
            if spins < 2000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// Waits for every request in `MPI_Waitall`, which drives MPI's progress best for large
    /// transfers; the caller's watchdog bounds the time.
    pub(crate) fn wait_all(mut self) -> Result<()> {
        let n = count(self.handles.len())?;
        // SAFETY: every handle is a request this set posted (completed ones are
        // MPI_REQUEST_NULL, which MPI_Waitall accepts); statuses are ignored.
        let rc =
            unsafe { ffi::MPI_Waitall(n, self.handles.as_mut_ptr(), ffi::RSMPI_STATUSES_IGNORE) };
        if rc != 0 {
            crate::say::say(format_args!(
                "[ds] rank {}: MPI_Waitall failed with code {rc}; aborting the job",
                self.comm.rank
            ));
            self.comm.abort(1)
        }
        self.done.iter_mut().for_each(|d| *d = true);
        Ok(())
    }
}

impl Drop for Requests<'_> {
    fn drop(&mut self) {
        if !self.done.iter().all(|d| *d) && !self.poll() {
            // A request still points into a buffer about to be released.
            crate::say::say(format_args!(
                "[ds] rank {}: transfers were abandoned unfinished; aborting the job",
                self.comm.rank
            ));
            self.comm.abort(1)
        }
    }
}
