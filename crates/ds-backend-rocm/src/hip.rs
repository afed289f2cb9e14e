//! The HIP runtime functions ds calls, loaded from `libamdhip64`.

use crate::loader::{NotFound, Opened, Search};
use cubecl_hip_sys::{hipDeviceAttribute_t, hipDeviceProp_tR0600, hipError_t};
use std::ffi::{CStr, c_char, c_int};

/// The HIP runtime's file names, newest first (the unversioned name is a development link).
pub(crate) const FILES: [&str; 4] = [
    "libamdhip64.so",
    "libamdhip64.so.7",
    "libamdhip64.so.6",
    "libamdhip64.so.5",
];

/// HIP's success code.
const SUCCESS: hipError_t = cubecl_hip_sys::hipError_t_hipSuccess;
/// HIP's "no device" code, which `hipGetDeviceCount` returns on a machine without a GPU.
const NO_DEVICE: hipError_t = cubecl_hip_sys::hipError_t_hipErrorNoDevice;

type GetInt = unsafe extern "C" fn(*mut c_int) -> hipError_t;
/// `hipGetErrorString`'s type.
pub(crate) type ErrorString = unsafe extern "C" fn(hipError_t) -> *const c_char;
type DeviceName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> hipError_t;
type TotalMem = unsafe extern "C" fn(*mut usize, c_int) -> hipError_t;
type Attribute = unsafe extern "C" fn(*mut c_int, hipDeviceAttribute_t, c_int) -> hipError_t;
type Properties = unsafe extern "C" fn(*mut hipDeviceProp_tR0600, c_int) -> hipError_t;

/// The loaded runtime: its path and the functions ds uses.
#[derive(Debug)]
pub(crate) struct Hip {
    runtime_version: GetInt,
    device_count: GetInt,
    error_string: ErrorString,
    device_name: DeviceName,
    total_mem: TotalMem,
    attribute: Attribute,
    /// HIP 6.0's properties call; absent from older runtimes.
    properties: Option<Properties>,
    pub(crate) lib: Opened,
}

/// One device as HIP describes it.
#[derive(Debug, Clone)]
pub struct HipDevice {
    /// The ordinal among the devices HIP leaves visible.
    pub ordinal: usize,
    /// The marketing name.
    pub name: String,
    /// The ISA and its features, e.g. `gfx90a:sramecc+:xnack-` (what hiprtc compiles for).
    pub arch: String,
    /// Device memory in bytes.
    pub memory: u64,
    /// Compute units.
    pub compute_units: u32,
    /// Lanes per wave: 64 on CDNA (Instinct), 32 on RDNA.
    pub warp_size: u32,
}

impl Hip {
    /// Opens the runtime where `search` points.
    pub(crate) fn open(search: &Search) -> Result<Hip, NotFound> {
        let lib = search.open(&FILES)?;
        let bad = |e: String| NotFound { tried: vec![e] };
        // SAFETY: each type is HIP's C signature of the named function (hip_runtime_api.h),
        // and the pointers live in the same struct as the library they point into.
        unsafe {
            Ok(Hip {
                runtime_version: lib.get(b"hipRuntimeGetVersion\0").map_err(bad)?,
                device_count: lib.get(b"hipGetDeviceCount\0").map_err(bad)?,
                error_string: lib.get(b"hipGetErrorString\0").map_err(bad)?,
                device_name: lib.get(b"hipDeviceGetName\0").map_err(bad)?,
                total_mem: lib.get(b"hipDeviceTotalMem\0").map_err(bad)?,
                attribute: lib.get(b"hipDeviceGetAttribute\0").map_err(bad)?,
                properties: lib.get(b"hipGetDevicePropertiesR0600\0").ok(),
                lib,
            })
        }
    }

    fn check(&self, what: &str, code: hipError_t) -> Result<(), String> {
        check(self.error_string, what, code)
    }

