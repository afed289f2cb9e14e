//! Files that are either wholly written or not there: write to a temporary name, flush to
//! disk, rename over the target, and flush the directory. Readers verify each file against
//! the size and checksum recorded when it was written.

use crate::{Error, Result};
use std::io::Write;
use std::path::Path;

/// FNV-1a, 64-bit: a fast checksum that catches truncation and corruption (not an attacker).
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn io(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::checkpoint(path, format!("cannot {what}: {e}"))
}

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never a part.
///
/// # Errors
/// [`Error::Checkpoint`] naming the file on any I/O failure.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, "create", e))?;
        f.write_all(bytes).map_err(|e| io(&tmp, "write", e))?;
        f.sync_all().map_err(|e| io(&tmp, "flush", e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io(path, "rename into place", e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Flushes a directory's entries (renames) to disk.
///
/// # Errors
/// [`Error::Checkpoint`] naming the directory.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    // Opening a directory read-only and syncing it is how POSIX persists renames; platforms
    // that cannot open directories have nothing to flush.
    if let Ok(d) = std::fs::File::open(dir) {
        d.sync_all().map_err(|e| io(dir, "flush", e))?;
    }
    Ok(())
}

/// Reads `path`, checking it against the recorded size and checksum.
///
/// # Errors
/// [`Error::Checkpoint`] naming the file when it is missing, has another size (truncated or
/// overwritten) or fails the checksum (corrupt).
pub(crate) fn read_verified(path: &Path, size: u64, checksum: u64) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::checkpoint(path, "is missing")
        } else {
            io(path, "read", e)
        }
    })?;
    if bytes.len() as u64 != size {
        return Err(Error::checkpoint(
            path,
            format!(
                "is {} bytes but was written as {size}: the file is truncated or was overwritten",
                bytes.len()
            ),
        ));
    }
    if fnv1a64(&bytes) != checksum {
        return Err(Error::checkpoint(
            path,
            "does not match the checksum recorded when it was written: the file is corrupt",
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_its_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn atomic_writes_replace_and_verified_reads_refuse_damage() {
        let dir = std::env::temp_dir().join(format!("ds-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("a.bin");
        write_atomic(&p, b"first").expect("write");
        write_atomic(&p, b"second").expect("rewrite");
        assert_eq!(
            read_verified(&p, 6, fnv1a64(b"second")).expect("ok"),
            b"second"
        );
        let err = read_verified(&p, 7, fnv1a64(b"second")).expect_err("size");
        assert!(
            err.to_string().contains("a.bin") && err.to_string().contains("truncated"),
            "{err}"
        );
        let err = read_verified(&p, 6, 1).expect_err("checksum");
        assert!(err.to_string().contains("corrupt"), "{err}");
        let err = read_verified(&dir.join("gone"), 1, 1).expect_err("missing");
        assert!(
            err.to_string().contains("gone") && err.to_string().contains("missing"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
