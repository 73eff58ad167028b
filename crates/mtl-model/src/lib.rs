//! mtl-model
