//! mtl-heads
