//! The launch table against the kernel sources: every `__global__` signature parsed from the
//! sources equals its table entry, and every entry is defined.

use ds_gpu::launch::{ArgKind, Instances, KERNELS};
use ds_gpu::program;

/// A kernel as the sources define it.
#[derive(Debug)]
struct Parsed {
    op: String,
    instances: Instances,
    args: Vec<ArgKind>,
}

/// The C type of one parameter declaration such as `const T* x` or `u64 n`.
fn kind(param: &str) -> ArgKind {
    if param.contains('*') {
        return ArgKind::Ptr;
    }
    let words: Vec<&str> = param.split_whitespace().filter(|w| *w != "const").collect();
    match words.first().copied() {
        Some("u64") => ArgKind::U64,
        Some("u32") => ArgKind::U32,
        Some("int") => ArgKind::I32,
        Some("float") => ArgKind::F32,
        other => panic!("unexpected parameter type {other:?} in `{param}`"),
    }
}

/// Every `__global__ void ds_...(...)` in the program, macro-defined ones included.
fn parse(src: &str) -> Vec<Parsed> {
    let src = src.replace("\\\n", "\n");
    let marker = "__global__ void ds_";
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = src[at..].find(marker) {
        let start = at + i + marker.len();
        let open = start + src[start..].find('(').expect("a parameter list");
        let close = open + src[open..].find(')').expect("a closed parameter list");
        let name = &src[start..open];
        // `gelu_##N` (one type), `cast_##XN##_##YN` (two), `fill_i32` (none).
        let instances = match name.matches("##").count() {
            0 => Instances::Plain,
            1 => Instances::PerType,
            3 => Instances::PerPair,
            n => panic!("{name}: {n} token pastes"),
        };
        let op = name.split("_##").next().unwrap_or(name).to_string();
        let args = src[open + 1..close].split(',').map(kind).collect();
        out.push(Parsed {
            op,
            instances,
            args,
        });
        at = close;
    }
    out
}

#[test]
fn the_launch_table_matches_every_kernel_signature_in_the_sources() {
    let parsed = parse(&program());
    assert_eq!(
        parsed.len(),
        KERNELS.len(),
        "kernels in the sources: {parsed:?}"
    );
    for p in &parsed {
        let entry = KERNELS
            .iter()
            .find(|k| k.op == p.op)
            .unwrap_or_else(|| panic!("kernel ds_{} is in the sources but not the table", p.op));
        assert_eq!(entry.instances, p.instances, "ds_{}: instantiation", p.op);
        assert_eq!(entry.args, p.args.as_slice(), "ds_{}: parameters", p.op);
    }
}

#[test]
fn a_signature_changed_in_the_source_is_caught() {
    // The parser sees what the comparison relies on: a swapped parameter changes the kinds.
    let changed = program().replace(
        "ds_gelu_##N(const T* x, T* y, u64 n)",
        "ds_gelu_##N(const T* x, u64 n, T* y)",
    );
    let gelu = parse(&changed)
        .into_iter()
        .find(|p| p.op == "gelu")
        .map(|p| p.args);
    assert_eq!(gelu, Some(vec![ArgKind::Ptr, ArgKind::U64, ArgKind::Ptr]));
}
