//! The epoch plan of a multi-task run: which rows go into which batch,
//! and in which order the batches of the different task pools are visited.
//!
//! Rows are grouped into *pools* by the exact set of tasks they are labelled for, so a row labelled
//! for every task trains all heads in the same batch. Each epoch shuffles every pool, cuts it into
//! batches and interleaves the pools' batches with a [`SamplerKind`]; every row appears exactly once.

use std::cmp::Reverse;
use std::str::FromStr;

use crate::error::{Result, TrainError};
use mtl_encoder::Rng;

/// How the next batch's pool is chosen among the pools that still have batches this epoch.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SamplerKind {
    /// Probability proportional to the pool's remaining batches: a uniformly random order of all
    /// batches, so each pool is visited in proportion to its size.
    Proportional,
    /// The pools in turn, skipping exhausted ones.
    RoundRobin,
    /// Probability proportional to `rows(pool)^(1/T)`: T = 1 is proportional, larger T flattens
    /// towards uniform, favouring small pools.
    Temperature(f64),
}

impl FromStr for SamplerKind {
    type Err = TrainError;

    /// Parses `proportional`, `round-robin`, `temperature` (T = 2) or `temperature:T` (T > 0).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "proportional" => return Ok(Self::Proportional),
            "round-robin" => return Ok(Self::RoundRobin),
            "temperature" => return Ok(Self::Temperature(2.0)),
            _ => {}
        }
        let t = s
            .strip_prefix("temperature:")
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|t| t.is_finite() && *t > 0.0);
        t.map(Self::Temperature).ok_or_else(|| {
            TrainError::Config(format!(
                "unknown sampler {s:?}: expected proportional, round-robin, temperature or \
                 temperature:T with T > 0"
            ))
        })
    }
}

/// One batch of an epoch: the pool it was cut from and its rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchPlan {
    /// Index of the pool (as returned by [`pool_keys`]) the rows belong to.
    pub pool: usize,
    /// Indices into the dataset's examples.
    pub rows: Vec<usize>,
}

/// How [`plan_epoch`] cuts and orders batches.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanOptions {
    /// Rows per batch (the last batch of a pool may be smaller); 0 is treated as 1.
    pub batch_size: usize,
    /// How pools are interleaved.
    pub sampler: SamplerKind,
    /// Batch rows of similar length together to reduce padding.
    pub group_by_length: bool,
}

/// Groups rows by the exact set of tasks they are labelled for.
///
/// `labels[row][task]` is the row's label for each task. Returns, in order of first appearance, the
/// task set of each pool (ascending task indices) and the row indices of each pool (ascending).
/// Rows labelled for no task are left out: they teach nothing.
pub fn pool_keys(labels: &[Vec<Option<usize>>]) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
    let mut keys: Vec<Vec<usize>> = Vec::new();
    let mut pools: Vec<Vec<usize>> = Vec::new();
    for (row, row_labels) in labels.iter().enumerate() {
        let key: Vec<usize> = row_labels
            .iter()
            .enumerate()
            .filter_map(|(task, label)| label.map(|_| task))
            .collect();
        if key.is_empty() {
            continue;
        }
        match keys.iter().position(|k| *k == key) {
            Some(p) => pools[p].push(row),
            None => {
                keys.push(key);
                pools.push(vec![row]);
            }
        }
    }
    (keys, pools)
}

