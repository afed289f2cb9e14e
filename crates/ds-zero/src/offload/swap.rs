//! NVMe swap files: one file per rank under `nvme_path`, read and written at offsets.
//!
//! The I/O path is chosen at run time: io_uring where the kernel allows it, positional reads
//! and writes (`pread` / `pwrite`) otherwise; `DS_NVME_IO=uring` or `DS_NVME_IO=pread` forces
//! one. On io_uring a read or write is cut into `aio.block_size` requests with up to
//! `aio.queue_depth` in flight (submitted as a batch, or one by one with `aio.single_submit`),
//! short transfers resubmitted for the rest.
//!
//! A swap file is created with `create_new` (never over someone else's file), its whole size
//! reserved with `posix_fallocate` before training starts (a full disk is an error then, not at
//! a step), and removed when dropped. A process killed with SIGKILL cannot remove its files:
//! the next run's [`SwapFile::create`] removes swap files whose process is gone. Swap files
//! are never read back after a crash: a resumed run rebuilds them from its checkpoint, which
//! the swapper never touches.

use ds_core::{Error, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An NVMe offload error: the swap path, or the I/O on it, failed.
pub(crate) fn nvme_error(message: String) -> Error {
    Error::Device {
        device: "NVMe offload".into(),
        message,
    }
}

/// The environment variable that forces an I/O path.
pub const IO_ENV: &str = "DS_NVME_IO";

/// How requests are cut and queued (the `aio` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoShape {
    /// Bytes per request.
    pub block_size: usize,
    /// Requests in flight.
    pub queue_depth: usize,
    /// Submit each request on its own.
    pub single_submit: bool,
}

impl Default for IoShape {
    fn default() -> Self {
        IoShape {
            block_size: 1 << 20,
            queue_depth: 8,
            single_submit: false,
        }
    }
}

/// How swap I/O reaches the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoPath {
    /// io_uring.
    Uring,
    /// Positional reads and writes; the reason io_uring is not used.
    Positional(String),
}

impl std::fmt::Display for IoPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoPath::Uring => write!(f, "io_uring"),
            IoPath::Positional(why) => {
                write!(f, "positional reads and writes (pread/pwrite): {why}")
            }
        }
    }
}

/// The I/O path this machine gives swap files: io_uring when a ring can be made, unless
/// [`IO_ENV`] says otherwise.
pub fn probe() -> IoPath {
    match std::env::var(IO_ENV).as_deref() {
        Ok("pread") => return IoPath::Positional(format!("forced by {IO_ENV}=pread")),
        Ok("uring") | Err(_) => {}
        Ok(other) => {
            return IoPath::Positional(format!(
                "{IO_ENV}={other} is neither uring nor pread; using pread"
            ));
        }
    }
    match io_uring::IoUring::new(8) {
        Ok(_) => IoPath::Uring,
        Err(e) => IoPath::Positional(format!("io_uring is not available here ({e})")),
    }
}

enum Engine {
    /// Boxed: a ring is a few hundred bytes, made once per swap file.
    Uring(Box<Mutex<io_uring::IoUring>>),
    Positional,
}

/// One swap file.
pub struct SwapFile {
    path: PathBuf,
    file: File,
    engine: Engine,
    path_kind: IoPath,
    shape: IoShape,
    len: u64,
}

/// The swap file name prefix; `ds-swap-PID-NAME`.
const PREFIX: &str = "ds-swap-";

impl SwapFile {
    /// Creates `dir/ds-swap-PID-name` of `len` bytes, reserved on disk.
    ///
    /// # Errors
    /// [`Error::Usage`] naming `dir` when it is missing, not a directory or not writable, or
    /// when the disk cannot hold `len` bytes (the partial file is removed).
    pub fn create(dir: &Path, name: &str, len: u64, shape: IoShape) -> Result<Self> {
        Self::create_on(dir, name, len, probe(), shape)
    }

