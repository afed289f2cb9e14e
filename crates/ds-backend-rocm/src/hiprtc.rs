//! Compiling ds's kernels with hiprtc for an AMD ISA, checked against comgr's ISA list first.
//!
//! hiprtc needs no GPU: it compiles through comgr for whatever `--offload-arch` it is given.
//! It must only be given an ISA comgr knows: Debian's HIP 5.2 hiprtc, asked for one it does
//! not (gfx940, gfx942, gfx1100), corrupts its heap and aborts the process, so
//! [`supported_isas`] is consulted before every compile.

use crate::hip::FILES as HIP_FILES;
use crate::loader::{NotFound, Opened, Search};
use std::ffi::{CStr, CString, c_char, c_int};

/// hiprtc's own library, split from the HIP runtime since ROCm 5.3 (before that, and in
/// Debian's 5.2, its functions live in `libamdhip64`, which is tried last).
const FILES: [&str; 4] = [
    "libhiprtc.so",
    "libhiprtc.so.7",
    "libhiprtc.so.6",
    "libhiprtc.so.5",
];
/// The code object manager, which lists the ISAs this ROCm can target.
pub(crate) const COMGR_FILES: [&str; 3] =
    ["libamd_comgr.so", "libamd_comgr.so.3", "libamd_comgr.so.2"];

type Program = *mut std::ffi::c_void;
type Status = c_int;
type Create = unsafe extern "C" fn(
    *mut Program,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> Status;
type Compile = unsafe extern "C" fn(Program, c_int, *const *const c_char) -> Status;
type Size = unsafe extern "C" fn(Program, *mut usize) -> Status;
type Read = unsafe extern "C" fn(Program, *mut c_char) -> Status;
type Destroy = unsafe extern "C" fn(*mut Program) -> Status;
type IsaCount = unsafe extern "C" fn(*mut usize) -> Status;
type IsaName = unsafe extern "C" fn(usize, *mut *const c_char) -> Status;

/// Why a compile could not happen or failed.
#[derive(Debug)]
pub enum CompileError {
    /// A library is missing: which, and every place tried.
    Missing {
        /// The library, e.g. "hiprtc".
        what: &'static str,
        /// The paths tried, one per line.
        tried: String,
    },
    /// comgr does not know the ISA; hiprtc would abort on it.
    UnknownIsa {
        /// The ISA asked for.
        arch: String,
        /// What this ROCm can target.
        supported: Vec<String>,
    },
    /// The library answered with an error (a failed compile carries hiprtc's log).
    Failed(String),
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompileError::Missing { what, tried } => write!(f, "{what} was not found:{tried}"),
            CompileError::UnknownIsa { arch, supported } => write!(
                f,
                "this ROCm's comgr cannot target {arch} (it knows {})",
                supported.join(", ")
            ),
            CompileError::Failed(m) => f.write_str(m),
        }
    }
}

fn missing(what: &'static str) -> impl Fn(NotFound) -> CompileError {
    move |n| CompileError::Missing {
        what,
        tried: n.list(),
    }
}

/// The ISAs (`gfx90a`, `gfx1030`, ...) the comgr found by `search` can compile for.
///
/// # Errors
/// [`CompileError::Missing`] without comgr; [`CompileError::Failed`] if it errs.
pub fn supported_isas(search: &Search) -> Result<Vec<String>, CompileError> {
    let comgr = search.open(&COMGR_FILES).map_err(missing("comgr"))?;
    // SAFETY: comgr's C signatures (amd_comgr.h); used while `comgr` is alive.
    let (count, name): (IsaCount, IsaName) = unsafe {
        (
            comgr
                .get(b"amd_comgr_get_isa_count\0")
                .map_err(CompileError::Failed)?,
            comgr
                .get(b"amd_comgr_get_isa_name\0")
                .map_err(CompileError::Failed)?,
        )
    };
    let mut n = 0usize;
    // SAFETY: one size_t is written.
    if unsafe { count(&mut n) } != 0 {
        return Err(CompileError::Failed(
            "amd_comgr_get_isa_count failed".into(),
        ));
    }
    let mut isas = Vec::with_capacity(n);
    for i in 0..n {
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: comgr writes a pointer to a static NUL-terminated name for index < count.
        if unsafe { name(i, &mut p) } != 0 || p.is_null() {
            return Err(CompileError::Failed(format!(
                "amd_comgr_get_isa_name({i}) failed"
            )));
        }
        // SAFETY: checked non-null above; the name is static in comgr.
        let full = unsafe { CStr::from_ptr(p) }.to_string_lossy();
        // `amdgcn-amd-amdhsa--gfx90a` (some versions add `:feature` suffixes).
        let isa = full.rsplit("--").next().unwrap_or(&full);
        isas.push(isa.split(':').next().unwrap_or(isa).to_string());
    }
    Ok(isas)
}

/// hiprtc's functions, from its own library or the HIP runtime that contains it.
struct Hiprtc {
    create: Create,
    compile: Compile,
    log_size: Size,
    log: Read,
    code_size: Size,
    code: Read,
    destroy: Destroy,
    lib: Opened,
}