/// Plans one epoch: every row of every pool exactly once, in batches of one pool each.
///
/// Each pool's rows are shuffled with `rng` and cut into batches of `batch_size` (the last one
/// smaller). With `group_by_length`, the shuffled rows are sorted by `lengths[row]` (descending;
/// a row without a length counts as 0) within windows of `50 * batch_size` rows before cutting,
/// and the pool's batch order is shuffled again. The pools' batches are then interleaved: each
/// draw picks a pool that still has batches according to `options.sampler` and takes its next one.
pub fn plan_epoch(
    pools: &[Vec<usize>],
    lengths: &[usize],
    options: &PlanOptions,
    rng: &mut Rng,
) -> Vec<BatchPlan> {
    let size = options.batch_size.max(1);
    let batches: Vec<Vec<Vec<usize>>> = pools
        .iter()
        .map(|rows| pool_batches(rows, lengths, size, options.group_by_length, rng))
        .collect();
    let weights: Vec<f64> = pools
        .iter()
        .map(|rows| pool_weight(options.sampler, rows.len()))
        .collect();
    let mut remaining: Vec<usize> = batches.iter().map(Vec::len).collect();
    let total: usize = remaining.iter().sum();
    let mut queues: Vec<_> = batches.into_iter().map(Vec::into_iter).collect();
    let mut plan = Vec::with_capacity(total);
    let mut next_in_turn = 0;
    while plan.len() < total {
        let choice = match options.sampler {
            SamplerKind::Proportional => {
                let w: Vec<f64> = remaining.iter().map(|&r| r as f64).collect();
                weighted(rng, &w)
            }
            SamplerKind::Temperature(_) => {
                let w: Vec<f64> = weights
                    .iter()
                    .zip(&remaining)
                    .map(|(&w, &r)| if r > 0 { w } else { 0.0 })
                    .collect();
                weighted(rng, &w)
            }
            SamplerKind::RoundRobin => (0..remaining.len())
                .map(|i| (next_in_turn + i) % remaining.len())
                .find(|&p| remaining[p] > 0),
        };
        // Unusable weights (a non-positive or non-finite temperature): take the first open pool.
        let Some(pool) = choice.or_else(|| remaining.iter().position(|&r| r > 0)) else {
            break;
        };
        let Some(rows) = queues[pool].next() else {
            break;
        };
        remaining[pool] -= 1;
        next_in_turn = pool + 1;
        plan.push(BatchPlan { pool, rows });
    }
    plan
}

/// The sampler's target probability of each pool given the pools' row counts (for reporting): the
/// share of draws each pool gets while all pools still have batches. Empty pools get 0; all zeros
/// when no pool has rows.
pub fn sampler_probabilities(kind: SamplerKind, sizes: &[usize]) -> Vec<f64> {
    let weights: Vec<f64> = sizes.iter().map(|&n| pool_weight(kind, n)).collect();
    let total: f64 = weights.iter().sum();
    if !(total.is_finite() && total > 0.0) {
        return vec![0.0; sizes.len()];
    }
    weights.iter().map(|w| w / total).collect()
}

/// The unnormalised weight of a pool of `rows` rows under `kind` (0 for an empty pool).
fn pool_weight(kind: SamplerKind, rows: usize) -> f64 {
    if rows == 0 {
        return 0.0;
    }
    match kind {
        SamplerKind::Proportional => rows as f64,
        SamplerKind::RoundRobin => 1.0,
        SamplerKind::Temperature(t) => (rows as f64).powf(1.0 / t),
    }
}

/// Draws an index with probability proportional to `weights`, ignoring non-positive and non-finite
/// weights; `None` when no weight is usable.
fn weighted(rng: &mut Rng, weights: &[f64]) -> Option<usize> {
    let usable = |w: f64| w.is_finite() && w > 0.0;
    let total: f64 = weights.iter().copied().filter(|&w| usable(w)).sum();
    if !(total.is_finite() && total > 0.0) {
        return None;
    }
    let mut u = rng.next_f64() * total;
    let mut last = None;
    for (i, &w) in weights.iter().enumerate().filter(|&(_, &w)| usable(w)) {
        if u < w {
            return Some(i);
        }
        u -= w;
        last = Some(i);
    }
    // Rounding left `u` just above the last weight.
    last
}

