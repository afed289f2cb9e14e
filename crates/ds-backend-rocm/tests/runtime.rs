//! What the ROCm backend finds on this machine: never a panic, always the paths it tried.

use ds_backend_rocm::hiprtc::{CompileError, compile, supported_isas};
use ds_backend_rocm::{Search, probe};
use ds_core::Error;

/// A folder with no library in it.
fn empty_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ds-rocm-empty-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

#[test]
fn without_a_runtime_it_says_no_hip_runtime_and_every_path_tried() {
    let dir = empty_dir();
    match probe::runtime(&Search::only(&dir)) {
        Err(Error::NoDevice { backend, reason }) => {
            assert_eq!(backend, "rocm");
            assert!(reason.contains("no HIP runtime"), "{reason}");
            for file in ["libamdhip64.so", "libamdhip64.so.6", "libamdhip64.so.5"] {
                let path = dir.join(file).display().to_string();
                assert!(
                    reason.contains(&format!("tried {path} (no such file)")),
                    "{reason}"
                );
            }
        }
        other => panic!("expected Error::NoDevice, got {other:?}"),
    }
    let report = probe::report(&Search::only(&dir));
    assert!(report.contains("no HIP runtime"), "{report}");
    assert!(report.contains("rocBLAS: not found"), "{report}");
    assert!(report.contains("RCCL: not found"), "{report}");
    match compile(&Search::only(&dir), "gfx90a") {
        Err(CompileError::Missing { what, tried }) => {
            assert_eq!(what, "comgr");
            assert!(
                tried.contains("libamd_comgr.so.2 (no such file)"),
                "{tried}"
            );
        }
        other => panic!("expected comgr missing, got {other:?}"),
    }
}

#[test]
#[ignore = "needs Debian's HIP runtime (libamdhip64-5): scripts/test.sh installs it and runs this with --ignored"]
fn debians_hip_runtime_loads_and_reports_no_rocm_device() {
    let rt = match probe::runtime(&Search::from_env()) {
        Ok(rt) => rt,
        Err(e) => panic!("the HIP runtime did not load: {e}"),
    };
    assert!(
        rt.version.starts_with("5.") || rt.version.starts_with("6."),
        "{}",
        rt.version
    );
    match rt.devices {
        Ok(d) if d.is_empty() => {
            let err = probe::device(0)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("no ROCm device"), "{err}");
            assert!(err.contains("HIP_VISIBLE_DEVICES"), "{err}");
            println!("{err}");
        }
        Ok(d) => println!("not run: this machine has {} ROCm device(s)", d.len()),
        Err(e) => panic!("devices: {e}"),
    }
    let report = probe::report(&Search::from_env());
    assert!(
        report.contains(&format!("HIP runtime {}", rt.version)),
        "{report}"
    );
    assert!(report.contains("comgr: "), "{report}");
}

/// The ISAs the issue names: CDNA2 (MI200) and RDNA2; gfx942 (MI300) where the toolchain can.
const ISAS: [&str; 2] = ["gfx90a", "gfx1030"];

#[test]
#[ignore = "needs hiprtc and comgr (Debian's libamdhip64-5): scripts/test.sh installs them and runs this with --ignored"]
fn every_kernel_compiles_with_hiprtc_for_cdna2_and_rdna2() {
    let search = Search::from_env();
    let isas = supported_isas(&search).unwrap_or_else(|e| panic!("{e}"));
    for isa in ISAS {
        assert!(isas.iter().any(|i| i == isa), "{isa} missing from {isas:?}");
        match compile(&search, isa) {
            Ok(code) => {
                // An ELF code object of a few hundred KiB (every kernel, every dtype).
                assert_eq!(&code[..4], b"\x7fELF", "{isa}: not a code object");
                assert!(code.len() > 100_000, "{isa}: only {} bytes", code.len());
                println!("{isa}: {} bytes of code object", code.len());
            }
            Err(e) => panic!("{isa}: {e}"),
        }
    }
    // An ISA this toolchain's comgr does not know is refused before hiprtc sees it (Debian's
    // HIP 5.2 hiprtc aborts the process on one).
    match compile(&search, "gfx942") {
        Err(CompileError::UnknownIsa { supported, .. }) => {
            println!("not targetable with this toolchain: gfx942 (comgr knows {supported:?})")
        }
        Ok(code) => println!("gfx942: {} bytes of code object", code.len()),
        Err(e) => panic!("gfx942: {e}"),
    }
}