    /// [`SwapFile::create`] on the I/O path `path_kind` (io_uring falls back to positional
    /// I/O if a ring cannot be made after all).
    ///
    /// # Errors
    /// As [`SwapFile::create`].
    pub fn create_on(
        dir: &Path,
        name: &str,
        len: u64,
        path_kind: IoPath,
        shape: IoShape,
    ) -> Result<Self> {
        let shape = IoShape {
            block_size: shape.block_size.clamp(4096, 1 << 30),
            queue_depth: shape.queue_depth.clamp(1, 4096),
            single_submit: shape.single_submit,
        };
        let what = |why: String| nvme_error(format!("nvme_path `{}` {why}", dir.display()));
        match std::fs::metadata(dir) {
            Err(e) => {
                return Err(what(format!(
                    "cannot be used ({e}): create the directory, on a local NVMe drive, or point nvme_path at one"
                )));
            }
            Ok(m) if !m.is_dir() => return Err(what("is not a directory".into())),
            Ok(_) => {}
        }
        remove_stale(dir);
        let path = dir.join(format!("{PREFIX}{}-{name}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| what(format!("is not writable ({e})")))?;
        if let Err(e) = reserve(&file, len) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(what(format!(
                "cannot hold the {len} bytes of this rank's swap file ({e}): free space or point nvme_path elsewhere"
            )));
        }
        let (engine, path_kind) = match path_kind {
            IoPath::Uring => match io_uring::IoUring::new(shape.queue_depth as u32) {
                Ok(ring) => (Engine::Uring(Box::new(Mutex::new(ring))), IoPath::Uring),
                Err(e) => (
                    Engine::Positional,
                    IoPath::Positional(format!("io_uring is not available here ({e})")),
                ),
            },
            other => (Engine::Positional, other),
        };
        Ok(SwapFile {
            path,
            file,
            engine,
            path_kind,
            shape,
            len,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The I/O path its reads and writes take.
    pub fn io_path(&self) -> &IoPath {
        &self.path_kind
    }

    fn check(&self, offset: u64, len: usize) -> Result<()> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(self.io_error(
                "access",
                std::io::Error::other(format!(
                    "bytes {offset}+{len} lie outside the {}-byte file",
                    self.len
                )),
            ));
        }
        Ok(())
    }

    fn io_error(&self, op: &str, e: std::io::Error) -> Error {
        nvme_error(format!(
            "cannot {op} the swap file {}: {e}",
            self.path.display()
        ))
    }

    /// Reads `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    /// The I/O error, naming the file.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        match &self.engine {
            Engine::Positional => self
                .file
                .read_exact_at(buf, offset)
                .map_err(|e| self.io_error("read", e)),
            Engine::Uring(ring) => self
                .uring(ring, offset, buf.as_mut_ptr(), buf.len(), false)
                .map_err(|e| self.io_error("read", e)),
        }
    }

