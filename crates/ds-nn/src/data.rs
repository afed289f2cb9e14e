//! Text as training data: a byte-level tokenizer, token files, and a dataset of fixed-length
//! windows that ds-zero's loader shards by rank, shuffles from its seed and resumes.

use ds_model::Dataset;
use std::path::Path;
use std::sync::Arc;

/// The vocabulary of [`ByteTokenizer`]: one token per byte value.
pub const BYTE_VOCAB: usize = 256;

/// Bytes are tokens: any text (any file) encodes, nothing is unknown, and decoding is the
/// exact inverse (shown as UTF-8, lossily where a sample cuts a character).
#[derive(Debug, Clone, Copy, Default)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    /// The tokens of `bytes`.
    pub fn encode(&self, bytes: &[u8]) -> Vec<u16> {
        bytes.iter().map(|&b| u16::from(b)).collect()
    }

    /// The text of `tokens` (ids outside 0..256 are dropped).
    pub fn decode(&self, tokens: &[i32]) -> String {
        let bytes: Vec<u8> = tokens
            .iter()
            .filter_map(|&t| u8::try_from(t).ok())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Why a corpus could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError(pub String);

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DataError {}

/// Reads a corpus: a `.bin` file is pre-tokenized (little-endian u16 ids, nanoGPT's format),
/// anything else is text tokenized by bytes. Returns the tokens and the vocabulary they need.
///
/// # Errors
/// A one-line message saying what is wrong with the path or the file and what to do.
pub fn load_tokens(path: &Path) -> Result<(Vec<u16>, usize), DataError> {
    let bytes = std::fs::read(path).map_err(|e| {
        DataError(format!(
            "cannot read the data file {}: {e} (pass --data with a readable text file, or a .bin \
             file of u16 token ids)",
            path.display()
        ))
    })?;
    let tokens = if path.extension().is_some_and(|e| e == "bin") {
        if !bytes.len().is_multiple_of(2) {
            return Err(DataError(format!(
                "{} is not a token file: {} bytes is not a whole number of u16 ids",
                path.display(),
                bytes.len()
            )));
        }
        bytes
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect()
    } else {
        ByteTokenizer.encode(&bytes)
    };
    let vocab = tokens
        .iter()
        .map(|&t| usize::from(t) + 1)
        .max()
        .unwrap_or(0)
        .max(BYTE_VOCAB);
    Ok((tokens, vocab))
}

/// The entropy (nats per token) of the corpus's unigram distribution: the loss of a model that
/// only knows token frequencies. A language model must go well below it.
pub fn unigram_entropy(tokens: &[u16]) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for &t in tokens {
        *counts.entry(t).or_insert(0usize) += 1;
    }
    let n = tokens.len() as f64;
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

/// Windows of `seq + 1` tokens starting every `seq` tokens: sample `i` is
/// `tokens[i*seq ..= i*seq + seq]` (inputs and, shifted by one, targets).
#[derive(Debug, Clone)]
pub struct TokenWindows {
    tokens: Arc<Vec<u16>>,
    seq: usize,
}

impl TokenWindows {
    /// Windows over `tokens`.
    ///
    /// # Errors
    /// When the corpus holds no window of `seq + 1` tokens.
    pub fn new(tokens: Arc<Vec<u16>>, seq: usize) -> Result<Self, DataError> {
        if seq == 0 || tokens.len() < seq + 1 {
            return Err(DataError(format!(
                "the corpus has {} tokens, fewer than one sequence of {} (use a larger file or \
                 a shorter context)",
                tokens.len(),
                seq + 1
            )));
        }
        Ok(TokenWindows { tokens, seq })
    }
}

impl Dataset for TokenWindows {
    type Item = Vec<i32>;

    fn len(&self) -> usize {
        (self.tokens.len() - 1) / self.seq
    }

    fn get(&self, index: usize) -> Vec<i32> {
        let start = index * self.seq;
        self.tokens[start..start + self.seq + 1]
            .iter()
            .map(|&t| i32::from(t))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_windows_overlap_by_one() {
        let text = "héllo, ds!";
        let tokens = ByteTokenizer.encode(text.as_bytes());
        let ids: Vec<i32> = tokens.iter().map(|&t| i32::from(t)).collect();
        assert_eq!(ByteTokenizer.decode(&ids), text);
        let w = TokenWindows::new(Arc::new(tokens), 4).expect("windows");
        assert_eq!(w.len(), 2); // 11 bytes: windows at 0 and 4 (5 tokens each)
        assert_eq!(w.get(1)[0], w.get(0)[4]);
        assert!(TokenWindows::new(Arc::new(vec![1, 2]), 4).is_err());
    }

    #[test]
    fn unigram_entropy_follows_its_formula() {
        assert!((unigram_entropy(&[1, 2, 1, 2]) - 2f64.ln()).abs() < 1e-12);
        assert_eq!(unigram_entropy(&[7, 7, 7]), 0.0);
    }

    #[test]
    fn unreadable_and_malformed_files_say_what_to_do() {
        let e = load_tokens(Path::new("/nonexistent/corpus.txt")).expect_err("missing");
        assert!(
            e.0.contains("/nonexistent/corpus.txt") && e.0.contains("--data"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("ds-nn-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let odd = dir.join("odd.bin");
        std::fs::write(&odd, [1u8, 0, 2]).expect("write");
        assert!(load_tokens(&odd).expect_err("odd").0.contains("u16"));
        let ok = dir.join("ok.bin");
        std::fs::write(&ok, [1u8, 0, 44, 1]).expect("write");
        assert_eq!(load_tokens(&ok).expect("ok"), (vec![1, 300], 301));
        std::fs::remove_dir_all(&dir).ok();
    }
}
