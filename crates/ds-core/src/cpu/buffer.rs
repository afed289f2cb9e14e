//! Host memory for the CPU backend.
//!
//! Large buffers (optimizer state, flat gradients) are mapped directly, marked for
//! transparent huge pages and touched once in parallel when they are made: on the reference
//! machines first-touch page faults are slow and huge pages add to streaming bandwidth, so the
//! cost is paid at allocation, never inside a training step.
//!
//! Each mapped buffer starts a different number of cache lines into its mapping. Without that,
//! every large buffer would begin on a 2 MiB boundary, so element i of the parameters, the
//! gradient and both moments would fall in the same L1 and L2 cache sets (huge pages make the
//! physical low bits equal too): the optimizer's four streams evict each other and the step
//! runs at half the machine's bandwidth (measured: 131 ms against 34 ms for the same loop).
//!
//! Mappings of dropped buffers are kept by the backend's [`Pool`] (ds-core's one pool, over
//! [`HostMemory`], up to [`CACHE_LIMIT`]) and reused for the next buffer of the same mapped
//! size: a training step allocates and frees the same activation sizes
//! every step, and a fresh mapping costs system calls and a page fault per page (measured:
//! the system time of a GPT training step equalled its user time before this cache). Buffers
//! from [`CACHE_THRESHOLD`] up are mapped and cached this way (4 KiB pages below
//! [`MAP_THRESHOLD`]): the allocator returned the GPT's 1 MiB activations to the kernel on
//! free, so every step faulted them in again (16% of a step's time, measured with perf). The
//! mapped size covers every stagger offset, so one size of buffer always maps one size.
//!
//! Smaller buffers come from the global allocator. Every buffer is zero-filled, except a
//! reused mapping asked for through `alloc_for_overwrite` (a kernel's output, written whole
//! before it is read), which keeps the stale bytes of the buffer dropped before it; every
//! buffer is at least 64-byte aligned.

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::pool::{Pool, RawFailure, RawMemory};
use crate::slice::DeviceBuffer;
use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;

/// Buffers at least this large are mapped with huge pages.
const MAP_THRESHOLD: usize = 1 << 21;
/// Buffers at least this large are mapped (and their mappings cached for reuse).
const CACHE_THRESHOLD: usize = 1 << 16;
/// Base page size.
const PAGE: usize = 4096;
/// Huge page size on x86-64 and most aarch64 kernels.
const HUGE_PAGE: usize = 1 << 21;
/// Alignment of heap buffers: a cache line, and enough for every vector load.
const HEAP_ALIGN: usize = 64;
/// Step between the start offsets of consecutive mapped buffers: 17 cache lines, coprime with
/// the number of L1 (64) and L2 (1024) sets, so 16 consecutive buffers start in 16 different
/// sets of both.
const STAGGER_STEP: usize = 17 * 64;
/// Distinct start offsets before they repeat.
const STAGGER_SLOTS: usize = 16;

/// The most bytes of released mappings one backend keeps for reuse.
pub(crate) const CACHE_LIMIT: u64 = 1 << 30;

/// Counts mapped allocations to pick each one's start offset.
static MAPPED_COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The mapped size that serves a buffer of `bytes` (at least [`CACHE_THRESHOLD`]): room for
/// every stagger offset, rounded to whole pages (huge pages from [`MAP_THRESHOLD`] up), so
/// one size of buffer always maps, and reuses, one size.
fn mapped_size(bytes: usize) -> usize {
    let page = if bytes >= MAP_THRESHOLD {
        HUGE_PAGE
    } else {
        PAGE
    };
    (bytes + STAGGER_SLOTS * STAGGER_STEP).div_ceil(page) * page
}

/// Whether a mapping of `mapped` bytes is for huge pages: buffers below [`MAP_THRESHOLD`] map
/// less than `MAP_THRESHOLD + STAGGER_SLOTS * STAGGER_STEP` rounded to 4 KiB, under 4 MiB;
/// huge ones map 4 MiB or more.
fn is_huge(mapped: usize) -> bool {
    mapped >= 2 * HUGE_PAGE
}

