//! GPU kernels by family; each file holds the GPU entry point and its CPU reference.

pub mod linear;