    /// The runtime's version as HIP encodes it (major * 10^7 + minor * 10^5 + patch).
    pub(crate) fn version(&self) -> Result<i32, String> {
        let mut v = 0;
        // SAFETY: `v` is a valid place for the one int the call writes.
        self.check("hipRuntimeGetVersion", unsafe {
            (self.runtime_version)(&mut v)
        })?;
        Ok(v)
    }

    /// How many devices are visible (after `HIP_VISIBLE_DEVICES` / `ROCR_VISIBLE_DEVICES`);
    /// HIP's "no device" answer is 0, not an error.
    pub(crate) fn device_count(&self) -> Result<usize, String> {
        let mut n = 0;
        // SAFETY: as for `version`.
        let code = unsafe { (self.device_count)(&mut n) };
        if code == NO_DEVICE {
            return Ok(0);
        }
        self.check("hipGetDeviceCount", code)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The description of device `ordinal`.
    pub(crate) fn device(&self, ordinal: usize) -> Result<HipDevice, String> {
        let id = c_int::try_from(ordinal).map_err(|_| format!("device {ordinal} is no ordinal"))?;
        let mut name = [0 as c_char; 256];
        // SAFETY: the buffer holds the 256 bytes the call is told it may write.
        self.check("hipDeviceGetName", unsafe {
            (self.device_name)(name.as_mut_ptr(), 256, id)
        })?;
        let mut memory = 0usize;
        // SAFETY: one size_t is written.
        self.check("hipDeviceTotalMem", unsafe {
            (self.total_mem)(&mut memory, id)
        })?;
        let attr = |a: hipDeviceAttribute_t, what: &str| -> Result<u32, String> {
            let mut v = 0;
            // SAFETY: one int is written.
            self.check(what, unsafe { (self.attribute)(&mut v, a, id) })?;
            Ok(u32::try_from(v).unwrap_or(0))
        };
        let compute_units = attr(
            cubecl_hip_sys::hipDeviceAttribute_t_hipDeviceAttributeMultiprocessorCount,
            "reading the compute units",
        )?;
        let warp_size = attr(
            cubecl_hip_sys::hipDeviceAttribute_t_hipDeviceAttributeWarpSize,
            "reading the warp size",
        )?;
        let Some(properties) = self.properties else {
            return Err(format!(
                "{} predates HIP 6.0 (no hipGetDevicePropertiesR0600), so the device's ISA \
                 cannot be read; ds's ROCm backend needs ROCm 6.0 or newer for devices",
                self.lib.path
            ));
        };
        // SAFETY: the struct is plain data, valid zeroed, and the call fills it in.
        let mut props: hipDeviceProp_tR0600 = unsafe { std::mem::zeroed() };
        // SAFETY: `props` is the struct the R0600 call writes.
        self.check("hipGetDevicePropertiesR0600", unsafe {
            properties(&mut props, id)
        })?;
        Ok(HipDevice {
            ordinal,
            name: c_text(&name),
            arch: c_text(&props.gcnArchName),
            memory: memory as u64,
            compute_units,
            warp_size,
        })
    }
}

/// `Ok` for HIP's success code, else `what` with HIP's message and code.
pub(crate) fn check(error_string: ErrorString, what: &str, code: hipError_t) -> Result<(), String> {
    if code == SUCCESS {
        return Ok(());
    }
    // SAFETY: hipGetErrorString returns a static NUL-terminated string for every code.
    let text = unsafe { CStr::from_ptr(error_string(code)) };
    Err(format!(
        "{what}: {} (HIP error {code})",
        text.to_string_lossy()
    ))
}

/// A NUL-terminated C string in a fixed buffer, lossily as UTF-8.
pub(crate) fn c_text(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// HIP's version number as `major.minor.patch`.
pub(crate) fn version_text(v: i32) -> String {
    format!("{}.{}.{}", v / 10_000_000, (v / 100_000) % 100, v % 100_000)
}