    /// Writes `buf` at `offset`.
    ///
    /// # Errors
    /// The I/O error, naming the file.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        match &self.engine {
            Engine::Positional => self
                .file
                .write_all_at(buf, offset)
                .map_err(|e| self.io_error("write", e)),
            // The pointer is only read from: a write entry takes a `*const u8`.
            Engine::Uring(ring) => self
                .uring(ring, offset, buf.as_ptr().cast_mut(), buf.len(), true)
                .map_err(|e| self.io_error("write", e)),
        }
    }

    /// Moves `len` bytes at `ptr` to or from the file at `offset` through the ring, in
    /// `block_size` requests with up to `queue_depth` in flight, until every byte has moved.
    /// `ptr..ptr + len` must be a buffer the caller holds borrowed (mutably for a read) for
    /// the whole call.
    fn uring(
        &self,
        ring: &Mutex<io_uring::IoUring>,
        offset: u64,
        ptr: *mut u8,
        len: usize,
        write: bool,
    ) -> std::io::Result<()> {
        let mut ring = ring
            .lock()
            .map_err(|_| std::io::Error::other("the swap file's ring was poisoned"))?;
        let fd = io_uring::types::Fd(self.file.as_raw_fd());
        let block = self.shape.block_size;
        // (offset into the buffer, length) of each request still to do.
        let mut todo: std::collections::VecDeque<(usize, usize)> = (0..len)
            .step_by(block)
            .map(|at| (at, block.min(len - at)))
            .collect();
        while !todo.is_empty() {
            let batch: Vec<(usize, usize)> = (0..self.shape.queue_depth)
                .map_while(|_| todo.pop_front())
                .collect();
            for (i, &(at, n)) in batch.iter().enumerate() {
                // SAFETY: `at + n <= len`, inside the caller's buffer.
                let p = unsafe { ptr.add(at) };
                let entry = if write {
                    io_uring::opcode::Write::new(fd, p, n as u32)
                        .offset(offset + at as u64)
                        .build()
                } else {
                    io_uring::opcode::Read::new(fd, p, n as u32)
                        .offset(offset + at as u64)
                        .build()
                }
                .user_data(i as u64);
                // SAFETY: the entry points into the caller's buffer, which stays borrowed for
                // this whole call, and this call waits for every entry it pushed before
                // returning, so the kernel never touches the buffer after the borrow ends.
                unsafe {
                    ring.submission()
                        .push(&entry)
                        .map_err(|_| std::io::Error::other("the swap file's ring is full"))?;
                }
                if self.shape.single_submit {
                    ring.submit()?;
                }
            }
            ring.submit_and_wait(batch.len())?;
            let mut seen = 0;
            while seen < batch.len() {
                let done: Vec<(u64, i32)> = ring
                    .completion()
                    .map(|c| (c.user_data(), c.result()))
                    .collect();
                if done.is_empty() {
                    ring.submit_and_wait(1)?;
                    continue;
                }
                for (i, res) in done {
                    seen += 1;
                    let (at, n) = batch
                        .get(i as usize)
                        .copied()
                        .ok_or_else(|| std::io::Error::other("io_uring: unknown completion"))?;
                    if res < 0 {
                        return Err(std::io::Error::from_raw_os_error(-res));
                    }
                    let moved = res as usize;
                    if moved == 0 {
                        return Err(std::io::Error::from(if write {
                            std::io::ErrorKind::WriteZero
                        } else {
                            std::io::ErrorKind::UnexpectedEof
                        }));
                    }
                    if moved < n {
                        todo.push_back((at + moved, n - moved));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for SwapFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reserves `len` bytes for `file` on disk.
fn reserve(file: &File, len: u64) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let len = libc::off_t::try_from(len).map_err(|_| std::io::Error::other("file too large"))?;
    // SAFETY: `posix_fallocate` reads no memory of ours; the descriptor is open for writing
    // and stays open for the call.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => Ok(()),
        // A filesystem without fallocate: set the size, and let writes find out.
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(len as u64),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

/// Removes swap files in `dir` left by processes that no longer exist (a run killed before it
/// could remove its own).
fn remove_stale(dir: &Path) {
    // Liveness is read from /proc: without it, nothing is removed.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(path: IoPath, single_submit: bool) -> IoPath {
        let dir = std::env::temp_dir().join(format!("ds-swap-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let name = format!("{path:?}{single_submit}")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>();
        // 16 requests of 64 KiB for the 1 MiB write, 4 in flight: batches of requests.
        let shape = IoShape {
            block_size: 64 << 10,
            queue_depth: 4,
            single_submit,
        };
        let file = SwapFile::create_on(&dir, &name, 3 << 20, path, shape).expect("create");
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        file.write_at(1 << 20, &data).expect("write");
        let mut back = vec![0u8; data.len()];
        file.read_at(1 << 20, &mut back).expect("read");
        assert_eq!(back, data);
        // Reserved and zero elsewhere; out of bounds is an error naming the file.
        let mut head = vec![1u8; 4096];
        file.read_at(0, &mut head).expect("read");
        assert!(head.iter().all(|&b| b == 0));
        let err = file
            .read_at((3 << 20) - 8, &mut head)
            .expect_err("past the end");
        assert!(err.to_string().contains("outside the"), "{err}");
        let used = file.io_path().clone();
        let p = file.path().to_path_buf();
        drop(file);
        assert!(!p.exists(), "dropped swap files are removed");
        std::fs::remove_dir_all(&dir).ok();
        used
    }

    #[test]
    fn both_io_paths_read_back_what_they_wrote() {
        assert_eq!(
            round_trip(IoPath::Positional("forced".into()), false),
            IoPath::Positional("forced".into())
        );
        // io_uring where the kernel allows it; the fallback is named otherwise.
        for single_submit in [false, true] {
            let used = round_trip(IoPath::Uring, single_submit);
            println!("io_uring request (single_submit {single_submit}) ran on: {used}");
        }
    }

    #[test]
    fn a_missing_or_unusable_path_is_named() {
        let missing = Path::new("/nonexistent/ds-swap");
        let err = SwapFile::create(missing, "x", 16, IoShape::default())
            .err()
            .expect("missing")
            .to_string();
        assert!(
            err.contains("/nonexistent/ds-swap") && err.contains("cannot be used"),
            "{err}"
        );
        let file = std::env::temp_dir().join(format!("ds-swap-notdir-{}", std::process::id()));
        std::fs::write(&file, b"x").expect("file");
        let err = SwapFile::create(&file, "x", 16, IoShape::default())
            .err()
            .expect("not a dir")
            .to_string();
        assert!(err.contains("is not a directory"), "{err}");
        std::fs::remove_file(&file).ok();
    }
}