/// Where hiprtc's functions were found (its own library, or the HIP runtime holding them).
///
/// # Errors
/// [`CompileError::Missing`] with every path tried.
pub fn library(search: &Search) -> Result<String, CompileError> {
    Ok(Hiprtc::open(search)?.lib.path)
}

impl Hiprtc {
    fn open(search: &Search) -> Result<Hiprtc, CompileError> {
        let lib = match search.open(&FILES) {
            Ok(lib) => lib,
            Err(own) => {
                let hip = search.open(&HIP_FILES).map_err(|mut inner| {
                    let mut tried = own.tried.clone();
                    tried.append(&mut inner.tried);
                    missing("hiprtc (libhiprtc, or a HIP runtime containing it)")(NotFound {
                        tried,
                    })
                })?;
                // SAFETY: only probing for the symbol; its type is not used.
                if unsafe { hip.get::<Compile>(b"hiprtcCompileProgram\0") }.is_err() {
                    return Err(missing("hiprtc")(own));
                }
                hip
            }
        };
        // SAFETY: hiprtc's C signatures (hiprtc.h), kept beside their library.
        unsafe {
            let f = CompileError::Failed;
            Ok(Hiprtc {
                create: lib.get(b"hiprtcCreateProgram\0").map_err(f)?,
                compile: lib.get(b"hiprtcCompileProgram\0").map_err(f)?,
                log_size: lib.get(b"hiprtcGetProgramLogSize\0").map_err(f)?,
                log: lib.get(b"hiprtcGetProgramLog\0").map_err(f)?,
                code_size: lib.get(b"hiprtcGetCodeSize\0").map_err(f)?,
                code: lib.get(b"hiprtcGetCode\0").map_err(f)?,
                destroy: lib.get(b"hiprtcDestroyProgram\0").map_err(f)?,
                lib,
            })
        }
    }

    /// Compiles `source` for `arch`; the code object, or hiprtc's log.
    fn build(&self, source: &str, arch: &str) -> Result<Vec<u8>, CompileError> {
        let fail = |what: &str| CompileError::Failed(format!("hiprtc: {what} failed"));
        let src = CString::new(source).map_err(|_| fail("a NUL in the kernel source"))?;
        let name = c"ds_kernels.hip";
        let mut prog: Program = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated strings, no headers; hiprtc writes the program handle.
        let rc = unsafe {
            (self.create)(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc != 0 || prog.is_null() {
            return Err(fail("hiprtcCreateProgram"));
        }
        let opts: Vec<CString> = [
            format!("--offload-arch={arch}"),
            "-std=c++17".into(),
            "-O3".into(),
        ]
        .into_iter()
        .filter_map(|o| CString::new(o).ok())
        .collect();
        let ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
        // SAFETY: `prog` is live; `ptrs` points at `opts`' strings, alive for the call.
        let rc = unsafe { (self.compile)(prog, ptrs.len() as c_int, ptrs.as_ptr()) };
        let result = if rc == 0 {
            self.read(prog, self.code_size, self.code)
                .ok_or_else(|| fail("reading the code object"))
        } else {
            let log = self
                .read(prog, self.log_size, self.log)
                .map(|l| {
                    String::from_utf8_lossy(&l)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .unwrap_or_default();
            Err(CompileError::Failed(format!(
                "hiprtc could not compile ds's kernels for {arch}:\n{log}"
            )))
        };
        // SAFETY: `prog` came from hiprtcCreateProgram and is destroyed once.
        unsafe { (self.destroy)(&mut prog) };
        result
    }

    /// A size-then-contents read (the log or the code object).
    fn read(&self, prog: Program, size: Size, read: Read) -> Option<Vec<u8>> {
        let mut n = 0usize;
        // SAFETY: one size_t is written for a live program.
        if unsafe { size(prog, &mut n) } != 0 {
            return None;
        }
        let mut buf = vec![0u8; n];
        if n > 0 {
            // SAFETY: the buffer holds the `n` bytes hiprtc said it writes.
            if unsafe { read(prog, buf.as_mut_ptr().cast()) } != 0 {
                return None;
            }
        }
        Some(buf)
    }
}

/// Compiles every ds kernel for `arch` (e.g. `gfx90a`, or a device's `gfx90a:sramecc+:xnack-`)
/// with the hiprtc `search` finds, and returns the code object. Needs no GPU.
///
/// # Errors
/// See [`CompileError`]: a missing library, an ISA comgr does not know, or hiprtc's log.
pub fn compile(search: &Search, arch: &str) -> Result<Vec<u8>, CompileError> {
    let base = arch.split(':').next().unwrap_or(arch);
    let supported = supported_isas(search)?;
    if !supported.iter().any(|s| s == base) {
        return Err(CompileError::UnknownIsa {
            arch: arch.to_string(),
            supported,
        });
    }
    Hiprtc::open(search)?.build(&ds_gpu::program(), arch)
}
