//! mtl-train