/// One anonymous mapping: its start and length.
#[derive(Debug)]
pub struct Mapping(NonNull<u8>, usize);

// SAFETY: a mapping is plain process memory owned by whoever holds the value; nothing is tied
// to the thread that made it.
unsafe impl Send for Mapping {}

/// The host's raw memory for the shared pool: anonymous mappings, cached by mapped size.
#[derive(Debug, Default)]
pub struct HostMemory;

impl RawMemory for HostMemory {
    type Block = Mapping;

    fn device(&self) -> &str {
        "cpu"
    }

    fn class(&self, bytes: usize) -> usize {
        mapped_size(bytes)
    }

    fn alloc(&self, mapped: usize) -> std::result::Result<Mapping, RawFailure> {
        if mapped as u64 > available_memory() {
            return Err(RawFailure::OutOfMemory);
        }
        map_zeroed(mapped, is_huge(mapped))
            .map(|base| Mapping(base, mapped))
            .ok_or(RawFailure::OutOfMemory)
    }

    fn available(&self) -> u64 {
        available_memory()
    }

    fn free(&self, block: Mapping) {
        unmap(block.0, block.1);
    }
}

#[derive(Debug)]
enum Backing {
    /// Zero bytes: a dangling, aligned pointer that is never dereferenced for reads of data.
    Empty,
    /// From the global allocator with this layout.
    Heap(Layout),
    /// A mapping from the pool (the data starts a stagger offset in), and its size class.
    Mapped(Option<Mapping>, usize),
}

/// A host allocation holding `len` elements of one dtype, initialised (zero-filled, or a reused
/// mapping's earlier bytes) from the start.
#[derive(Debug)]
pub struct CpuBuffer {
    ptr: NonNull<u8>,
    bytes: usize,
    dtype: DType,
    len: usize,
    backing: Backing,
    pool: Arc<Pool<HostMemory>>,
}

// SAFETY: a CpuBuffer exclusively owns its allocation (like a Vec<u8>); shared references only
// read it and mutation needs `&mut`, so moving or sharing it across threads is sound.
unsafe impl Send for CpuBuffer {}
// SAFETY: see the Send impl: `&CpuBuffer` only permits reads.
unsafe impl Sync for CpuBuffer {}

impl CpuBuffer {
    /// Allocates, zero-filled but for what `prepare` leaves. For a mapped buffer
    /// `prepare(bytes, reused)` runs once: on a fresh mapping (`reused == false`, already
    /// zero) it should pre-fault the pages; on a reused one it zeroes `bytes` unless the
    /// caller overwrites them whole (both in parallel when called inside a thread pool).
    pub(crate) fn new(
        dtype: DType,
        len: usize,
        pool: Arc<Pool<HostMemory>>,
        prepare: impl FnOnce(&mut [u8], bool),
    ) -> Result<Self> {
        let bytes = len
            .checked_mul(dtype.size_bytes())
            .ok_or_else(|| Error::invalid("alloc", "len", "byte size overflows"))?;
        let oom = |available: u64| Error::OutOfMemory {
            device: "cpu".into(),
            requested: bytes as u64,
            available,
        };
        let mut reused = false;
        let (ptr, backing) = if bytes == 0 {
            (NonNull::<u64>::dangling().cast::<u8>(), Backing::Empty)
        } else if bytes >= CACHE_THRESHOLD {
            let slot = MAPPED_COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let offset = (slot % STAGGER_SLOTS) * STAGGER_STEP;
            let taken = pool.take(bytes)?;
            reused = taken.reused;
            // SAFETY: offset < STAGGER_SLOTS * STAGGER_STEP <= mapped_size(bytes) - bytes, so
            // base + offset stays inside the mapping (its class is mapped_size(bytes)) and
            // leaves `bytes` bytes after it.
            let data = unsafe { taken.block.0.add(offset) };
            (data, Backing::Mapped(Some(taken.block), taken.class))
        } else {
            let layout = Layout::from_size_align(bytes, HEAP_ALIGN)
                .map_err(|e| Error::invalid("alloc", "len", e.to_string()))?;
            // SAFETY: the layout has a non-zero size (bytes > 0 in this branch).
            let raw = unsafe { std::alloc::alloc_zeroed(layout) };
            (
                NonNull::new(raw).ok_or_else(|| oom(available_memory()))?,
                Backing::Heap(layout),
            )
        };
        if !matches!(backing, Backing::Mapped(..)) {
            pool.tracker().on_alloc(bytes as u64);
        }
        let mut buffer = CpuBuffer {
            ptr,
            bytes,
            dtype,
            len,
            backing,
            pool,
        };
        if matches!(buffer.backing, Backing::Mapped(..)) {
            prepare(buffer.bytes_mut(), reused);
        }
        Ok(buffer)
    }

