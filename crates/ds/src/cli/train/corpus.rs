//! The default corpus: this project's own documentation, compiled into the `ds` binary so the
//! main job needs no download and runs from any directory.

/// The documents, in a fixed order.
const DOCUMENTS: [&str; 6] = [
    include_str!("../../../../../README.md"),
    include_str!("../../../../../docs/design.md"),
    include_str!("../../../../../docs/engine.md"),
    include_str!("../../../../../docs/mpi.md"),
    include_str!("../../../../../docs/gpu.md"),
    include_str!("../../../../../docs/performance.md"),
];

/// The default corpus's bytes (the documents separated by blank lines).
pub fn default_corpus() -> Vec<u8> {
    DOCUMENTS.join("\n\n").into_bytes()
}
