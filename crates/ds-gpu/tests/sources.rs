//! The kernel sources against the names the backends launch.

use ds_gpu::{kernel_names, program};

#[test]
fn every_launched_kernel_exists_in_the_sources() {
    let src = program();
    for name in kernel_names() {
        // Kernels are defined through macros: `ds_<op>_##N` expands per type; check the stem
        // and the instantiation list instead of the final token.
        let stem = name.trim_start_matches("ds_");
        let direct = src.contains(&format!("void {name}("));
        let templated = name_is_instantiated(&src, stem);
        assert!(
            direct || templated,
            "kernel {name} is launched but not defined in crates/ds-gpu/kernels/"
        );
    }
}

/// Whether `ds_<op>_<suffixes>` is produced by a `ds_<op>_##...` macro definition.
fn name_is_instantiated(src: &str, stem: &str) -> bool {
    let dtypes = ["f32", "f16", "bf16"];
    let parts: Vec<&str> = stem.split('_').collect();
    let n_types = parts
        .iter()
        .rev()
        .take_while(|p| dtypes.contains(p))
        .count();
    if n_types == 0 {
        return false;
    }
    let op = parts[..parts.len() - n_types].join("_");
    // `void ds_<op>_##N(` (or `##GN(`, `##CN(`) for one type, `##XN##_##YN(` for two.
    let Some(at) = src.find(&format!("void ds_{op}_##")) else {
        return false;
    };
    let rest = &src[at..];
    let params = rest[..rest.find('(').unwrap_or(0)].matches("##").count();
    params == 1 + 2 * (n_types - 1)
}
