mod global;
pub use global::*;

mod config;
pub use config::*;

mod api;
pub use api::*;

mod local;

// Upstream's tests need burn-flex, burn-wgpu, burn-cuda and serial_test (PATCHES.md).
#[cfg(all(test, feature = "upstream-tests"))]
mod tests;
