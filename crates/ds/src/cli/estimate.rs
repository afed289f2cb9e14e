//! `ds estimate --params N [--world-size W] [--config FILE]`: model-state bytes per rank at
//! ZeRO stages 0-3, computed by the layout code the engine allocates with (DeepSpeed's
//! `estimate_zero3_model_states_mem_needs`, but exact for ds: bucket padding included).

use ds_zero::config::Config;
use ds_zero::estimate::model_states;
use ds_zero::model::{ParamGroup, ParamSpec, ParamTable};

/// DeepSpeed's usual case when no config is given: fp16 with AdamW.
const DEFAULT_CONFIG: &str = r#"{"train_micro_batch_size_per_gpu": 1, "fp16": {"enabled": true},
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}}}"#;

/// The table for `params` parameters on `world` ranks with the precision, optimizer and ZeRO
/// settings of `config` (a config file's text; fp16 with AdamW when `None`).
///
/// # Errors
/// A message for a zero parameter count or world size, or an invalid config.
pub fn estimate(params: u64, world: usize, config: Option<&str>) -> Result<String, String> {
    if params == 0 || world == 0 {
        return Err("--params and --world-size must be at least 1".into());
    }
    let text = config.unwrap_or(DEFAULT_CONFIG);
    let config = Config::parse(text, world).map_err(|e| format!("config: {e}"))?;
    let n = usize::try_from(params)
        .map_err(|_| format!("{params} parameters do not fit this machine's usize"))?;
    // One tensor of N elements in one group: what a model of N parameters is to the layout,
    // up to the padding of its buckets (at most 16 x world elements each).
    let table = ParamTable::new(
        vec![ParamSpec::new("params", &[n])],
        vec![ParamGroup::new("model", 0..1)],
    )
    .map_err(|e| e.to_string())?;
    let optimizer = config
        .optimizer
        .as_ref()
        .map_or("no optimizer".to_string(), |o| o.name.clone());
    let mut out = format!(
        "model states per rank for {params} parameters on {world} rank(s), {} with {optimizer}\n\
         (parameters, gradients, fp32 master weights and optimizer moments; activations and\n\
         communication buffers come on top)\n\n\
         stage  parameters        gradients         optimizer         total             bytes/param  host (offload)  nvme\n",
        config.precision.dtype()
    );
    let rows = |config: &Config, stages: std::ops::RangeInclusive<u8>, out: &mut String| {
        for stage in stages {
            let m = model_states(config, &table, world, stage);
            out.push_str(&format!(
                "{stage:<6} {:<17} {:<17} {:<17} {:<17} {:<12.3} {:<15} {}\n",
                m.params,
                m.grads,
                m.optimizer,
                m.total(),
                m.total() as f64 / params as f64,
                m.host_total(),
                m.nvme
            ));
        }
    };
    rows(&config, 0..=3, &mut out);
    if config.zero.offload_optimizer.is_none() {
        // What offloading the optimizer state would leave on the device, and put on the host.
        let mut offloaded = config.clone();
        offloaded.zero.offload_optimizer = Some(ds_zero::config::OffloadConfig::defaults(
            ds_zero::config::OffloadKind::Optimizer,
            "cpu",
        ));
        out.push_str(
            "\nwith offload_optimizer: {\"device\": \"cpu\"} (device columns; host last)\n",
        );
        rows(&offloaded, 1..=3, &mut out);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_follows_zeros_formulas_for_16_bit_adam() {
        // 1,600,000 parameters on 4 ranks: a multiple of 16 x 4, so no padding at all.
        let psi = 1_600_000u64;
        let out = estimate(psi, 4, None).expect("estimate");
        let row = |stage: u8| -> Vec<u64> {
            out.lines()
                .find(|l| l.starts_with(&format!("{stage} ")))
                .expect("row")
                .split_whitespace()
                .skip(1)
                .take(4)
                .map(|v| v.parse().expect("number"))
                .collect()
        };
        assert_eq!(row(0), [2 * psi, 2 * psi, 12 * psi, 16 * psi]);
        assert_eq!(row(1)[3], 4 * psi + 12 * psi / 4);
        assert_eq!(row(2)[3], 2 * psi + 14 * psi / 4);
        assert_eq!(
            row(3),
            [2 * psi / 4, 2 * psi / 4, 12 * psi / 4, 16 * psi / 4]
        );
        // Offloaded: the device keeps the parameters (and stage 1's whole gradient); the host
        // 12Ψ/N of optimizer state and the 2Ψ/N gradient partition.
        let offloaded = out
            .lines()
            .skip_while(|l| !l.starts_with("with offload_optimizer"))
            .find(|l| l.starts_with("2 "))
            .expect("offload row");
        let cols: Vec<u64> = offloaded
            .split_whitespace()
            .map(|v| v.parse::<f64>().expect("number") as u64)
            .collect();
        assert_eq!(cols[4], 2 * psi, "{offloaded}");
        assert_eq!(cols[6], 14 * psi / 4, "{offloaded}");
        assert!(estimate(0, 4, None).is_err());
        assert!(
            estimate(10, 4, Some("{"))
                .expect_err("bad config")
                .contains("config")
        );
    }
}
