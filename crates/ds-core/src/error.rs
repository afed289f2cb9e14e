//! The one error type of ds-core. Every public operation returns [`Result`].
//!
//! Messages are written for the person who has to fix the problem: they name the operation,
//! the argument and what was expected, so a failing call can be corrected without reading ds's
//! source.

use crate::dtype::DType;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ds-core and the backends.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// A caller passed an argument the operation cannot accept (wrong length, dtype, offset
    /// past the end, a rank out of range, a non-finite hyper-parameter, ...).
    #[error("{op}: argument `{arg}`: {reason}")]
    InvalidArgument {
        /// The operation that refused the call, e.g. `"adam_step"`.
        op: &'static str,
        /// The argument at fault, as named in the operation's signature.
        arg: &'static str,
        /// What was wrong and what was expected.
        reason: String,
    },
    /// The backend does not implement this operation for this dtype. Never a silent fallback.
    #[error("{op}: {dtype} is not supported by the {backend} backend: {reason}")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// The dtype asked for.
        dtype: DType,
        /// The backend's name.
        backend: String,
        /// Why, as the backend states it in its capabilities.
        reason: String,
    },
    /// An allocation did not fit in the device's memory.
    #[error(
        "out of memory on {device}: asked for {requested} bytes with {available} bytes available; \
         use a smaller model or batch, more ranks with ZeRO, or a device with more memory"
    )]
    OutOfMemory {
        /// The device's name.
        device: String,
        /// Bytes asked for.
        requested: u64,
        /// Bytes the device reported available.
        available: u64,
    },
    /// No device of this backend could be opened (no driver, no adapter, library missing...).
    #[error("{backend} backend unavailable: {reason}")]
    NoDevice {
        /// The backend's name.
        backend: &'static str,
        /// What was looked for and where.
        reason: String,
    },
    /// The device or its driver reported an error.
    #[error("{device}: {message}")]
    Device {
        /// The device's name.
        device: String,
        /// The driver's message.
        message: String,
    },
    /// A collective operation failed (ranks disagreed, a peer vanished, a transport error).
    #[error("collective {op} on rank {rank}: {reason}")]
    Collective {
        /// The collective, e.g. `"all_reduce"`.
        op: &'static str,
        /// The rank reporting the failure.
        rank: usize,
        /// What went wrong, naming the ranks involved.
        reason: String,
    },
    /// A collective did not complete in time; names the ranks that never arrived.
    #[error(
        "collective {op} on rank {rank} timed out after {seconds:.1} s waiting for ranks {missing:?}"
    )]
    Timeout {
        /// The collective.
        op: &'static str,
        /// The rank reporting the timeout.
        rank: usize,
        /// How long it waited.
        seconds: f64,
        /// Ranks that had not arrived.
        missing: Vec<usize>,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, arg: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            arg,
            reason: reason.into(),
        }
    }

    /// The argument an [`Error::InvalidArgument`] names, if this is one (tests read it).
    pub fn argument(&self) -> Option<&'static str> {
        match self {
            Error::InvalidArgument { arg, .. } => Some(arg),
            _ => None,
        }
    }

    /// Whether this error says the operation is unsupported rather than wrong or failed.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Error::Unsupported { .. })
    }
}
