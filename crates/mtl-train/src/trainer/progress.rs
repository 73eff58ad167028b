//! What a run shows and logs as it goes: the progress bar, and each task's training loss
//! summed between evaluations.

use std::collections::BTreeMap;

use indicatif::{ProgressBar, ProgressStyle};

/// The progress bar on stderr (hidden unless asked for).
pub(super) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar over `total` optimizer steps, at `done`.
    pub(super) fn new(show: bool, total: usize, done: usize) -> Self {
        if !show {
            return Self {
                bar: ProgressBar::hidden(),
            };
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] step {pos}/{len} {msg}")
                .expect("template")
                .progress_chars("=> "),
        );
        bar.set_position(done as u64);
        Self { bar }
    }

    /// After optimizer step `step`.
    pub(super) fn step(&self, step: usize, message: String) {
        self.bar.set_message(message);
        self.bar.set_position(step as u64);
    }

    /// A line above the bar.
    pub(super) fn println(&self, line: String) {
        self.bar.println(line);
    }

    pub(super) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Per task, the batch losses summed and counted since the last evaluation.
pub(super) struct LossLog {
    sums: Vec<f64>,
    counts: Vec<usize>,
}

impl LossLog {
    pub(super) fn new(num_tasks: usize) -> Self {
        Self {
            sums: vec![0.0; num_tasks],
            counts: vec![0; num_tasks],
        }
    }

    /// One batch's losses of `tasks`.
    pub(super) fn add(&mut self, tasks: &[usize], losses: &[f64]) {
        for (task, v) in tasks.iter().zip(losses) {
            self.sums[*task] += v;
            self.counts[*task] += 1;
        }
    }

    /// The mean loss of each task with batches since the last call (by name), and a new start.
    pub(super) fn take_means(&mut self, names: &[String]) -> BTreeMap<String, f64> {
        let means = names
            .iter()
            .enumerate()
            .filter(|(t, _)| self.counts[*t] > 0)
            .map(|(t, name)| (name.clone(), self.sums[t] / self.counts[t] as f64))
            .collect();
        self.sums.iter_mut().for_each(|v| *v = 0.0);
        self.counts.iter_mut().for_each(|v| *v = 0);
        means
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_means_per_task_and_reset() {
        let mut log = LossLog::new(3);
        log.add(&[0, 2], &[1.0, 4.0]);
        log.add(&[0], &[2.0]);
        let names = ["a".to_string(), "b".to_string(), "c".to_string()];
        let means = log.take_means(&names);
        assert_eq!(means.len(), 2);
        assert_eq!((means["a"], means["c"]), (1.5, 4.0));
        assert!(log.take_means(&names).is_empty());
    }
}
