//! ds-core: the contract every ds backend implements, and the CPU backend.
//!
//! Everything above this crate (the engine, ZeRO, the layers) is written against three
//! things defined here:
//!
//! - [`Backend`]: what a device must provide (memory, `sync`, and the kernel families in
//!   [`kernels`]), written as a few small traits so a vendor implements exactly the raw
//!   operations and nothing else;
//! - [`Device`]: the checked front door over any backend. Every public operation validates its
//!   arguments once, here, for all backends, and names the offending argument in the error;
//!   backends receive a [`Validated`] token proving it happened and may rely on it;
//! - [`Collectives`]: data-parallel communication over backend buffers, with a single-rank and
//!   an in-process threaded implementation here (MPI, NCCL and RCCL live in their crates).
//!
//! The CPU backend ([`cpu::CpuBackend`]) is always compiled and is the default.
//!
//! ```
//! use ds_core::cpu::CpuBackend;
//! use ds_core::kernels::AdamArgs;
//! use ds_core::params::AdamParams;
//! use ds_core::{BufferExt, DType, Device};
//!
//! let dev = Device::new(CpuBackend::new()?);
//! let mut p = dev.alloc_from(&vec![1.0f32; 1024])?;
//! let g = dev.alloc_from(&vec![0.1f32; 1024])?;
//! let (mut m, mut v) = (dev.alloc(DType::F32, 1024)?, dev.alloc(DType::F32, 1024)?);
//! let mut p16 = dev.alloc(DType::BF16, 1024)?;
//! dev.adam_step(&AdamParams { weight_decay: 0.01, ..AdamParams::default() }, AdamArgs {
//!     param: p.all_mut(), grad: g.all(), exp_avg: m.all_mut(), exp_avg_sq: v.all_mut(),
//!     param_copy: Some(p16.all_mut()),
//! })?;
//! // Bad input is an error naming the argument, never a panic:
//! assert_eq!(dev.axpy(1.0, g.range(0..10), p.all_mut()).unwrap_err().argument(), Some("y"));
//! # Ok::<(), ds_core::Error>(())
//! ```

pub mod collectives;
pub mod cpu;
mod device;
pub mod dtype;
pub mod error;
pub mod id_groups;
pub mod info;
pub mod kernel;
pub mod kernels;
pub mod memory;
pub mod params;
pub mod pool;
pub mod slice;
mod validate;

pub use collectives::{Collectives, ReduceOp, SingleRank};
pub use device::Device;
pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use info::{Capabilities, DeviceInfo, KernelFamily};
pub use kernel::Kernel;
pub use kernels::{Backend, Memory, Validated};
pub use memory::MemoryStats;
pub use slice::{BufferExt, DeviceBuffer, Slice, SliceMut};

/// Re-exported so users name the same 16-bit types the kernels store.
pub use half::{bf16, f16};
