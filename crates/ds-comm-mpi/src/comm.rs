//! [`MpiComm`]: ds-core's [`Collectives`] over MPI, for buffers of any backend.

use crate::exchange;
use crate::guards::Guards;
use crate::handshake::{self, Call};
use crate::raw::RawComm;
use crate::watchdog::{Armed, Watchdog};
use crate::world::Session;
use ds_core::collectives::partition;
use ds_core::kernels::{Validated, View, ViewMut};
use ds_core::{Backend, Collectives, Device, Error, ReduceOp, Result};
use std::cell::{Cell, RefCell};
use std::sync::Arc;

/// One rank of an MPI world. Made by [`crate::init_distributed`] (or
/// [`MpiComm::from_session`]); every call is checked and time-limited by its [`Guards`].
///
/// Host buffers (the CPU backend) go to MPI directly; device buffers are staged through host
/// memory.
#[derive(Debug)]
pub struct MpiComm {
    // Field order is drop order: the communicator and the watchdog go before the session,
    // whose last owner finalizes MPI.
    raw: RawComm,
    watchdog: Option<Watchdog>,
    guards: Guards,
    seq: Cell<u64>,
    scratch: RefCell<exchange::Scratch>,
    _session: Arc<Session>,
}

impl MpiComm {
    /// A communicator over the whole MPI world of `session`, with `guards`.
    ///
    /// # Errors
    /// MPI failures; a watchdog thread that cannot start.
    pub fn from_session(session: Arc<Session>, guards: Guards) -> Result<Self> {
        let raw = RawComm::dup_world()?;
        let watchdog = match guards.timeout {
            Some(t) => Some(Watchdog::start(raw.rank(), t).map_err(|e| Error::Device {
                device: "MPI".into(),
                message: format!("cannot start the collective watchdog thread: {e}"),
            })?),
            None => None,
        };
        Ok(MpiComm {
            raw,
            watchdog,
            guards,
            seq: Cell::new(0),
            scratch: RefCell::default(),
            _session: session,
        })
    }

    /// The guards this communicator runs under.
    pub fn guards(&self) -> Guards {
        self.guards
    }

    /// Fails on every rank when the ranks were started with different guard settings (the
    /// handshake must run on all ranks or none). Runs once, at initialization.
    ///
    /// # Errors
    /// [`Error::Collective`] naming the settings of rank 0 and of this rank.
    pub(crate) fn check_guards_agree(&self) -> Result<()> {
        let g = self.guards;
        let words = [
            u64::from(g.validate),
            g.timeout.map_or(0, |t| t.as_millis() as u64),
            g.chunk_elements as u64,
        ];
        let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mine = bytes.clone();
        // 24 bytes as 12 u16 elements.
        self.raw
            .broadcast(&mut bytes, ds_core::DType::F16, 0, self.chunk())?;
        let differs = f32::from(u8::from(bytes != mine));
        let mut flag = differs.to_le_bytes();
        self.raw.all_reduce_sum_f32(&mut flag, 1)?;
        if f32::from_le_bytes(flag) == 0.0 {
            return Ok(());
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        Err(Error::Collective {
            op: "init_distributed",
            rank: self.raw.rank(),
            reason: format!(
                "ranks were started with different collective guard settings ({}, {}, {}): set \
                 them identically on every rank (mpirun -x VAR=value); rank 0 has validate {} \
                 timeout {} ms chunk {}, this rank has validate {} timeout {} ms chunk {}",
                crate::guards::VALIDATE_ENV,
                crate::guards::TIMEOUT_ENV,
                crate::guards::CHUNK_ENV,
                word(0) != 0,
                word(1),
                word(2),
                words[0] != 0,
                words[1],
                words[2],
            ),
        })
    }

    /// Runs the arrival handshake for `call` (when the guards need it) and checks agreement
    /// (when validating).
    fn begin(&self, call: Call) -> Result<()> {
        if !self.guards.handshake() {
            return Ok(());
        }
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let calls = handshake::exchange(&self.raw, &call, seq, self.guards.timeout);
        if self.guards.validate {
            handshake::agree(self.raw.rank(), &calls)?;
        }
        Ok(())
    }

    fn arm(&self, op: &'static str) -> Option<Armed<'_>> {
        self.watchdog.as_ref().map(|w| w.arm(op))
    }

    fn chunk(&self) -> usize {
        self.guards.chunk_elements
    }
}

fn call(
    op: &'static str,
    dtype: ds_core::DType,
    len: usize,
    reduce: Option<ReduceOp>,
    root: Option<usize>,
) -> Call {
    Call {
        op,
        dtype: Some(dtype),
        len,
        reduce,
        root,
    }
}

/// Runs `f` on the host bytes of `view`: directly when the backend keeps them in host memory,
/// otherwise on a staged copy that is uploaded back afterwards.
fn with_host_mut<B: Backend>(
    device: &Device<B>,
    mut view: ViewMut<'_, B>,
    f: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<()> {
    if device.backend().host_bytes(view.as_ref()).is_some()
        && let Some(bytes) = device.backend().host_bytes_mut(view.reborrow())
    {
        return f(bytes);
    }
    let mut staged = vec![0u8; view.len() * view.dtype().size_bytes()];
    device.download_bytes(view.as_ref(), &mut staged)?;
    f(&mut staged)?;
    device.upload_bytes(&staged, view)
}

/// The host bytes of `view`, borrowed when the backend keeps them in host memory.
fn host_bytes<'a, B: Backend>(
    device: &Device<B>,
    view: View<'a, B>,
) -> Result<std::borrow::Cow<'a, [u8]>> {
    if let Some(bytes) = device.backend().host_bytes(view) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let mut staged = vec![0u8; view.len() * view.dtype().size_bytes()];
    device.download_bytes(view, &mut staged)?;
    Ok(std::borrow::Cow::Owned(staged))
}

impl<B: Backend> Collectives<B> for MpiComm {
    fn rank(&self) -> usize {
        self.raw.rank()
    }

