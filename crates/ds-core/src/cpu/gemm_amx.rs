//! bf16 GEMM on AMX tiles (Intel Sapphire Rapids and later): `tdpbf16ps` adds a 16 x 32
//! bf16 tile times a 32 x 16 one (as 16 k-pairs) into a 16 x 16 f32 tile, 8192 multiply-adds
//! per instruction, about twelve times what AVX512-BF16's dot products retire per core (the
//! ratios bench measures both peaks). No crate offers it on stable Rust: `core::arch`'s AMX
//! intrinsics and their feature detection are unstable (`x86_amx_intrinsics`), so the tile
//! instructions are inline assembly and the detection is [`super::isa`]'s CPUID check.
//!
//! The blocking follows [`super::gemm_bf16`]: op(B) is packed once, shared by every thread, as
//! that file's panels of 32 columns with k-pairs interleaved (the tile's operand layout; k
//! padded with zeros to whole tiles of 16 pairs). C's rows are split over the threads; each
//! strip of 32 rows of op(A) is packed as 16 x 32 tiles, and every strip meets every panel in
//! a 2 x 2 block of result tiles (tmm0-3) held over the whole k, with two A tiles (tmm4-5)
//! and two B tiles (tmm6-7) loaded per 32 k. The block's f32 results go through memory once
//! to take `alpha` and `beta` and be rounded to bf16.
//!
//! Like `vdpbf16ps`, the instruction treats subnormal inputs and results as zero and rounds
//! to nearest even; the products of two bf16 are exact in f32.

use super::gemm_avx512::copy_run;
use super::gemm_bf16::{Block, NR, pack_b, store_block};
use super::isa::{self, Isa};
use super::par::{for_chunks, rows_per_task};
use super::scratch::Scratch;
use crate::params::GemmSpec;
use half::bf16;

/// Rows of C per strip: two A tiles of 16 rows.
const MR: usize = 32;
/// Rows of a tile.
const TILE_ROWS: usize = 16;
/// k per tile step (a tile row of A holds 32 bf16, 64 bytes).
const TILE_K: usize = 32;
/// u16 per A tile (16 rows of 32 bf16) and per tile step of a packed B panel (16 pairs x 32
/// columns x 2).
const A_TILE: usize = TILE_ROWS * TILE_K;
const B_STEP: usize = (TILE_K / 2) * NR * 2;

/// Whether the AMX kernel runs (the processor and the OS allow it and `DS_CPU_ISA` does too).
pub(super) fn available() -> bool {
    isa::active() >= Isa::Amx
}

/// Packs rows `i0 .. i0 + live` of op(A) (`live <= MR`) as `steps` tile steps of two 16 x 32
/// tiles (rows 0-15, then 16-31), zero beyond k and the live rows.
fn pack_a(spec: &GemmSpec, a: &[u16], i0: usize, live: usize, steps: usize, out: &mut [u16]) {
    let (m, k) = (spec.m, spec.k);
    if live < MR || k < steps * TILE_K {
        out.fill(0);
    }
    // Element (row r, depth kk) of the strip.
    let at = |r: usize, kk: usize| {
        (kk / TILE_K * 2 + r / TILE_ROWS) * A_TILE + r % TILE_ROWS * TILE_K + kk % TILE_K
    };
    if spec.trans_a {
        for kk in 0..k {
            let src = &a[kk * m + i0..][..live];
            for (r, &v) in src.iter().enumerate() {
                out[at(r, kk)] = v;
            }
        }
    } else {
        for r in 0..live {
            let row = &a[(i0 + r) * k..][..k];
            for (step, src) in row.chunks(TILE_K).enumerate() {
                let start = at(r, step * TILE_K);
                copy_run(&mut out[start..start + src.len()], src);
            }
        }
    }
}

/// The 64-byte tile configuration `ldtilecfg` reads: palette 1, all eight tiles 16 rows of
/// 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn all_full() -> TileConfig {
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        for t in 0..8 {
            // Bytes 16..32: each tile's bytes per row (u16, little-endian); 48..56: its rows.
            cfg[16 + 2 * t] = 64;
            cfg[48 + t] = TILE_ROWS as u8;
        }
        TileConfig(cfg)
    }
}

/// The tile registers configured on this thread for as long as it lives (not `Send`: the
/// configuration is the thread's); released on drop, so the OS need not save their state at
/// every switch afterwards.
struct Tiles(std::marker::PhantomData<*const ()>);

