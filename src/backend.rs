//! The backend the examples and tests run on, picked by Cargo feature: `cuda`, else `flex`, else
//! `ndarray` (the default).

#[cfg(feature = "cuda")]
pub type Backend = burn::backend::Cuda;
#[cfg(all(feature = "flex", not(feature = "cuda")))]
pub type Backend = burn::backend::Flex;
#[cfg(all(feature = "ndarray", not(any(feature = "cuda", feature = "flex"))))]
pub type Backend = burn::backend::NdArray;

/// The same backend with automatic differentiation, for training.
pub type TrainBackend = burn::backend::Autodiff<Backend>;

/// The device type of [`Backend`].
pub type Device = burn::tensor::Device<Backend>;

/// The backend's name, for tables and logs.
pub const NAME: &str = if cfg!(feature = "cuda") {
    "cuda"
} else if cfg!(feature = "flex") {
    "flex"
} else if cfg!(feature = "blas") {
    "ndarray+openblas"
} else {
    "ndarray"
};

/// The default device of [`Backend`].
pub fn device() -> Device {
    Default::default()
}

/// `n` devices of [`Backend`] for the peers of a training run: CUDA devices `0..n`, or on a
/// CPU backend `n` peers sharing the one CPU device.
pub fn devices(n: usize) -> Vec<Device> {
    #[cfg(feature = "cuda")]
    return (0..n).map(burn::backend::cuda::CudaDevice::new).collect();
    #[cfg(not(feature = "cuda"))]
    vec![device(); n]
}
