//! Data-parallel backward passes: a batch is cut into shards, each shard runs its forward and
//! backward pass on a thread of its own, with its own autodiff graph, and the shards' gradients
//! are summed in shard order.
//!
//! On CPU backends one training step otherwise runs on one core (burn-ndarray's operations are
//! single-threaded), so this is what puts every core to work during training. The shards are
//! fixed by their count alone: the same count gives the same masks and the same sums on any
//! machine, however many cores run them.

use std::ops::Range;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use mtl_encoder::runtime::{map_parallel, seed_dropout, Rng, SingleThreadedBlas};

/// `n` rows cut into at most `shards` contiguous, non-empty ranges whose lengths differ by at
/// most one (longer ones first).
pub fn shard_ranges(n: usize, shards: usize) -> Vec<Range<usize>> {
    let shards = shards.clamp(1, n.max(1));
    let (base, extra) = (n / shards, n % shards);
    let mut start = 0;
    (0..shards)
        .map(|k| {
            let len = base + usize::from(k < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// Rows ordered by length (`lengths`, ascending) cut into at most `shards` contiguous,
/// non-empty ranges of about equal work, so that no worker waits for a longer one: a shard
/// pads to its longest row, and its work is its row count times `cost` of that length. The
/// cut minimises the largest shard's work (long rows get shards of fewer rows); rows of one
/// length get the cut of [`shard_ranges`].
pub fn balanced_ranges(
    lengths: &[usize],
    shards: usize,
    cost: impl Fn(usize) -> f64,
) -> Vec<Range<usize>> {
    let n = lengths.len();
    let shards = shards.clamp(1, n.max(1));
    if n == 0 || lengths.first() == lengths.last() {
        return shard_ranges(n, shards);
    }
    // Shards for a largest work of `limit`, taking rows from the longest down.
    let cut = |limit: f64| -> Vec<Range<usize>> {
        let mut ranges = Vec::new();
        let mut end = n;
        while end > 0 {
            let per_row = cost(lengths[end - 1]);
            let take = ((limit / per_row).floor() as usize).clamp(1, end);
            ranges.push(end - take..end);
            end -= take;
        }
        ranges.reverse();
        ranges
    };
    let worst = |ranges: &[Range<usize>]| {
        ranges
            .iter()
            .map(|r| r.len() as f64 * cost(lengths[r.end - 1]))
            .fold(0.0, f64::max)
    };
    let equal = shard_ranges(n, shards);
    let (mut low, mut high) = (0.0, worst(&equal));
    for _ in 0..40 {
        let mid = 0.5 * (low + high);
        if cut(mid).len() <= shards {
            high = mid;
        } else {
            low = mid;
        }
    }
    let balanced = cut(high);
    if balanced.len() <= shards && worst(&balanced) < worst(&equal) {
        balanced
    } else {
        equal
    }
}

/// The shards of a batch cut into `all` that peer `rank` of `world` computes: a contiguous
/// run of them, and the batch index of its first.
pub fn peer_shards(
    all: Vec<Range<usize>>,
    rank: usize,
    world: usize,
) -> (usize, Vec<Range<usize>>) {
    let own = shard_ranges(all.len(), world)
        .get(rank)
        .cloned()
        .unwrap_or(all.len()..all.len());
    (own.start, all[own].to_vec())
}

/// `rows` ordered by `length` (stably), so that shards cut from them hold rows of similar
/// lengths. The loss of a batch is a mean over its rows, so the order changes nothing else.
pub fn by_length(rows: &[usize], length: impl Fn(usize) -> usize) -> Vec<usize> {
    let mut sorted = rows.to_vec();
    sorted.sort_by_key(|&r| length(r));
    sorted
}

/// The dropout seed of shard `shard` of a step seeded `seed`.
pub fn shard_seed(seed: u64, shard: usize) -> u64 {
    Rng::new(seed ^ (shard as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

/// Gives every float parameter a new autodiff leaf (same id, same values, storage shared), so
/// graphs built from the copy stay apart from graphs built from the original or other copies.
struct FreshLeaves;

impl<AB: AutodiffBackend> ModuleMapper<AB> for FreshLeaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let tracked = tensor.is_require_grad();
        let fresh = Tensor::from_inner(tensor.inner());
        let fresh = if tracked { fresh.require_grad() } else { fresh };
        Param::from_mapped_value(id, fresh, mapper)
    }
}

/// Initialises lazily initialised parameters in place, so that copies share their values
/// instead of each drawing its own.
struct Initialise;

impl<B: Backend> ModuleVisitor<B> for Initialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// Draws `module`'s lazily initialised parameters now, so that its clones share them.
pub fn initialise<B: Backend, M: burn::module::Module<B>>(module: &M) {
    module.visit(&mut Initialise);
}

/// A copy of `module` with its own autodiff leaves (see [`FreshLeaves`]).
pub fn fork<AB: AutodiffBackend, M: AutodiffModule<AB>>(module: &M) -> M {
    initialise(module);
    module.clone().map(&mut FreshLeaves)
}

/// Runs `loss(module, rows)` for each of the row ranges `shards` and returns, in shard order,
/// the gradients of each shard's loss with `loss`'s second value. Shards run on up to `threads`
/// workers ([`map_parallel`]), the last shard first; shard `k` seeds its dropout with
/// [`shard_seed`]`(seed, first + k)` first (`first`: its batch index of the first shard). The
/// losses should be scaled so that their sum is the batch's loss (a shard's mean times its share
/// of the rows). Callers order the rows by length first: each shard then pads to its own longest
/// row, far less than the batch's (see [`by_length`]).
///
/// BLAS products run on one thread here whatever `threads` is ([`SingleThreadedBlas`]):
/// OpenBLAS cuts its sums by its thread count, so a shard's gradients would otherwise depend on
/// how many workers (or peers) share the cores rather than on the shards alone.
pub fn shard_gradients<AB, M, R, F>(
    module: &M,
    shards: &[Range<usize>],
    first: usize,
    threads: usize,
    seed: u64,
    loss: F,
) -> Vec<(GradientsParams, R)>
where
    AB: AutodiffBackend,
    M: AutodiffModule<AB>,
    R: Send,
    F: Fn(&M, Range<usize>) -> (Tensor<AB, 1>, R) + Sync,
{
    let ranges = shards;
    let _blas = SingleThreadedBlas::new();
    // The workers take the costliest shards (the caller's last) first, so that long and short
    // shards balance across them; the results come back in shard order.
    let copies: Vec<(usize, M)> = (0..ranges.len()).rev().map(|k| (k, fork(module))).collect();
    let mut results = map_parallel(copies, threads, |_, (shard, copy)| {
        seed_dropout(shard_seed(seed, first + shard));
        let (value, extra) = loss(&copy, ranges[shard].clone());
        (GradientsParams::from_grads(value.backward(), &copy), extra)
    });
    results.reverse();
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::TensorData;

    type AB = Autodiff<NdArray>;

    #[test]
    fn ranges_cover_the_rows_once() {
        assert_eq!(shard_ranges(10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(shard_ranges(2, 4), vec![0..1, 1..2]);
        assert_eq!(shard_ranges(5, 1), vec![0..5]);
        assert_eq!(shard_ranges(0, 2), Vec::<Range<usize>>::new());
        assert_eq!(shard_ranges(7, 0), vec![0..7]);
    }

    /// Peers split the batch's shards among them: together exactly the shards of one peer.
    #[test]
    fn peers_take_contiguous_runs_of_the_shards() {
        let cut = shard_ranges;
        assert_eq!(peer_shards(cut(10, 3), 0, 1), (0, vec![0..4, 4..7, 7..10]));
        assert_eq!(peer_shards(cut(10, 4), 0, 2), (0, vec![0..3, 3..6]));
        assert_eq!(peer_shards(cut(10, 4), 1, 2), (2, vec![6..8, 8..10]));
        // Fewer shards than peers: a peer may have nothing to do.
        assert_eq!(peer_shards(cut(1, 2), 1, 2), (1, vec![]));
    }

    /// Shards of mixed lengths are cut by work: the long rows' shard has fewer rows, and the
    /// largest shard's work is less than with equal row counts.
    #[test]
    fn balanced_shards_even_out_the_work() {
        let cost = |len: usize| len as f64;
        let work = |lengths: &[usize], ranges: &[Range<usize>]| -> f64 {
            ranges
                .iter()
                .map(|r| r.len() as f64 * cost(lengths[r.end - 1]))
                .fold(0.0, f64::max)
        };
        // 24 phrases of 8 tokens and 8 of 40, as a random batch of SST-2 phrases looks.
        let lengths: Vec<usize> = [vec![8; 24], vec![40; 8]].concat();
        let cut = balanced_ranges(&lengths, 2, cost);
        assert_eq!(cut.len(), 2);
        assert_eq!(
            (cut[0].start, cut[0].end, cut[1].end),
            (0, cut[1].start, 32)
        );
        assert!(cut[1].len() < 16, "{cut:?}");
        assert!(work(&lengths, &cut) < work(&lengths, &shard_ranges(32, 2)));
        // Equal lengths, no rows, one shard: the plain cut.
        assert_eq!(balanced_ranges(&[5; 10], 3, cost), shard_ranges(10, 3));
        assert_eq!(balanced_ranges(&[], 2, cost), shard_ranges(0, 2));
        assert_eq!(balanced_ranges(&[1, 2, 3], 1, cost), shard_ranges(3, 1));
        // Never more shards than asked, every row once, in order.
        for shards in 1..6 {
            let lengths: Vec<usize> = (1..=20).map(|i| i * i).collect();
            let cut = balanced_ranges(&lengths, shards, cost);
            assert!(cut.len() <= shards);
            assert_eq!(cut.iter().map(|r| r.len()).sum::<usize>(), 20);
            assert!(cut.windows(2).all(|w| w[0].end == w[1].start));
        }
    }

    #[test]
    fn forked_leaves_keep_ids_values_and_frozen_flags() {
        let device = Default::default();
        let linear: Linear<AB> = LinearConfig::new(3, 2).init(&device);
        let linear = Linear {
            bias: linear.bias.map(|b| b.set_require_grad(false)),
            ..linear
        };
        let copy = fork(&linear);
        assert_eq!(copy.weight.id, linear.weight.id);
        assert_eq!(
            copy.weight.val().into_data(),
            linear.weight.val().into_data()
        );
        assert!(copy.weight.val().is_require_grad());
        assert!(!copy.bias.as_ref().unwrap().val().is_require_grad());
    }

    /// Sharded gradients of a mean squared loss, summed, equal the whole batch's, whatever the
    /// number of shards and threads.
    #[test]
    fn shard_gradients_sum_to_the_batch_gradient() {
        let device = Default::default();
        let linear: Linear<AB> = LinearConfig::new(4, 3).init(&device);
        let n = 9;
        let x: Vec<f32> = (0..n * 4)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let input = Tensor::<AB, 2>::from_data(TensorData::new(x, [n, 4]), &device);
        let loss = |m: &Linear<AB>, rows: Range<usize>| {
            let share = rows.len() as f64 / n as f64;
            let y = m.forward(input.clone().slice([rows, 0..4]));
            ((y.clone() * y).mean() * share, ())
        };
        let weight_grad = |parts: Vec<(GradientsParams, ())>| -> Vec<f32> {
            let mut total: Option<Tensor<NdArray, 2>> = None;
            for (mut g, _) in parts {
                let w = g.remove::<NdArray, 2>(linear.weight.id).unwrap();
                total = Some(match total {
                    Some(t) => t + w,
                    None => w,
                });
            }
            total.unwrap().into_data().into_vec().unwrap()
        };
        let whole = weight_grad(shard_gradients(&linear, &shard_ranges(n, 1), 0, 1, 0, loss));
        for (shards, threads) in [(2, 2), (3, 2), (4, 1), (9, 3)] {
            let parts = shard_gradients(&linear, &shard_ranges(n, shards), 0, threads, 0, loss);
            assert_eq!(parts.len(), shards);
            let summed = weight_grad(parts);
            for (a, b) in whole.iter().zip(&summed) {
                assert!((a - b).abs() < 1e-6, "{shards} shards: {a} vs {b}");
            }
        }
        // The original module's graph is untouched: it can still run its own backward pass.
        let y = linear.forward(input.clone());
        let grads = y.sum().backward();
        assert!(linear.weight.grad(&grads).is_some());
        let _ = linear.valid();
    }

    /// Each shard's dropout masks depend on the step seed and its index, not on the threads.
    #[test]
    fn shard_dropout_is_the_same_on_any_number_of_threads() {
        let device = Default::default();
        let linear: Linear<AB> = LinearConfig::new(4, 4).init(&device);
        let dropout = mtl_encoder::Dropout::new(0.5);
        let input = Tensor::<AB, 2>::ones([8, 4], &device);
        let loss = |m: &Linear<AB>, rows: Range<usize>| {
            let y = dropout.forward(m.forward(input.clone().slice([rows, 0..4])));
            let values = y.clone().into_data().into_vec::<f32>().unwrap();
            (y.sum(), values)
        };
        let one: Vec<Vec<f32>> = shard_gradients(&linear, &shard_ranges(8, 4), 0, 1, 3, loss)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let many: Vec<Vec<f32>> = shard_gradients(&linear, &shard_ranges(8, 4), 0, 4, 3, loss)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(one, many);
        assert_ne!(one[0], one[1], "shards draw different masks");
    }
}
