//! Which vector instruction set the CPU kernels run: each hot loop is compiled three times
//! (baseline x86-64 / other architectures, AVX2+FMA, AVX-512) by [`vectorized!`] (the bf16
//! GEMM has two more kernels, AVX512-BF16 and AMX), and every call
//! runs the version of [`active`], the widest the processor has unless `DS_CPU_ISA` (or
//! [`force`], for tests) picks a narrower one. So one binary is fast on new processors, runs on
//! old ones, and each path can be tested on a machine that has a wider one.
//!
//! Why not the `multiversion` crate alone: its dispatch cannot be overridden, so an AVX-512
//! machine would never run (or test) the AVX2 path users on Zen 3 get.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU8, Ordering};

/// The environment variable that caps the instruction set (`baseline`, `avx2`, `avx512`,
/// `avx512bf16`, `amx`).
pub const ISA_ENV: &str = "DS_CPU_ISA";

/// A vector instruction set the CPU kernels are compiled for, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// The target's baseline (SSE2 on x86-64; NEON on aarch64).
    Baseline,
    /// AVX2 with FMA (x86-64, e.g. AMD Zen 3, Intel Haswell and later).
    Avx2,
    /// AVX-512 F/BW/VL with FMA (x86-64, e.g. AMD Zen 4/5, Intel Skylake-SP and later).
    Avx512,
    /// AVX-512 plus AVX512-BF16's dot products (AMD Zen 4/5, Intel Cooper Lake, Sapphire
    /// Rapids and later): the bf16 GEMM multiplies bf16 directly instead of widening to f32.
    Avx512Bf16,
    /// AVX512-BF16 plus AMX-BF16's tile multiply (Intel Sapphire Rapids and later): the bf16
    /// GEMM runs on the tile registers, 16 x 16 f32 results per instruction.
    Amx,
}

impl Isa {
    /// Every instruction set, narrowest first.
    pub const ALL: [Isa; 5] = [
        Isa::Baseline,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Bf16,
        Isa::Amx,
    ];

    /// The name `DS_CPU_ISA` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Baseline => "baseline",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::Amx => "amx",
        }
    }

    /// Whether this processor runs it.
    pub fn available(self) -> bool {
        match self {
            Isa::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.available()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 => {
                Isa::Avx512.available() && std::arch::is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => Isa::Avx512Bf16.available() && amx_usable(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The widest instruction set this processor runs.
    pub fn best() -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|i| i.available())
            .unwrap_or(Isa::Baseline)
    }

    /// Every instruction set this processor runs, narrowest first.
    pub fn available_all() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.available()).collect()
    }

    /// Parses a `DS_CPU_ISA` value, checking the processor runs it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the value and what this processor offers.
    pub fn parse(value: &str) -> Result<Isa> {
        let offered = || {
            Isa::available_all()
                .iter()
                .map(|i| i.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let isa = Isa::ALL
            .into_iter()
            .find(|i| i.name() == value.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                Error::invalid(
                    "cpu instruction set",
                    ISA_ENV,
                    format!("`{value}` is none of baseline, avx2, avx512, avx512bf16, amx"),
                )
            })?;
        if !isa.available() {
            return Err(Error::invalid(
                "cpu instruction set",
                ISA_ENV,
                format!(
                    "this processor cannot run `{value}` (it offers {})",
                    offered()
                ),
            ));
        }
        Ok(isa)
    }
}