/// One pool's batches for an epoch (see [`plan_epoch`]).
fn pool_batches(
    rows: &[usize],
    lengths: &[usize],
    size: usize,
    group_by_length: bool,
    rng: &mut Rng,
) -> Vec<Vec<usize>> {
    let mut rows = rows.to_vec();
    rng.shuffle(&mut rows);
    if !group_by_length {
        return rows.chunks(size).map(<[usize]>::to_vec).collect();
    }
    let mut batches = Vec::new();
    for window in rows.chunks_mut(size.saturating_mul(50)) {
        window.sort_by_key(|&row| Reverse(lengths.get(row).copied().unwrap_or(0)));
        batches.extend(window.chunks(size).map(<[usize]>::to_vec));
    }
    rng.shuffle(&mut batches);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(batch_size: usize, sampler: SamplerKind) -> PlanOptions {
        PlanOptions {
            batch_size,
            sampler,
            group_by_length: false,
        }
    }

    /// Rows `start..end` as one pool.
    fn pool(start: usize, end: usize) -> Vec<usize> {
        (start..end).collect()
    }

    fn all_rows(plan: &[BatchPlan]) -> Vec<usize> {
        let mut rows: Vec<usize> = plan.iter().flat_map(|b| b.rows.clone()).collect();
        rows.sort_unstable();
        rows
    }

    #[test]
    fn sampler_kinds_parse() {
        assert_eq!(
            "proportional".parse::<SamplerKind>().unwrap(),
            SamplerKind::Proportional
        );
        assert_eq!(
            "round-robin".parse::<SamplerKind>().unwrap(),
            SamplerKind::RoundRobin
        );
        assert_eq!(
            "temperature".parse::<SamplerKind>().unwrap(),
            SamplerKind::Temperature(2.0)
        );
        assert_eq!(
            "temperature:3.5".parse::<SamplerKind>().unwrap(),
            SamplerKind::Temperature(3.5)
        );
        for bad in [
            "",
            "uniform",
            "temperature:",
            "temperature:0",
            "temperature:-1",
            "temperature:nan",
            "temperature:inf",
        ] {
            let err = bad.parse::<SamplerKind>().unwrap_err();
            assert!(
                matches!(err, TrainError::Config(ref m) if m.contains("unknown sampler")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn pools_group_rows_by_task_set() {
        let labels = vec![
            vec![Some(0), Some(1)],
            vec![Some(2), None],
            vec![None, Some(0)],
            vec![Some(1), Some(0)],
            vec![None, None],
            vec![Some(0), None],
        ];
        let (keys, pools) = pool_keys(&labels);
        assert_eq!(keys, vec![vec![0, 1], vec![0], vec![1]]);
        assert_eq!(pools, vec![vec![0, 3], vec![1, 5], vec![2]]);
        assert_eq!(pool_keys(&[]), (vec![], vec![]));
    }

    #[test]
    fn every_row_once_in_batches_of_the_right_size() {
        let pools = vec![pool(0, 23), pool(23, 30), vec![], pool(30, 31)];
        for sampler in [
            SamplerKind::Proportional,
            SamplerKind::RoundRobin,
            SamplerKind::Temperature(2.0),
        ] {
            let plan = plan_epoch(&pools, &[], &options(5, sampler), &mut Rng::new(3));
            assert_eq!(all_rows(&plan), pool(0, 31));
            let mut sizes: Vec<Vec<usize>> = vec![vec![]; pools.len()];
            for b in &plan {
                assert!(b.rows.iter().all(|r| pools[b.pool].contains(r)));
                sizes[b.pool].push(b.rows.len());
            }
            sizes
                .iter_mut()
                .for_each(|s| s.sort_unstable_by(|a, b| b.cmp(a)));
            assert_eq!(
                sizes,
                vec![vec![5, 5, 5, 5, 3], vec![5, 2], vec![], vec![1]]
            );
        }
        // Batch size 0 acts as 1.
        let plan = plan_epoch(
            &pools,
            &[],
            &options(0, SamplerKind::Proportional),
            &mut Rng::new(3),
        );
        assert_eq!(plan.len(), 31);
        assert!(plan_epoch(
            &[],
            &[],
            &options(4, SamplerKind::RoundRobin),
            &mut Rng::new(3)
        )
        .is_empty());
    }

    #[test]
    fn plans_are_deterministic_per_seed() {
        let pools = vec![pool(0, 40), pool(40, 60)];
        let opts = options(4, SamplerKind::Proportional);
        let plan = |seed| plan_epoch(&pools, &[], &opts, &mut Rng::new(seed));
        assert_eq!(plan(11), plan(11));
        assert_ne!(plan(11), plan(12));
        // Consecutive epochs from one generator differ.
        let mut rng = Rng::new(11);
        let first = plan_epoch(&pools, &[], &opts, &mut rng);
        assert_eq!(first, plan(11));
        assert_ne!(plan_epoch(&pools, &[], &opts, &mut rng), first);
    }

    #[test]
    fn target_probabilities() {
        let sizes = [900, 100];
        assert_eq!(
            sampler_probabilities(SamplerKind::Proportional, &sizes),
            [0.9, 0.1]
        );
        assert_eq!(
            sampler_probabilities(SamplerKind::Temperature(2.0), &sizes),
            [30.0 / 40.0, 10.0 / 40.0]
        );
        assert_eq!(
            sampler_probabilities(SamplerKind::Temperature(1.0), &sizes),
            [0.9, 0.1]
        );
        assert_eq!(
            sampler_probabilities(SamplerKind::RoundRobin, &sizes),
            [0.5, 0.5]
        );
        assert_eq!(
            sampler_probabilities(SamplerKind::RoundRobin, &[3, 0, 5, 9]),
            [1.0 / 3.0, 0.0, 1.0 / 3.0, 1.0 / 3.0]
        );
        assert_eq!(
            sampler_probabilities(SamplerKind::Proportional, &[0, 0]),
            [0.0, 0.0]
        );
        assert!(sampler_probabilities(SamplerKind::Proportional, &[]).is_empty());
    }

    #[test]
    fn round_robin_alternates_until_a_pool_runs_out() {
        let pools = vec![pool(0, 40), pool(40, 60), vec![], pool(60, 70)];
        let plan = plan_epoch(
            &pools,
            &[],
            &options(10, SamplerKind::RoundRobin),
            &mut Rng::new(5),
        );
        let order: Vec<usize> = plan.iter().map(|b| b.pool).collect();
        assert_eq!(order, [0, 1, 3, 0, 1, 0, 0]);
    }

    #[test]
    fn empirical_pool_shares_follow_the_sampler() {
        // 90 batches vs 10: share of pool 0 among the first 10 draws, over 2000 epochs.
        let pools = vec![pool(0, 900), pool(900, 1000)];
        let share = |sampler| {
            let mut rng = Rng::new(2024);
            let mut first = 0usize;
            let epochs = 2000;
            for _ in 0..epochs {
                let plan = plan_epoch(&pools, &[], &options(10, sampler), &mut rng);
                first += plan[..10].iter().filter(|b| b.pool == 0).count();
            }
            first as f64 / (10 * epochs) as f64
        };
        let p = share(SamplerKind::Proportional);
        assert!((p - 0.9).abs() < 0.01, "proportional {p}");
        let t = share(SamplerKind::Temperature(2.0));
        assert!((t - 0.75).abs() < 0.015, "temperature {t}");
        let r = share(SamplerKind::RoundRobin);
        assert_eq!(r, 0.5);
    }

    #[test]
    fn group_by_length_sorts_within_batches() {
        let mut rng = Rng::new(9);
        let lengths: Vec<usize> = (0..300).map(|_| 1 + rng.below(100)).collect();
        let pools = vec![pool(0, 250), pool(250, 300)];
        let opts = PlanOptions {
            batch_size: 4,
            sampler: SamplerKind::Proportional,
            group_by_length: true,
        };
        let plan = plan_epoch(&pools, &lengths, &opts, &mut rng);
        assert_eq!(all_rows(&plan), pool(0, 300));
        assert_eq!(plan.len(), 63 + 13);
        for b in &plan {
            let l: Vec<usize> = b.rows.iter().map(|&r| lengths[r]).collect();
            assert!(l.windows(2).all(|w| w[0] >= w[1]), "{l:?}");
        }
        // Pool 1 (50 rows) is one window: its batches tile one descending run, and batch order is
        // shuffled so the longest batch is not always first.
        let mut pool1: Vec<&BatchPlan> = plan.iter().filter(|b| b.pool == 1).collect();
        let ends = |b: &BatchPlan| (lengths[b.rows[0]], lengths[b.rows[b.rows.len() - 1]]);
        assert!(pool1.windows(2).any(|w| ends(w[0]) < ends(w[1])));
        pool1.sort_by_key(|b| Reverse(ends(b)));
        let run: Vec<usize> = pool1
            .iter()
            .flat_map(|b| b.rows.iter().map(|&r| lengths[r]))
            .collect();
        assert!(run.windows(2).all(|w| w[0] >= w[1]), "{run:?}");
    }
}
