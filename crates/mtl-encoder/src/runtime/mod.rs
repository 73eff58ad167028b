//! Where code runs: whether the backend computes on the host CPU, how many workers to use, and
//! the one pool of worker threads that encoding, prediction, the embedding cache, training shards
//! and the host optimizer update share. Also the process-wide settings that go with it (BLAS
//! threads, glibc's allocator) and the workspace's seeded generators.

mod allocator;
mod blas;
mod rng;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use burn::tensor::backend::Backend;

pub use allocator::tune_allocator;
pub use blas::{blas_threads, SingleThreadedBlas};
pub use rng::{dropout_mask, seed_dropout, Rng};

/// Whether `B` computes on the host CPU (ndarray, flex), where tensor data lives in host memory
/// and each operation runs on one core: then work is spread over [`cores`] workers.
pub fn is_cpu<B: Backend>(device: &B::Device) -> bool {
    let name = B::name(device).to_lowercase();
    name.contains("ndarray") || name.contains("flex") || name.contains("cpu")
}

/// The cores this process may use (at least 1).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The CPU model and the SIMD extensions the kernels may choose from at run time, for benchmark
/// tables (`Intel(R) Xeon(R) Processor, 2 cores; avx2 fma avx512f`).
pub fn cpu_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let mut simd: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let detected = [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            (
                "avx512bf16",
                std::arch::is_x86_feature_detected!("avx512bf16"),
            ),
            (
                "avx512vnni",
                std::arch::is_x86_feature_detected!("avx512vnni"),
            ),
        ];
        simd.extend(detected.iter().filter(|(_, on)| *on).map(|(name, _)| *name));
    }
    let simd = if simd.is_empty() {
        "none".to_string()
    } else {
        simd.join(" ")
    };
    format!("{model}, {} cores; {simd}", cores())
}

/// One worker per core on CPU backends, one on accelerators (which parallelise each operation).
pub fn default_workers<B: Backend>(device: &B::Device) -> usize {
    if is_cpu::<B>(device) {
        cores()
    } else {
        1
    }
}

/// `f(i, item)` for every item, on up to `workers` threads; results in item order.
///
/// Threads take the items in order as they finish, so callers put their costliest items first
/// (longest batches, longest shards) and the threads balance. With one worker (or one
/// item) everything runs on the calling thread in item order. While workers run, BLAS matrix
/// products are held to one thread each ([`SingleThreadedBlas`]).
pub fn map_parallel<I: Send, T: Send>(
    items: Vec<I>,
    workers: usize,
    f: impl Fn(usize, I) -> T + Sync,
) -> Vec<T> {
    let workers = workers.clamp(1, items.len().max(1));
    if workers == 1 {
        return items
            .into_iter()
            .enumerate()
            .map(|(i, x)| f(i, x))
            .collect();
    }
    let _blas = SingleThreadedBlas::new();
    let slots: Vec<Mutex<Option<I>>> = items.into_iter().map(|x| Mutex::new(Some(x))).collect();
    let taken = AtomicUsize::new(0);
    let mut results: Vec<Option<T>> = (0..slots.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let (f, slots, taken) = (&f, &slots, &taken);
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let i = taken.fetch_add(1, Ordering::Relaxed);
                        let Some(slot) = slots.get(i) else {
                            break;
                        };
                        let item = slot
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .take()
                            .expect("each item is taken once");
                        done.push((i, f(i, item)));
                    }
                    done
                })
            })
            .collect();
        for handle in handles {
            let done = handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            for (i, t) in done {
                results[i] = Some(t);
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn results_keep_item_order_on_any_number_of_workers() {
        let items: Vec<usize> = (0..37).collect();
        let want: Vec<(usize, usize)> = items.iter().map(|&x| (x, x * x)).collect();
        for workers in [1, 2, 3, 8, 100] {
            let got = map_parallel(items.clone(), workers, |i, x| (i, x * x));
            assert_eq!(got, want, "{workers} workers");
        }
        assert!(map_parallel(Vec::<u8>::new(), 4, |_, x| x).is_empty());
    }

    #[test]
    fn items_move_into_the_workers() {
        let mut data = vec![0u32; 10];
        let chunks: Vec<&mut [u32]> = data.chunks_mut(3).collect();
        map_parallel(chunks, 2, |i, chunk| {
            chunk.iter_mut().for_each(|v| *v = i as u32)
        });
        assert_eq!(data, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]);
    }

    #[test]
    fn cpu_description_names_the_cores() {
        let text = cpu_description();
        assert!(text.contains(&format!("{} cores; ", cores())), "{text}");
    }

    #[test]
    fn ndarray_is_a_cpu_backend() {
        assert!(is_cpu::<NdArray>(&Default::default()));
        assert_eq!(default_workers::<NdArray>(&Default::default()), cores());
    }
}
