//! The engine's error type: kernel and collective errors, configuration errors, the loss
//! scaler's floor, checkpoint problems (always naming the file), and API misuse.

use crate::config::ConfigError;
use crate::scaler::ScaleFloorError;
use std::path::PathBuf;

/// Anything the engine can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A kernel, allocation or collective failed.
    #[error(transparent)]
    Core(#[from] ds_core::Error),
    /// The configuration is invalid.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// fp16 gradients overflow at the minimum loss scale.
    #[error(transparent)]
    ScaleFloor(#[from] ScaleFloorError),
    /// A checkpoint file is missing, truncated, corrupt or does not fit the model.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The file (or directory) at fault.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The engine was called out of order (e.g. `backward` without `forward`), or asked for
    /// something it does not implement yet.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub(crate) fn checkpoint(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
