//! The arrival handshake: before a collective moves data, every rank sends a description of
//! its call to every other rank and waits for theirs.
//!
//! It gives the two guards their information: which ranks have arrived (the ones whose
//! description came) when the timeout strikes, and what each rank called, compared when
//! validation is on. Descriptions are 48 bytes, so the handshake costs a few microseconds.

use crate::raw::{RawComm, Requests, Tag};
use ds_core::{DType, Error, ReduceOp, Result};
use std::time::{Duration, Instant};

/// What a rank is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Call {
    /// The collective.
    pub op: &'static str,
    /// The element type (`None` for a barrier).
    pub dtype: Option<DType>,
    /// The elements the call covers (the full length for scatter and gather).
    pub len: usize,
    /// The reduce operation, if any.
    pub reduce: Option<ReduceOp>,
    /// The broadcast root, if any.
    pub root: Option<usize>,
}

const OPS: [&str; 7] = [
    "all_reduce",
    "reduce_scatter",
    "all_gather",
    "reduce_scatter_in_place",
    "all_gather_in_place",
    "broadcast",
    "barrier",
];
const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];
const REDUCES: [ReduceOp; 3] = [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max];

/// Codes are 1-based; 0 means "none" or an unknown value.
fn code<T: PartialEq>(table: &[T], value: Option<&T>) -> u64 {
    value
        .and_then(|v| table.iter().position(|t| t == v))
        .map_or(0, |i| i as u64 + 1)
}

fn decode<T: Copy>(table: &[T], code: u64) -> Option<T> {
    usize::try_from(code)
        .ok()
        .and_then(|c| c.checked_sub(1))
        .and_then(|i| table.get(i).copied())
}

impl Call {
    /// The wire form: op, dtype, len, reduce, root + 1 (0 for none), sequence number.
    fn encode(&self, seq: u64) -> [u64; 6] {
        [
            code(&OPS, Some(&self.op)),
            code(&DTYPES, self.dtype.as_ref()),
            self.len as u64,
            code(&REDUCES, self.reduce.as_ref()),
            self.root.map_or(0, |r| r as u64 + 1),
            seq,
        ]
    }

    fn decode(words: [u64; 6]) -> (Call, u64) {
        (
            Call {
                op: decode(&OPS, words[0]).unwrap_or("an unknown operation"),
                dtype: decode(&DTYPES, words[1]),
                len: usize::try_from(words[2]).unwrap_or(usize::MAX),
                reduce: decode(&REDUCES, words[3]),
                root: words[4]
                    .checked_sub(1)
                    .and_then(|r| usize::try_from(r).ok()),
            },
            words[5],
        )
    }

    fn describe(&self) -> String {
        let mut s = self.op.to_string();
        if let Some(d) = self.dtype {
            s.push_str(&format!(" dtype {d}"));
        }
        if self.dtype.is_some() {
            s.push_str(&format!(" len {}", self.len));
        }
        if let Some(r) = self.reduce {
            s.push_str(&format!(" op {r}"));
        }
        if let Some(r) = self.root {
            s.push_str(&format!(" root {r}"));
        }
        s
    }
}

fn to_bytes(words: &[u64; 6]) -> [u8; 48] {
    let mut out = [0u8; 48];
    for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    out
}

fn from_bytes(bytes: &[u8; 48]) -> [u64; 6] {
    let mut out = [0u64; 6];
    for (w, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *w = u64::from_le_bytes(b);
    }
    out
}

/// Exchanges `call` with every other rank and returns every rank's call in rank order. When
/// some ranks have not arrived by `timeout`, ends the job with a message naming them.
pub(crate) fn exchange(
    comm: &RawComm,
    call: &Call,
    seq: u64,
    timeout: Option<Duration>,
) -> Vec<Call> {
    let (rank, world) = (comm.rank(), comm.size());
    let mine = to_bytes(&call.encode(seq));
    let mut theirs = vec![[0u8; 48]; world];
    {
        let mut requests = Requests::new(comm);
        for (peer, slot) in theirs.iter_mut().enumerate() {
            if peer != rank {
                // 48 bytes as 24 u16 elements: the handshake needs no datatype of its own.
                requests.receive(peer, slot, DType::F16, Tag::Handshake);
            }
        }
        for peer in (0..world).filter(|&p| p != rank) {
            requests.send(peer, &mine, DType::F16, Tag::Handshake);
        }
        if let Err(late) = requests.wait(timeout.map(|t| Instant::now() + t)) {
            // The unfinished requests still point into `theirs`: the caller aborts the job
            // before anything is released (see `abort_late`), so never return normally here.
            abort_late(comm, call, timeout.unwrap_or_default(), &late);
        }
    }
    theirs[rank] = mine;
    theirs
        .iter()
        .map(|bytes| Call::decode(from_bytes(bytes)).0)
        .collect()
}

/// Ends the job because `missing` ranks never arrived at `call`.
fn abort_late(comm: &RawComm, call: &Call, timeout: Duration, missing: &[usize]) -> ! {
    let error = Error::Timeout {
        op: call.op,
        rank: comm.rank(),
        seconds: timeout.as_secs_f64(),
        missing: missing.to_vec(),
    };
    crate::say::say(format_args!("[ds] {error}; aborting the job"));
    comm.abort(crate::TIMEOUT_EXIT_CODE)
}

/// Checks that every rank made the same call; the error names the ranks that differ from
/// rank 0 and every rank's call. All ranks see the same list, so all fail alike.
pub(crate) fn agree(rank: usize, calls: &[Call]) -> Result<()> {
    let Some(first) = calls.first() else {
        return Ok(());
    };
    let differing: Vec<String> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| *c != first)
        .map(|(r, _)| r.to_string())
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    let each: Vec<String> = calls
        .iter()
        .enumerate()
        .map(|(r, c)| format!("rank {r}: {}", c.describe()))
        .collect();
    Err(ds_core::collectives::mismatch(
        calls[rank].op,
        rank,
        format!(
            "rank(s) {} differ from rank 0 ({})",
            differing.join(", "),
            each.join("; ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(op: &'static str, len: usize) -> Call {
        Call {
            op,
            dtype: Some(DType::BF16),
            len,
            reduce: Some(ReduceOp::Avg),
            root: None,
        }
    }

    #[test]
    fn descriptions_survive_the_wire_form() {
        let calls = [
            call("reduce_scatter_in_place", 65_537),
            Call {
                op: "broadcast",
                dtype: Some(DType::F16),
                len: 3,
                reduce: None,
                root: Some(2),
            },
            Call {
                op: "barrier",
                dtype: None,
                len: 0,
                reduce: None,
                root: None,
            },
        ];
        for c in calls {
            let (back, seq) = Call::decode(from_bytes(&to_bytes(&c.encode(41))));
            assert_eq!((back, seq), (c, 41));
        }
    }

    #[test]
    fn disagreement_names_the_ranks_and_their_calls() {
        let calls = [
            call("all_reduce", 100),
            call("all_reduce", 100),
            call("all_reduce", 99),
        ];
        assert!(agree(0, &calls[..2]).is_ok());
        let e = agree(1, &calls).expect_err("mismatch").to_string();
        assert!(e.contains("rank(s) 2 differ from rank 0"), "{e}");
        assert!(
            e.contains("rank 0: all_reduce dtype bf16 len 100 op avg"),
            "{e}"
        );
        assert!(
            e.contains("rank 2: all_reduce dtype bf16 len 99 op avg"),
            "{e}"
        );
    }
}