impl Tiles {
    /// # Safety
    /// The processor must have AMX and the OS must have granted it ([`available`]).
    unsafe fn configure() -> Tiles {
        let cfg = TileConfig::all_full();
        // SAFETY: `cfg` is 64 readable bytes of a valid palette-1 configuration; AMX is usable
        // (the caller's contract).
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly))
        };
        Tiles(std::marker::PhantomData)
    }

    /// `out (32 x 32 f32, row stride 32) = A_strip B_panel` over `steps` tile steps: `a`
    /// holds the strip's `steps` pairs of A tiles, `b` the panel's `steps` steps of 16
    /// interleaved pairs of 32 columns.
    fn block(&self, steps: usize, a: &[u16], b: &[u16], out: &mut [f32; MR * NR]) {
        assert!(
            a.len() >= steps * 2 * A_TILE && b.len() >= steps * B_STEP,
            "AMX GEMM strip or panel shorter than its k (a bug in this file)"
        );
        // SAFETY: `self` proves the tiles are configured on this thread (16 rows of 64 bytes
        // each); the compiler never allocates tile registers, so tmm0-7 keep our values
        // between these blocks. Zeroing touches no memory.
        unsafe {
            std::arch::asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            )
        };
        for step in 0..steps {
            let (a_at, b_at) = (a[step * 2 * A_TILE..].as_ptr(), b[step * B_STEP..].as_ptr());
            // SAFETY: each A tile is 16 rows of 64 bytes at stride 64 (1 KiB at a_at, then
            // at a_at + 1024 bytes); the B tiles are 16 rows of 64 bytes at stride 128 (one
            // packed pair row of 32 columns), at b_at and b_at + 64 bytes: all inside `a` and
            // `b` (asserted above). Reads only.
            unsafe {
                std::arch::asm!(
                    "tileloadd tmm4, [{a} + {s64}*1]",
                    "tileloadd tmm6, [{b} + {s128}*1]",
                    "tileloadd tmm7, [{b} + {s128}*1 + 64]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tileloadd tmm5, [{a} + {s64}*1 + 1024]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a = in(reg) a_at,
                    b = in(reg) b_at,
                    s64 = in(reg) 64usize,
                    s128 = in(reg) 128usize,
                    options(nostack, readonly)
                )
            };
        }
        let top = out.as_mut_ptr();
        // SAFETY: `out` is 32 rows of 32 f32 (128 bytes): the four 16 x 16 result tiles go to
        // rows 0-15 / 16-31 at columns 0-15 / 16-31, at stride 128 bytes, inside it.
        unsafe {
            std::arch::asm!(
                "tilestored [{top} + {s}*1], tmm0",
                "tilestored [{top} + {s}*1 + 64], tmm1",
                "tilestored [{bottom} + {s}*1], tmm2",
                "tilestored [{bottom} + {s}*1 + 64], tmm3",
                top = in(reg) top,
                bottom = in(reg) top.add(TILE_ROWS * NR),
                s = in(reg) 128usize,
                options(nostack)
            )
        };
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured on this thread by `configure`; releasing them
        // returns the tile state to its initial (unconfigured) one.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// `C = alpha op(A) op(B) + beta C` for one batch entry (`a`, `b`, `c` start at its matrices
/// and hold them whole; `m, n, k > 0`): op(B) packed once, C's rows split over the current
/// thread pool when `parallel`.
///
/// Only call when [`available`] says the processor and the OS run AMX.
pub(super) fn gemm_entry(spec: &GemmSpec, a: &[u16], b: &[u16], c: &mut [bf16], parallel: bool) {
    let (m, n) = (spec.m, spec.n);
    let steps = spec.k.div_ceil(TILE_K);
    let panel_len = steps * B_STEP;
    // Every element of the packed operands is written by the packing (zeros included), so
    // reused scratch needs no clearing.
    let mut b_scratch = Scratch::new();
    // Scratch slices start on a cache line: a tile row that straddles two loads at half speed.
    let packed_b = b_scratch.slice::<u16>(n.div_ceil(NR) * panel_len);
    pack_b(
        spec,
        b,
        (spec.k.div_ceil(2), steps * TILE_K / 2),
        packed_b,
        parallel,
    );
    let packed_b = &*packed_b;
    let task_rows = rows_per_task(m, MR, 4, parallel);
    let strip_len = steps * 2 * A_TILE;
    let run = |a_scratch: &mut Scratch, blk: usize, c_rows: &mut [bf16]| {
        let i_start = blk * task_rows;
        let rows = c_rows.len() / n;
        let strips = rows.div_ceil(MR);
        let packed_a = a_scratch.slice::<u16>(strips * strip_len);
        for (s, strip) in packed_a.chunks_exact_mut(strip_len).enumerate() {
            let live = MR.min(rows - s * MR);
            pack_a(spec, a, i_start + s * MR, live, steps, strip);
        }
        let mut results = [0f32; MR * NR];
        // SAFETY: `gemm_entry`'s contract: AMX is available.
        let tiles = unsafe { Tiles::configure() };
        for (panel, b_panel) in packed_b.chunks_exact(panel_len).enumerate() {
            let (j0, cols) = (panel * NR, NR.min(n - panel * NR));
            for (s, a_strip) in packed_a.chunks_exact(strip_len).enumerate() {
                let live = MR.min(rows - s * MR);
                tiles.block(steps, a_strip, b_panel, &mut results);
                let block = Block {
                    rows: live,
                    cols,
                    stride: NR,
                };
                store_block(&results, block, spec, &mut c_rows[s * MR * n + j0..], n);
            }
        }
    };
    for_chunks(&mut c[..m * n], task_rows * n, parallel, Scratch::new, run);
}
