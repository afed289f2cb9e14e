//! The batch triple: `train_batch_size = train_micro_batch_size_per_gpu *
//! gradient_accumulation_steps * world_size`, DeepSpeed's derivation rules.
//!
//! - all three given: they must agree;
//! - two given: the third is derived, and must come out a whole positive number;
//! - only `train_batch_size`: accumulation 1, micro-batch `train / world`;
//! - only `train_micro_batch_size_per_gpu`: accumulation 1, train `micro * world`;
//! - neither batch size: an error.

use super::ConfigError;
use super::json::Obj;

/// The resolved batch triple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Samples per optimizer step over all ranks.
    pub train_batch_size: u64,
    /// Samples per forward/backward on one rank.
    pub micro_batch_per_gpu: u64,
    /// Micro-batches accumulated per optimizer step.
    pub gradient_accumulation_steps: u64,
    /// Data-parallel ranks the triple was resolved for.
    pub world_size: u64,
}

fn inconsistent(world: u64, detail: String, fix: String) -> ConfigError {
    ConfigError::invalid(
        "train_batch_size",
        format!(
            "train_batch_size must equal train_micro_batch_size_per_gpu * gradient_accumulation_steps * world_size \
             (world size {world}): {detail}; {fix}"
        ),
    )
}

fn positive(key: &str, v: Option<u64>) -> Result<Option<u64>, ConfigError> {
    match v {
        Some(0) => Err(ConfigError::invalid(key, "must be at least 1")),
        other => Ok(other),
    }
}

/// Derives the triple from whichever keys are present.
pub(super) fn resolve(top: &mut Obj<'_>, world_size: usize) -> Result<Batch, ConfigError> {
    let world = world_size as u64;
    if world == 0 {
        return Err(ConfigError::invalid("world_size", "must be at least 1"));
    }
    let train = positive("train_batch_size", top.u64("train_batch_size")?)?;
    let micro = positive(
        "train_micro_batch_size_per_gpu",
        top.u64("train_micro_batch_size_per_gpu")?,
    )?;
    let gas = positive(
        "gradient_accumulation_steps",
        top.u64("gradient_accumulation_steps")?,
    )?;
    let mul = |parts: &[u64]| {
        parts
            .iter()
            .try_fold(1u64, |acc, &x| acc.checked_mul(x))
            .ok_or_else(|| {
                ConfigError::invalid(
                    "train_batch_size",
                    format!(
                        "the batch sizes multiply past 2^64 over {world} ranks; use realistic sizes"
                    ),
                )
            })
    };
    let (train, micro, gas) = match (train, micro, gas) {
        (Some(t), Some(m), Some(g)) => {
            let mgw = mul(&[m, g, world])?;
            if t != mgw {
                return Err(inconsistent(
                    world,
                    format!("{t} != {m} * {g} * {world} = {}", mgw),
                    format!(
                        "drop gradient_accumulation_steps to derive it, or set train_batch_size to {}",
                        mgw
                    ),
                ));
            }
            (t, m, g)
        }
        (Some(t), Some(m), None) => {
            let mw = mul(&[m, world])?;
            if t % mw != 0 {
                return Err(inconsistent(
                    world,
                    format!("{t} is not a multiple of {m} * {world} = {}", mw),
                    format!("use a train_batch_size that is a multiple of {}", mw),
                ));
            }
            (t, m, t / mw)
        }
        (Some(t), None, Some(g)) => {
            let gw = mul(&[g, world])?;
            if t % gw != 0 {
                return Err(inconsistent(
                    world,
                    format!("{t} is not a multiple of {g} * {world} = {}", gw),
                    format!("use a train_batch_size that is a multiple of {}", gw),
                ));
            }
            (t, t / gw, g)
        }
        (None, Some(m), Some(g)) => (mul(&[m, g, world])?, m, g),
        (Some(t), None, None) => {
            if t % world != 0 {
                return Err(inconsistent(
                    world,
                    format!("{t} does not divide over {world} ranks"),
                    format!("use a train_batch_size that is a multiple of {world}"),
                ));
            }
            (t, t / world, 1)
        }
        (None, Some(m), None) => (mul(&[m, world])?, m, 1),
        (None, None, _) => {
            return Err(ConfigError::invalid(
                "train_batch_size",
                "either train_batch_size or train_micro_batch_size_per_gpu must be given",
            ));
        }
    };
    Ok(Batch {
        train_batch_size: train,
        micro_batch_per_gpu: micro,
        gradient_accumulation_steps: gas,
        world_size: world,
    })
}