    fn world_size(&self) -> usize {
        self.raw.size()
    }

    fn exec_all_reduce(
        &self,
        device: &Device<B>,
        buf: ViewMut<'_, B>,
        op: ReduceOp,
        _: Validated,
    ) -> Result<()> {
        let dtype = buf.dtype();
        self.begin(call("all_reduce", dtype, buf.len(), Some(op), None))?;
        with_host_mut(device, buf, |bytes| {
            let _armed = self.arm("all_reduce");
            exchange::all_reduce(
                &self.raw,
                bytes,
                dtype,
                op,
                self.chunk(),
                &mut self.scratch.borrow_mut(),
            )
        })
    }

    fn exec_reduce_scatter(
        &self,
        device: &Device<B>,
        input: View<'_, B>,
        output: ViewMut<'_, B>,
        op: ReduceOp,
        _: Validated,
    ) -> Result<()> {
        let dtype = input.dtype();
        self.begin(call("reduce_scatter", dtype, input.len(), Some(op), None))?;
        let input = host_bytes(device, input)?;
        let (rank, world, size) = (self.raw.rank(), self.raw.size(), dtype.size_bytes());
        let len = input.len() / size;
        let others: Vec<&[u8]> = (0..world)
            .filter(|&r| r != rank)
            .map(|r| {
                let p = partition(len, world, r);
                &input[p.start * size..p.end * size]
            })
            .collect();
        let mine = partition(len, world, rank);
        let own_in = &input[mine.start * size..mine.end * size];
        with_host_mut(device, output, |out| {
            let _armed = self.arm("reduce_scatter");
            let own = exchange::Own::Separate(own_in, out);
            exchange::reduce_scatter(
                &self.raw,
                &others,
                own,
                dtype,
                op,
                self.chunk(),
                &mut self.scratch.borrow_mut(),
            )
        })
    }

    fn exec_all_gather(
        &self,
        device: &Device<B>,
        input: View<'_, B>,
        output: ViewMut<'_, B>,
        _: Validated,
    ) -> Result<()> {
        let dtype = output.dtype();
        self.begin(call("all_gather", dtype, output.len(), None, None))?;
        let size = dtype.size_bytes();
        let mine = partition(output.len(), self.raw.size(), self.raw.rank());
        let own = host_bytes(device, input)?;
        with_host_mut(device, output, |bytes| {
            bytes[mine.start * size..mine.end * size].copy_from_slice(&own);
            let _armed = self.arm("all_gather");
            exchange::all_gather_in_place(&self.raw, bytes, dtype, self.chunk())
        })
    }

    fn exec_reduce_scatter_in_place(
        &self,
        device: &Device<B>,
        buf: ViewMut<'_, B>,
        op: ReduceOp,
        _: Validated,
    ) -> Result<()> {
        let dtype = buf.dtype();
        self.begin(call(
            "reduce_scatter_in_place",
            dtype,
            buf.len(),
            Some(op),
            None,
        ))?;
        with_host_mut(device, buf, |bytes| {
            let _armed = self.arm("reduce_scatter_in_place");
            exchange::reduce_scatter_in_place(
                &self.raw,
                bytes,
                dtype,
                op,
                self.chunk(),
                &mut self.scratch.borrow_mut(),
            )
        })
    }

    fn exec_all_gather_in_place(
        &self,
        device: &Device<B>,
        buf: ViewMut<'_, B>,
        _: Validated,
    ) -> Result<()> {
        let dtype = buf.dtype();
        self.begin(call("all_gather_in_place", dtype, buf.len(), None, None))?;
        with_host_mut(device, buf, |bytes| {
            let _armed = self.arm("all_gather_in_place");
            exchange::all_gather_in_place(&self.raw, bytes, dtype, self.chunk())
        })
    }

    fn exec_broadcast(
        &self,
        device: &Device<B>,
        buf: ViewMut<'_, B>,
        root: usize,
        _: Validated,
    ) -> Result<()> {
        let dtype = buf.dtype();
        self.begin(call("broadcast", dtype, buf.len(), None, Some(root)))?;
        with_host_mut(device, buf, |bytes| {
            let _armed = self.arm("broadcast");
            self.raw.broadcast(bytes, dtype, root, self.chunk())
        })
    }

    fn barrier(&self) -> Result<()> {
        let barrier = Call {
            op: "barrier",
            dtype: None,
            len: 0,
            reduce: None,
            root: None,
        };
        if self.guards.handshake() {
            // Every rank has heard from every other: that is a barrier.
            return self.begin(barrier);
        }
        self.raw.barrier()
    }
}
