//! One line to standard error in one write.
//!
//! Ranks under `mpirun` share the launcher's standard error, and Rust's `eprintln!` writes a
//! line in pieces (one write per formatted part, unbuffered): pieces of two ranks' lines can
//! interleave mid-line. A line formatted first and written whole (pipes keep writes below 4 KiB
//! whole) stays readable, and so do the messages the guards promise.

use std::io::Write;

/// Writes `args` and a newline to standard error with a single write.
pub fn say(args: std::fmt::Arguments<'_>) {
    let mut line = args.to_string();
    line.push('\n');
    // Nothing sensible is left to do when standard error itself fails.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
