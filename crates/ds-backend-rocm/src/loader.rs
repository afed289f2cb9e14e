//! Finding and opening the ROCm libraries at run time, remembering every place looked.
//!
//! ds loads HIP, hiprtc, comgr, rocBLAS and RCCL itself rather than through
//! `cubecl-hip-sys`'s loader, which panics on the first call when a library is missing and
//! looks only for `libamdhip64.so{,.1,.0}` beside a separate `libhiprtc.so`: Debian's HIP
//! runtime (`libamdhip64-5`) ships `libamdhip64.so.5` with hiprtc inside it, so that loader
//! cannot open the one ROCm a Debian machine can install. Here absence is a value: the
//! list of paths tried, which the errors print.
//!
//! A library, once opened, stays loaded for the life of the process: comgr registers its
//! options in the shared LLVM it links, and closing then reopening it registers them twice,
//! which makes LLVM abort the process.

use libloading::Library;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// Every library opened so far, by the path or name it was opened with.
static OPEN: OnceLock<Mutex<HashMap<String, &'static Library>>> = OnceLock::new();

/// Opens `what` (a path or a bare name for the system's search) once per process.
fn load(what: &std::ffi::OsStr) -> Result<&'static Library, libloading::Error> {
    let key = what.to_string_lossy().into_owned();
    let mut open = OPEN
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(lib) = open.get(&key) {
        return Ok(lib);
    }
    // SAFETY: loading a library runs its initialisers, the one side effect of using it at
    // all; ds only opens ROCm's own libraries by their known names.
    let lib: &'static Library = Box::leak(Box::new(unsafe { Library::new(what) }?));
    open.insert(key, lib);
    Ok(lib)
}

/// Pins the folder ds loads the ROCm libraries from: only there, no other place is tried.
pub const LIBS_ENV: &str = "DS_ROCM_LIBS";

/// Where to look for a library.
#[derive(Debug, Clone)]
pub struct Search {
    dirs: Vec<PathBuf>,
    system: bool,
}

impl Search {
    /// The places a ROCm install puts its libraries: `$DS_ROCM_LIBS` alone when it is set;
    /// otherwise `$ROCM_PATH/lib`, `$HIP_PATH/lib`, `/opt/rocm/lib`, then the system's own
    /// search (`LD_LIBRARY_PATH` and the linker cache, where Debian's packages are).
    pub fn from_env() -> Search {
        if let Some(dir) = std::env::var_os(LIBS_ENV).filter(|d| !d.is_empty()) {
            return Search::only(dir);
        }
        let mut dirs: Vec<PathBuf> = ["ROCM_PATH", "HIP_PATH"]
            .into_iter()
            .filter_map(std::env::var_os)
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d).join("lib"))
            .collect();
        dirs.push(PathBuf::from("/opt/rocm/lib"));
        dirs.dedup();
        Search { dirs, system: true }
    }

    /// One folder and nothing else.
    pub fn only(dir: impl Into<PathBuf>) -> Search {
        Search {
            dirs: vec![dir.into()],
            system: false,
        }
    }

    /// Opens the first of `names` found, trying every folder before the system's search.
    pub(crate) fn open(&self, names: &[&str]) -> Result<Opened, NotFound> {
        let mut tried = Vec::new();
        for dir in &self.dirs {
            for name in names {
                let path = dir.join(name);
                if !path.exists() {
                    tried.push(format!("{} (no such file)", path.display()));
                    continue;
                }
                match load(path.as_os_str()) {
                    Ok(lib) => {
                        return Ok(Opened {
                            lib,
                            path: path.display().to_string(),
                        });
                    }
                    Err(e) => tried.push(format!("{} ({e})", path.display())),
                }
            }
        }
        if self.system {
            for name in names {
                match load(std::ffi::OsStr::new(name)) {
                    Ok(lib) => {
                        return Ok(Opened {
                            lib,
                            path: format!("{name} via the system's search"),
                        });
                    }
                    Err(_) => tried.push(format!("{name} (system search: not found)")),
                }
            }
        }
        Err(NotFound { tried })
    }

    /// What this search covers, for messages.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        if self.system {
            let ld = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
            parts.push(if ld.is_empty() {
                "the system's search (LD_LIBRARY_PATH empty, then the linker cache)".into()
            } else {
                format!("the system's search (LD_LIBRARY_PATH={ld}, then the linker cache)")
            });
        } else {
            parts.push(format!("nothing else ({LIBS_ENV} pins the folder)"));
        }
        parts.join(", ")
    }
}

/// An opened library and the path it came from.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) lib: &'static Library,
    pub(crate) path: String,
}

impl Opened {
    /// The function `name` (NUL-terminated) as the pointer type `F`.
    ///
    /// # Safety
    /// `F` must be the C signature the library gives `name` (the library is never unloaded,
    /// so the pointer stays valid).
    pub(crate) unsafe fn get<F: Copy>(&self, name: &[u8]) -> Result<F, String> {
        // SAFETY: the caller states `F` is the symbol's type.
        match unsafe { self.lib.get::<F>(name) } {
            Ok(sym) => Ok(*sym),
            Err(e) => Err(format!(
                "{} lacks `{}`: {e}",
                self.path,
                String::from_utf8_lossy(name.strip_suffix(&[0]).unwrap_or(name))
            )),
        }
    }
}

/// Every place a library was looked for, and why each failed.
#[derive(Debug, Clone)]
pub(crate) struct NotFound {
    pub(crate) tried: Vec<String>,
}

impl NotFound {
    /// The attempts, one per line, indented for a message.
    pub(crate) fn list(&self) -> String {
        self.tried
            .iter()
            .map(|t| format!("\n      tried {t}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_folder_is_the_only_place_tried() {
        let dir = std::env::temp_dir().join("ds-rocm-loader-test-empty");
        let err = Search::only(&dir)
            .open(&["libamdhip64.so", "libamdhip64.so.6"])
            .err()
            .map(|e| e.tried)
            .unwrap_or_default();
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(err[0].contains("ds-rocm-loader-test-empty/libamdhip64.so (no such file)"));
        assert!(Search::only(&dir).describe().contains(LIBS_ENV));
    }

    #[test]
    fn a_library_that_is_there_opens_with_its_path() {
        // libc is present on every Linux machine the tests run on.
        let search = Search {
            dirs: vec![],
            system: true,
        };
        let opened = search.open(&["libc.so.6"]);
        assert!(opened.is_ok_and(|o| o.path.contains("libc.so.6")));
    }
}
