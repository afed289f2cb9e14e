//! WGSL generation: one kernel body, many storage layouts.
//!
//! A kernel body (in `ops/`) is written once against helper functions: `ld_x(i)` / `st_x(i, v)`
//! load and store element `i` of binding `x` as f32, `ldi_x(i)` loads an i32, `ldr_x` / `str_x`
//! move raw element bits, `raise_x()` sets a flag, and `p_name()` reads a scalar parameter.
//! This module writes those helpers for the storage each binding has on this adapter:
//!
//! - f32: `array<f32>`.
//! - f16 with the adapter's `SHADER_F16`: `array<f16>`, converted with `f32()` on load; a store
//!   rounds by bits first, so the `f16()` conversion only ever sees a value it represents
//!   exactly (naga cannot bitcast a u32 into two halves).
//! - f16 without it, and bf16 everywhere: two halves per `u32` word. Loads shift and mask;
//!   stores of one half go through `atomicAnd`/`atomicOr` on the word, so two invocations
//!   storing the two halves of one word never lose each other's half.
//!
//! Float conversions are done with integer bit operations, not `pack2x16float` or `f16()`
//! casts: WGSL leaves their rounding (and subnormal handling) to the implementation, and ds's
//! contract is round-to-nearest-even, bit for bit the same as the CPU backend.
//! Finiteness and NaN tests also look at bits, because WGSL lets a compiler assume that
//! floating-point values are finite.

use std::fmt::Write;

/// Workgroup size of every kernel (a power of two; row kernels reduce across it).
pub(crate) const WG: u32 = 256;
/// Elements each invocation of a segment reduction folds (strided by the workgroup size):
/// one workgroup covers `FOLD * WG` elements.
pub(crate) const FOLD: u32 = 16;

/// How one binding is stored and accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Store {
    /// `array<f32>`.
    F32,
    /// `array<f16>` (needs `SHADER_F16`).
    F16Native,
    /// f16 bits, two per word.
    F16Packed,
    /// bf16 bits, two per word.
    Bf16,
    /// `array<i32>` (ids, labels).
    I32,
    /// Raw 4-byte elements.
    Raw32,
    /// Raw 2-byte elements, two per word.
    Raw16,
    /// Raw bytes, four per word.
    Raw8,
    /// A found-inf flag stored as f32 1.0.
    FlagF32,
    /// A found-inf flag stored as byte 1.
    FlagU8,
    /// An optional binding that is not there: helpers that load 0 and store nothing.
    Absent,
}

impl Store {
    /// Bytes per element.
    pub(crate) fn elem_bytes(self) -> usize {
        match self {
            Store::F32 | Store::I32 | Store::Raw32 | Store::FlagF32 => 4,
            Store::F16Native | Store::F16Packed | Store::Bf16 | Store::Raw16 => 2,
            Store::Raw8 | Store::FlagU8 => 1,
            Store::Absent => 4,
        }
    }

    fn short(self) -> &'static str {
        match self {
            Store::F32 => "f",
            Store::F16Native => "h",
            Store::F16Packed => "hp",
            Store::Bf16 => "b",
            Store::I32 => "i",
            Store::Raw32 => "r4",
            Store::Raw16 => "r2",
            Store::Raw8 => "r1",
            Store::FlagF32 => "ff",
            Store::FlagU8 => "f1",
            Store::Absent => "_",
        }
    }
}

/// The type of a scalar parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ParamType {
    U32,
    F32,
    I32,
}

/// Everything that decides a kernel's WGSL text: its body, bindings and parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Signature {
    /// The kernel's name (for errors and the cache key).
    pub name: &'static str,
    /// (name, storage, writable) per binding, in binding order.
    pub binds: Vec<(&'static str, Store, bool)>,
    /// (name, type) per scalar parameter, after the binding offsets.
    pub params: Vec<(&'static str, ParamType)>,
    /// Elements each invocation handles (`kernel` is called this many times, the calls'
    /// indices a workgroup apart); 1 for row and reduction kernels.
    pub unroll: u32,
}

impl Signature {
    /// The cache key: the name and every storage choice.
    pub(crate) fn key(&self) -> String {
        let mut k = format!("{}x{}", self.name, self.unroll);
        for (n, s, w) in &self.binds {
            let _ = write!(k, ":{n}={}{}", s.short(), if *w { "w" } else { "" });
        }
        k
    }
}

/// The parameter words a launch carries: one element offset per binding, then `n` and
/// `base` (pointwise launches), then the kernel's own.
pub(crate) const MAX_PARAM_WORDS: usize = 64;

/// The conversions and tests every kernel may use.
const COMMON: &str = r"
fn f16_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let ex = (h >> 10u) & 0x1fu;
    let mant = h & 0x3ffu;
    if (ex == 0u) {
        let v = f32(mant) * 5.9604644775390625e-8;
        return bitcast<f32>(bitcast<u32>(v) | sign);
    }
    if (ex == 31u) {
        return bitcast<f32>(sign | 0x7f800000u | (mant << 13u));
    }
    return bitcast<f32>(sign | ((ex + 112u) << 23u) | (mant << 13u));
}

