//! ds-zero: the training engine (not built yet).
//!
//! This crate will hold DeepSpeed's training contract for ds, generic over any
//! [`ds_core::Backend`] and [`ds_core::Collectives`]: the DeepSpeed JSON config with its
//! strict schema, `initialize` -> `forward` / `backward` / `step`, fp16 dynamic loss scaling and
//! bf16, the fused optimizers driven from ds-core's kernels, LR schedules, gradient
//! accumulation and clipping, ZeRO stages 0-3, CPU offload and checkpoints. It is filled by the
//! engine issue; until then it exports nothing, so nothing can mistake it for working code.
