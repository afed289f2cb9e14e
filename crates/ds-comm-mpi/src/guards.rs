//! The guards every MPI collective runs under, read once from the environment.
//!
//! - **Validation** (`DS_VALIDATE_COLLECTIVES=1|0`, on by default in debug builds, off in
//!   release): before moving data, every rank shares a description of its call (operation,
//!   dtype, length, reduce op or root) and checks that all ranks agree; a disagreement fails on
//!   every rank with a message naming the ranks and their values.
//! - **Timeout** (`DS_COLLECTIVE_TIMEOUT_SECS`, default 1800 s as DeepSpeed's and PyTorch's
//!   process groups; `0` waits forever): a collective whose ranks do not all arrive in time
//!   aborts the whole job, naming the ranks that had not arrived.
//!
//! Both rest on the same arrival handshake (a few bytes to every peer), so validation costs
//! nothing once the timeout is on; with both off, collectives go straight to MPI.

use ds_core::{Error, Result};
use std::time::Duration;

/// Environment variable switching validation on (`1`) or off (`0`).
pub const VALIDATE_ENV: &str = "DS_VALIDATE_COLLECTIVES";
/// Environment variable setting the collective timeout in seconds (`0`: none).
pub const TIMEOUT_ENV: &str = "DS_COLLECTIVE_TIMEOUT_SECS";
/// Environment variable capping the elements one MPI call moves (for tests and tuning).
pub const CHUNK_ENV: &str = "DS_MPI_CHUNK_ELEMENTS";

/// The default timeout: DeepSpeed's (and PyTorch's) process-group default of 30 minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// The most elements one MPI call moves by default (16 MiB of f32): well inside MPI's 32-bit
/// `int` counts, and it bounds the receive space the direct reduce-scatter keeps per peer.
pub const DEFAULT_CHUNK_ELEMENTS: usize = 1 << 22;

/// How collectives are checked and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guards {
    /// Check that all ranks make the same call before moving data.
    pub validate: bool,
    /// Abort the job when a collective's ranks have not all arrived after this long.
    pub timeout: Option<Duration>,
    /// The most elements a single MPI call moves; larger transfers are split.
    pub chunk_elements: usize,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            validate: cfg!(debug_assertions),
            timeout: Some(DEFAULT_TIMEOUT),
            chunk_elements: DEFAULT_CHUNK_ELEMENTS,
        }
    }
}

impl Guards {
    /// The defaults, overridden by [`VALIDATE_ENV`], [`TIMEOUT_ENV`] and [`CHUNK_ENV`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the variable when a value cannot be read.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`Guards::from_env`], reading variables through `lookup` (testable).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the variable when a value cannot be read.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut guards = Guards::default();
        if let Some(v) = lookup(VALIDATE_ENV) {
            guards.validate = match v.trim() {
                "1" | "true" | "on" => true,
                "0" | "false" | "off" => false,
                other => return Err(bad(VALIDATE_ENV, other, "1 or 0")),
            };
        }
        if let Some(v) = lookup(TIMEOUT_ENV) {
            let secs: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| bad(TIMEOUT_ENV, &v, "a number of seconds, 0 for none"))?;
            guards.timeout = (secs > 0.0).then(|| Duration::from_secs_f64(secs));
        }
        if let Some(v) = lookup(CHUNK_ENV) {
            guards.chunk_elements = v
                .trim()
                .parse()
                .ok()
                .filter(|&n: &usize| (1..=i32::MAX as usize).contains(&n))
                .ok_or_else(|| bad(CHUNK_ENV, &v, "a count from 1 to 2147483647"))?;
        }
        Ok(guards)
    }

    /// Whether collectives run the arrival handshake (validation or a timeout needs it).
    pub fn handshake(&self) -> bool {
        self.validate || self.timeout.is_some()
    }
}

fn bad(name: &'static str, value: &str, want: &str) -> Error {
    Error::invalid(
        "mpi",
        name,
        format!("environment variable {name}={value:?} is not {want}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn defaults_follow_the_build_and_deepspeed() {
        let g = Guards::from_lookup(lookup(&[])).expect("defaults");
        assert_eq!(g.validate, cfg!(debug_assertions));
        assert_eq!(g.timeout, Some(Duration::from_secs(1800)));
        assert_eq!(g.chunk_elements, 1 << 22);
        assert!(g.handshake());
    }

    #[test]
    fn variables_override_the_defaults() {
        let g = Guards::from_lookup(lookup(&[
            (VALIDATE_ENV, "0"),
            (TIMEOUT_ENV, "0"),
            (CHUNK_ENV, "1000"),
        ]))
        .expect("valid");
        assert_eq!(
            g,
            Guards {
                validate: false,
                timeout: None,
                chunk_elements: 1000
            }
        );
        assert!(!g.handshake());
        let g = Guards::from_lookup(lookup(&[(VALIDATE_ENV, "1"), (TIMEOUT_ENV, "2.5")]))
            .expect("valid");
        assert!(g.validate);
        assert_eq!(g.timeout, Some(Duration::from_millis(2500)));
    }

    #[test]
    fn unreadable_values_name_the_variable() {
        for (name, value) in [
            (VALIDATE_ENV, "maybe"),
            (TIMEOUT_ENV, "-1"),
            (TIMEOUT_ENV, "soon"),
            (CHUNK_ENV, "0"),
            (CHUNK_ENV, "4294967296"),
        ] {
            let e = Guards::from_lookup(lookup(&[(name, value)]))
                .expect_err("must be refused")
                .to_string();
            assert!(e.contains(name) && e.contains(value), "{e}");
        }
    }
}