fn f32_to_f16(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return sign | 0x7e00u;
    }
    if (a >= 0x477ff000u) {
        return sign | 0x7c00u;
    }
    if (a < 0x38800000u) {
        // A subnormal half (or zero): scale by 2^24 exactly, round half to even.
        let v = bitcast<f32>(a) * 16777216.0;
        return sign | u32(round(v));
    }
    let r = a - 0x38000000u + 0x0fffu + ((a >> 13u) & 1u);
    return sign | (r >> 13u);
}

fn bf16_to_f32(h: u32) -> f32 {
    return bitcast<f32>(h << 16u);
}

fn f32_to_bf16(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return (b >> 16u) | 0x40u;
    }
    return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}

fn is_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

fn nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

fn neg_inf() -> f32 {
    return bitcast<f32>(0xff800000u);
}

// The larger of two values, NaN winning.
fn max_nan(a: f32, b: f32) -> f32 {
    if (is_nan(a)) {
        return a;
    }
    if (is_nan(b)) {
        return b;
    }
    return max(a, b);
}

// Segment reductions: workgroup wg of a piece folds elements [segment_first(wg), + FOLD * WG)
// and writes its partial to slot segment_slot(wg) if segment_live(wg) (the grid may hold more
// workgroups than the piece has segments).
fn segment_first(wg: u32) -> u32 {
    return wg * WG * FOLD;
}

fn segment_live(wg: u32) -> bool {
    return wg < (p_n() + WG * FOLD - 1u) / (WG * FOLD);
}

fn segment_slot(wg: u32) -> u32 {
    return p_base() / (WG * FOLD) + wg;
}

// Workgroup-wide sum and maximum (NaN winning) of one value per invocation; every invocation
// gets the result. Call from uniform control flow.
var<workgroup> red: array<f32, WG>;

