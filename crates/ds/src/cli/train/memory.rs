//! Refusing a model that cannot fit before allocating it.

/// Bytes a training run needs on one rank, roughly: its model states (`model_states`, exact
/// for the ZeRO stage and world size: ds-zero's `estimate::model_states`) plus the activations
/// one micro-batch keeps for backward (about 24 values per token per layer and width, and the
/// attention and logits rows).
pub fn estimate_bytes(
    model_states: u64,
    dtype_bytes: usize,
    tokens: usize,
    layers: usize,
    dim: usize,
    context: usize,
    vocab: usize,
) -> u128 {
    let p = u128::from(model_states);
    let per_token = (24 * layers * dim + 4 * context + 3 * vocab) as u128 * dtype_bytes as u128;
    p + tokens as u128 * per_token
}

/// The memory this machine can give a new allocation (the CPU backend's reading of
/// `MemAvailable`), when it can be read.
pub fn host_available() -> Option<u128> {
    let bytes = ds_core::cpu::available_memory();
    (bytes != u64::MAX).then_some(u128::from(bytes))
}

/// An error when `need` bytes exceed `available`, saying what to change.
pub fn check_fits(need: u128, available: Option<u128>, device: &str) -> Result<(), String> {
    let gib = |b: u128| b as f64 / (1u64 << 30) as f64;
    match available {
        Some(have) if need > have => Err(format!(
            "the model needs about {:.1} GiB to train but {device} has {:.1} GiB available: use \
             a smaller --dim, --layers or --context, or a larger machine",
            gib(need),
            gib(have)
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_too_large_is_refused_with_what_to_change() {
        // 10B parameters in fp32 at stage 0: 160 GB for weights, gradients and Adam's moments.
        let need = estimate_bytes(160_000_000_000, 4, 0, 1, 1, 1, 1);
        assert_eq!(need, 160_000_000_000);
        let e = check_fits(need, Some(16 << 30), "the CPU").expect_err("too large");
        assert!(
            e.contains("149.0 GiB") && e.contains("16.0 GiB") && e.contains("--dim"),
            "{e}"
        );
        assert!(check_fits(1 << 20, Some(16 << 30), "the CPU").is_ok());
        assert!(check_fits(need, None, "the CPU").is_ok());
    }
}
