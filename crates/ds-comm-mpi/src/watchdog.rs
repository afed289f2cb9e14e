//! Bounds the data phase of a collective, which runs inside blocking MPI calls.
//!
//! The arrival handshake already knows that every rank is in the call; if the transfer still
//! does not finish (a rank died mid-transfer under a launcher that does not clean up, a
//! network stall), nothing inside MPI will return. A watchdog thread ends this process with
//! [`crate::TIMEOUT_EXIT_CODE`] and a message naming the operation; the launcher then ends the
//! other ranks. It calls no MPI function (MPI is not initialized for calls from two threads).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    /// The operation being guarded and when its data phase must end.
    armed: Option<(&'static str, Instant)>,
    shutdown: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: it is two plain fields.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A thread that ends the process when an armed operation overruns its time.
#[derive(Debug)]
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    timeout: Duration,
}

/// Disarms the watchdog when dropped (the guarded call returned).
pub(crate) struct Armed<'a>(&'a Watchdog);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.0.shared.lock().armed = None;
    }
}

impl Watchdog {
    /// Starts the thread; `rank` names this process in the message.
    pub(crate) fn start(rank: usize, timeout: Duration) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let watched = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ds-mpi-watchdog".into())
            .spawn(move || watch(&watched, rank, timeout))?;
        Ok(Watchdog {
            shared,
            thread: Some(thread),
            timeout,
        })
    }

    /// Guards `op` until the returned value is dropped.
    pub(crate) fn arm(&self, op: &'static str) -> Armed<'_> {
        self.shared.lock().armed = Some((op, Instant::now() + self.timeout));
        self.shared.changed.notify_all();
        Armed(self)
    }
}

fn watch(shared: &Shared, rank: usize, timeout: Duration) {
    let mut state = shared.lock();
    loop {
        if state.shutdown {
            return;
        }
        state = match state.armed {
            None => shared
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner()),
            Some((op, deadline)) => {
                let now = Instant::now();
                if now >= deadline {
                    crate::say::say(format_args!(
                        "[ds] rank {rank}: {op} did not finish within {:.1} s although every rank \
                         had arrived (a rank died mid-transfer or the transport stalled); ending \
                         this rank so the launcher ends the job",
                        timeout.as_secs_f64()
                    ));
                    // SAFETY: _exit ends the process at once without running handlers that
                    // could block on the stuck MPI call; nothing else is required.
                    unsafe { libc::_exit(crate::TIMEOUT_EXIT_CODE) };
                }
                shared
                    .changed
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        };
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
