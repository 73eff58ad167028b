//! mtl: multi-task sentence models in Rust. A pretrained BERT encoder shared by task heads,
//! trained together; generic over burn backends, chosen at compile time by Cargo feature.

pub mod backend;
pub mod cli;

pub use mtl_encoder as encoder;
pub use mtl_heads as heads;
pub use mtl_model as model;
pub use mtl_serve as serve;
pub use mtl_train as train;

/// The one error type a program using every layer needs: every encoder and model error
/// converts into it with `?`.
pub type Error = mtl_train::TrainError;

/// The README's code, compiled with the tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