/// Whether the processor has AMX-BF16 and the operating system lets this process use the tile
/// registers. Linux keeps their 8 KiB of state off until a process asks for it
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`; a tile instruction before that is
/// SIGILL), so the first call asks, once per process; the grant lasts for the process and every
/// thread. Other systems report no AMX here, so their bf16 GEMM uses AVX512-BF16.
#[cfg(target_arch = "x86_64")]
fn amx_usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| {
        // CPUID leaf 7, sub-leaf 0, EDX: bit 22 AMX-BF16, bit 24 AMX-TILE.
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let has_tiles = leaf7.edx >> 22 & 1 == 1 && leaf7.edx >> 24 & 1 == 1;
        has_tiles && request_tile_state()
    })
}

/// Asks Linux for the tile data state (true when granted; the kernel refuses where the
/// processor or the kernel lacks it).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM takes two integers and touches no memory of
    // ours; an unsupported request returns an error code.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn request_tile_state() -> bool {
    false
}

/// 0: not chosen yet; otherwise 1 + the index in [`Isa::ALL`].
static ACTIVE: AtomicU8 = AtomicU8::new(0);

fn encode(isa: Isa) -> u8 {
    isa as u8 + 1
}

/// Makes `isa` the active set unless one was chosen already; returns the one in force.
fn choose_once(isa: Isa) -> Isa {
    let _ = ACTIVE.compare_exchange(0, encode(isa), Ordering::Relaxed, Ordering::Relaxed);
    Isa::ALL[usize::from(ACTIVE.load(Ordering::Relaxed) - 1)]
}

/// Chooses the instruction set from `DS_CPU_ISA` (the widest available when unset), once per
/// process; [`crate::cpu::CpuBackend::new`] calls it so a bad value is an error there.
///
/// # Errors
/// As [`Isa::parse`].
pub fn init_from_env() -> Result<Isa> {
    let isa = match std::env::var(ISA_ENV) {
        Ok(v) if !v.trim().is_empty() => Isa::parse(&v)?,
        _ => Isa::best(),
    };
    Ok(choose_once(isa))
}

/// Makes every CPU kernel run `isa` from now on (process-wide; for tests and benchmarks).
///
/// # Errors
/// [`Error::InvalidArgument`] when the processor cannot run it.
pub fn force(isa: Isa) -> Result<()> {
    if !isa.available() {
        return Err(Error::invalid(
            "cpu instruction set",
            "isa",
            format!("this processor cannot run `{}`", isa.name()),
        ));
    }
    ACTIVE.store(encode(isa), Ordering::Relaxed);
    Ok(())
}

/// The instruction set the kernels run now.
pub fn active() -> Isa {
    match ACTIVE.load(Ordering::Relaxed) {
        0 => choose_once(Isa::best()),
        n => Isa::ALL[usize::from(n - 1)],
    }
}

/// Defines a function whose body is compiled for each [`Isa`] and dispatched on
/// [`active`] at every call. The body must be safe code over its arguments (plain loops the
/// compiler vectorizes); type parameters take at most one bound each (`F: Fn(&[f32])`), and
/// loops should index slices rather than chain iterator adaptors, which LLVM may leave
/// un-inlined, i.e. compiled for the baseline.
macro_rules! vectorized {
    ($(#[$meta:meta])* $vis:vis fn $name:ident $(<$($g:ident $(: $b:path)?),*>)?
        ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name $(<$($g $(: $b)?),*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body $(<$($g $(: $b)?),*>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
            fn avx512 $(<$($g $(: $b)?),*>)? ($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2 $(<$($g $(: $b)?),*>)? ($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }
            match $crate::cpu::isa::active() {
                #[cfg(target_arch = "x86_64")]
                $crate::cpu::isa::Isa::Avx512
                | $crate::cpu::isa::Isa::Avx512Bf16
                | $crate::cpu::isa::Isa::Amx => {
                    // SAFETY: `active` only returns an instruction set the processor runs
                    // (`Isa::available`), and each of these includes AVX-512F/BW/VL, AVX2 and
                    // FMA, which is what these target features require.
                    unsafe { avx512($($arg),*) }
                }
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `active` returns Avx2 only where the processor runs AVX2 and FMA.
                $crate::cpu::isa::Isa::Avx2 => unsafe { avx2($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}
pub(crate) use vectorized;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_or_unavailable_values_are_named_errors() {
        for isa in Isa::available_all() {
            assert_eq!(Isa::parse(isa.name()).expect("available"), isa);
        }
        let e = Isa::parse("sse9").expect_err("unknown").to_string();
        assert!(e.contains("DS_CPU_ISA") && e.contains("sse9"), "{e}");
        if !Isa::Avx512.available() {
            let e = Isa::parse("avx512").expect_err("unavailable").to_string();
            assert!(e.contains("cannot run"), "{e}");
            assert!(force(Isa::Avx512).is_err());
        }
        assert_eq!(Isa::parse(" AVX2 ").is_ok(), Isa::Avx2.available());
    }
}
