//! The kernel-family traits for the WGPU backend: each file holds its WGSL bodies and the code
//! that binds validated views to them.

mod attention;
mod elementwise;
mod linalg;
mod nn;
mod optim;
mod reduce;
