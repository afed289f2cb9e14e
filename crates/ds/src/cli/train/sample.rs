//! Text from the trained GPT: temperature sampling, one token at a time over a sliding window
//! of the context length.

use ds_core::{Backend, DType, Device, Result};
use ds_nn::{Gpt, GptConfig};
use ds_zero::data::splitmix;
use ds_zero::model::{ParamTable, Params, Slot};

/// Generates `count` tokens after `prompt` with the parameters `named` (the engine's, in the
/// model's order), sampling at `temperature` from a stream seeded with `seed`.
///
/// # Errors
/// Kernel and allocation errors.
pub fn generate<B: Backend>(
    dev: &Device<B>,
    config: GptConfig,
    named: &[(String, Vec<f32>)],
    prompt: &[i32],
    count: usize,
    temperature: f32,
    seed: u64,
) -> Result<Vec<i32>> {
    let mut gpt = Gpt::<B>::new(config, DType::F32)?;
    let table = ParamTable::of::<B, _>(&gpt)?;
    let slots = Slot::packed(table.specs());
    let flat: Vec<f32> = named.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    let buf = dev.alloc_from(&flat)?;
    let mut params = Params::flat(&buf, &slots, &table);
    let mut tokens = prompt.to_vec();
    let mut state = seed;
    for _ in 0..count {
        let start = tokens.len().saturating_sub(config.context);
        let mut window = tokens[start..].to_vec();
        let rows = window.len();
        window.push(0); // a target the forward needs; its loss is ignored
        let logits = gpt.logits(dev, &mut params, &[window])?;
        let last = &logits[(rows - 1) * config.vocab..rows * config.vocab];
        let max = last.iter().copied().fold(f32::MIN, f32::max);
        let weights: Vec<f64> = last
            .iter()
            .map(|&l| f64::from((l - max) / temperature.max(1e-3)).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut pick = (splitmix(&mut state) >> 11) as f64 / (1u64 << 53) as f64 * total;
        let mut next = weights.len() - 1;
        for (i, w) in weights.iter().enumerate() {
            if pick < *w {
                next = i;
                break;
            }
            pick -= w;
        }
        tokens.push(next as i32);
    }
    Ok(tokens[prompt.len()..].to_vec())
}