fn wg_sum(v: f32, li: u32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (li < s) {
            red[li] = red[li] + red[li + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn wg_max(v: f32, li: u32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (li < s) {
            red[li] = max_nan(red[li], red[li + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}
";

/// Writes the WGSL module for `sig` with `body` (which defines `fn kernel(gi, wg, li)`).
pub(crate) fn module(sig: &Signature, body: &str) -> String {
    let mut s = String::new();
    if sig.binds.iter().any(|b| b.1 == Store::F16Native) {
        s.push_str("enable f16;\n");
    }
    let _ = writeln!(s, "const WG: u32 = {WG}u;\nconst FOLD: u32 = {FOLD}u;");
    let _ = writeln!(
        s,
        "@group(0) @binding(0) var<uniform> params: array<vec4<u32>, {}>;",
        MAX_PARAM_WORDS / 4
    );
    s.push_str("fn pu(k: u32) -> u32 { return params[k >> 2u][k & 3u]; }\n");
    s.push_str(COMMON);
    let mut binding = 1;
    for (slot, &(name, store, write)) in sig.binds.iter().enumerate() {
        let _ = writeln!(s, "fn o_{name}() -> u32 {{ return pu({slot}u); }}");
        if store == Store::Absent {
            absent(&mut s, name);
            continue;
        }
        let _ = writeln!(s, "const has_{name}: bool = true;");
        declare(&mut s, binding, name, store, write);
        binding += 1;
    }
    let first = sig.binds.len();
    let _ = writeln!(s, "fn p_n() -> u32 {{ return pu({first}u); }}");
    let _ = writeln!(s, "fn p_base() -> u32 {{ return pu({}u); }}", first + 1);
    for (k, (name, ty)) in sig.params.iter().enumerate() {
        let slot = first + 2 + k;
        let (t, e) = match ty {
            ParamType::U32 => ("u32", format!("pu({slot}u)")),
            ParamType::F32 => ("f32", format!("bitcast<f32>(pu({slot}u))")),
            ParamType::I32 => ("i32", format!("bitcast<i32>(pu({slot}u))")),
        };
        let _ = writeln!(s, "fn p_{name}() -> {t} {{ return {e}; }}");
    }
    s.push_str(body);
    let call = if sig.unroll > 1 {
        format!(
            "for (var k = 0u; k < {u}u; k++) {{ kernel((wg * {u}u + k) * WG + li, wg, li); }}",
            u = sig.unroll
        )
    } else {
        "kernel(wg * WG + li, wg, li);".to_string()
    };
    let _ = write!(
        s,
        "
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {{
    let wg = wid.y * nwg.x + wid.x;
    {call}
}}
"
    );
    s
}

fn absent(s: &mut String, name: &str) {
    let _ = writeln!(
        s,
        "const has_{name}: bool = false;
fn ld_{name}(i: u32) -> f32 {{ return 0.0; }}
fn st_{name}(i: u32, v: f32) {{ }}"
    );
}

fn declare(s: &mut String, binding: usize, name: &str, store: Store, write: bool) {
    let access = if write { "read_write" } else { "read" };
    let atomic_words = write
        && matches!(
            store,
            Store::F16Packed
                | Store::Bf16
                | Store::Raw16
                | Store::Raw8
                | Store::FlagF32
                | Store::FlagU8
        );
    let elem = match store {
        Store::F32 => "f32",
        Store::F16Native => "f16",
        Store::I32 => "i32",
        _ if atomic_words => "atomic<u32>",
        _ => "u32",
    };
    let _ = writeln!(
        s,
        "@group(0) @binding({binding}) var<storage, {access}> b_{name}: array<{elem}>;"
    );
    let idx = format!("o_{name}() + i");
    // The word holding element e of a packed binding.
    let word = |shift: &str| {
        if atomic_words {
            format!("atomicLoad(&b_{name}[e >> {shift}])")
        } else {
            format!("b_{name}[e >> {shift}]")
        }
    };
    match store {
        Store::F32 => {
            let _ = writeln!(
                s,
                "fn ld_{name}(i: u32) -> f32 {{ return b_{name}[{idx}]; }}"
            );
            if write {
                let _ = writeln!(s, "fn st_{name}(i: u32, v: f32) {{ b_{name}[{idx}] = v; }}");
            }
        }
        Store::F16Native => {
            let _ = writeln!(
                s,
                "fn ld_{name}(i: u32) -> f32 {{ return f32(b_{name}[{idx}]); }}"
            );
            if write {
                let _ = writeln!(
                    s,
                    "fn st_{name}(i: u32, v: f32) {{ b_{name}[{idx}] = f16(f16_to_f32(f32_to_f16(v))); }}"
                );
            }
        }
        Store::F16Packed | Store::Bf16 | Store::Raw16 => {
            let _ = writeln!(
                s,
                "fn ldr_{name}(i: u32) -> u32 {{ let e = {idx}; return ({} >> ((e & 1u) << 4u)) & 0xffffu; }}",
                word("1u")
            );
            if write {
                let _ = writeln!(
                    s,
                    "fn str_{name}(i: u32, h: u32) {{
    let e = {idx};
    let sh = (e & 1u) << 4u;
    atomicAnd(&b_{name}[e >> 1u], ~(0xffffu << sh));
    atomicOr(&b_{name}[e >> 1u], (h & 0xffffu) << sh);
}}"
                );
            }
            let (to, from) = match store {
                Store::Bf16 => ("bf16_to_f32", "f32_to_bf16"),
                _ => ("f16_to_f32", "f32_to_f16"),
            };
            if store != Store::Raw16 {
                let _ = writeln!(
                    s,
                    "fn ld_{name}(i: u32) -> f32 {{ return {to}(ldr_{name}(i)); }}"
                );
                if write {
                    let _ = writeln!(
                        s,
                        "fn st_{name}(i: u32, v: f32) {{ str_{name}(i, {from}(v)); }}"
                    );
                }
            }
        }
        Store::I32 => {
            let _ = writeln!(
                s,
                "fn ldi_{name}(i: u32) -> i32 {{ return b_{name}[{idx}]; }}"
            );
        }
        Store::Raw32 => {
            let _ = writeln!(
                s,
                "fn ldr_{name}(i: u32) -> u32 {{ return b_{name}[{idx}]; }}"
            );
            if write {
                let _ = writeln!(
                    s,
                    "fn str_{name}(i: u32, h: u32) {{ b_{name}[{idx}] = h; }}"
                );
            }
        }
        Store::Raw8 => {
            let _ = writeln!(
                s,
                "fn ldr_{name}(i: u32) -> u32 {{ let e = {idx}; return ({} >> ((e & 3u) << 3u)) & 0xffu; }}",
                word("2u")
            );
            if write {
                let _ = writeln!(
                    s,
                    "fn str_{name}(i: u32, h: u32) {{
    let e = {idx};
    let sh = (e & 3u) << 3u;
    atomicAnd(&b_{name}[e >> 2u], ~(0xffu << sh));
    atomicOr(&b_{name}[e >> 2u], (h & 0xffu) << sh);
}}"
                );
            }
        }
        Store::FlagF32 => {
            let _ = writeln!(
                s,
                "fn raise_{name}() {{ atomicStore(&b_{name}[o_{name}()], 0x3f800000u); }}"
            );
        }
        Store::FlagU8 => {
            let _ = writeln!(
                s,
                "fn raise_{name}() {{
    let e = o_{name}();
    let sh = (e & 3u) << 3u;
    atomicAnd(&b_{name}[e >> 2u], ~(0xffu << sh));
    atomicOr(&b_{name}[e >> 2u], 1u << sh);
}}"
            );
        }
        Store::Absent => {}
    }
}