    /// The whole buffer as bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: ptr is valid for `bytes` bytes, initialised at allocation (zeros, or a reused
        // mapping's stale bytes), for the buffer's lifetime, or dangling-but-aligned with
        // bytes == 0.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.bytes) }
    }

    /// The whole buffer as writable bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.bytes) }
    }

    /// The whole buffer as elements of `T`, or `None` when `T` is not its dtype.
    pub fn typed<T: Element>(&self) -> Option<&[T]> {
        (T::DTYPE == self.dtype).then(|| bytemuck::cast_slice(self.bytes()))
    }

    /// Writable form of [`CpuBuffer::typed`].
    pub fn typed_mut<T: Element>(&mut self) -> Option<&mut [T]> {
        (T::DTYPE == self.dtype).then(|| bytemuck::cast_slice_mut(self.bytes_mut()))
    }
}

impl DeviceBuffer for CpuBuffer {
    fn dtype(&self) -> DType {
        self.dtype
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for CpuBuffer {
    fn drop(&mut self) {
        match &mut self.backing {
            Backing::Empty => self.pool.tracker().on_free(0),
            Backing::Heap(layout) => {
                // SAFETY: ptr came from alloc_zeroed with exactly this layout and is freed once.
                unsafe { std::alloc::dealloc(self.ptr.as_ptr(), *layout) };
                self.pool.tracker().on_free(self.bytes as u64);
            }
            Backing::Mapped(mapping, class) => {
                if let Some(m) = mapping.take() {
                    self.pool.give_back(m, *class, self.bytes);
                }
            }
        }
    }
}

/// Bytes the kernel says can be allocated without swapping (`MemAvailable`), or `u64::MAX`
/// when it cannot be read.
pub fn available_memory() -> u64 {
    meminfo_field("MemAvailable:").unwrap_or(u64::MAX)
}

/// Physical memory in bytes (`MemTotal`), or 0 when it cannot be read.
pub(crate) fn total_memory() -> u64 {
    meminfo_field("MemTotal:").unwrap_or(0)
}

fn meminfo_field(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(unix)]
fn map_zeroed(bytes: usize, huge: bool) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions; the
    // result is checked against MAP_FAILED before use.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    #[cfg(target_os = "linux")]
    if huge {
        // SAFETY: [raw, raw + bytes) is the mapping just created. madvise only changes paging
        // policy; its failure (no THP support) is harmless and ignored.
        unsafe { libc::madvise(raw, bytes, libc::MADV_HUGEPAGE) };
    }
    NonNull::new(raw.cast::<u8>())
}

#[cfg(unix)]
fn unmap(ptr: NonNull<u8>, bytes: usize) {
    // SAFETY: ptr/bytes describe a mapping made by map_zeroed and owned by the dropped buffer;
    // nothing references it afterwards.
    unsafe { libc::munmap(ptr.as_ptr().cast(), bytes) };
}

#[cfg(not(unix))]
fn map_zeroed(bytes: usize, _huge: bool) -> Option<NonNull<u8>> {
    let layout = Layout::from_size_align(bytes, HUGE_PAGE).ok()?;
    // SAFETY: non-zero size (bytes >= CACHE_THRESHOLD).
    NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })
}

#[cfg(not(unix))]
fn unmap(ptr: NonNull<u8>, bytes: usize) {
    if let Ok(layout) = Layout::from_size_align(bytes, HUGE_PAGE) {
        // SAFETY: allocated by map_zeroed with this layout.
        unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) }
    }
}
