//! Modules with burn's parameter names whose forward passes call [`crate::ops`]: linear layers,
//! LayerNorm, dropout, activations.

mod activation;
mod dropout;
mod layer_norm;
mod linear;

pub use dropout::Dropout;
pub use layer_norm::LayerNorm;
pub use linear::{Linear, LinearConfig};
