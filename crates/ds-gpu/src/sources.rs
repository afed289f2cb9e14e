//! The kernel sources, in the order they are concatenated into one program.

/// `(file name, text)` of every source file in `kernels/`, in compilation order.
pub const SOURCES: [(&str, &str); 6] = [
    ("common.cuh", include_str!("../kernels/common.cuh")),
    ("elementwise.cu", include_str!("../kernels/elementwise.cu")),
    ("reduce.cu", include_str!("../kernels/reduce.cu")),
    ("optim.cu", include_str!("../kernels/optim.cu")),
    ("nn.cu", include_str!("../kernels/nn.cu")),
    ("attention.cu", include_str!("../kernels/attention.cu")),
];

/// The whole program NVRTC or hiprtc compiles: every file of [`SOURCES`] behind a marker line
/// naming it, so a compiler's log can be traced back to its file.
pub fn program() -> String {
    let mut s = String::new();
    for (name, text) in SOURCES {
        s.push_str("// ---- ");
        s.push_str(name);
        s.push('\n');
        s.push_str(text);
        s.push('\n');
    }
    s
}
