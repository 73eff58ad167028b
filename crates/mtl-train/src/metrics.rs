//! Classification metrics from a confusion matrix: accuracy, macro-F1 and the multiclass Matthews
//! correlation coefficient, computed as scikit-learn does and never NaN.

/// Counts of (true class, predicted class) pairs over `n` classes.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConfusionMatrix {
    /// Number of classes.
    pub n: usize,
    /// `counts[truth][predicted]`, an `n` × `n` table.
    pub counts: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    /// An all-zero matrix over `n` classes.
    pub fn new(n: usize) -> Self {
        Self {
            n,
            counts: vec![vec![0; n]; n],
        }
    }

    /// Counts one example of class `truth` predicted as `predicted`.
    ///
    /// # Panics
    /// If either index is not below `n`: class indices come from the model and the dataset's own
    /// label table, so an out-of-range one is a bug, not a property of the input data.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        assert!(
            truth < self.n && predicted < self.n,
            "class index out of range: truth {truth}, predicted {predicted}, {} classes",
            self.n
        );
        self.counts[truth][predicted] += 1;
    }

    /// Number of examples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Fraction of examples predicted correctly; 0 for an empty matrix.
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct() as f64, self.total() as f64)
    }

    /// Unweighted mean over all `n` classes of each class's F1 = 2·TP / (2·TP + FP + FN); a class
    /// with neither support nor predictions scores 0 (scikit-learn's `zero_division=0`, but every
    /// class counts towards the mean). 0 for an empty matrix.
    pub fn macro_f1(&self) -> f64 {
        let (truth, predicted) = (self.truth_sums(), self.predicted_sums());
        let sum: f64 = (0..self.n)
            .map(|k| {
                let tp = self.cell(k, k) as f64;
                let errors = (truth[k] + predicted[k]) as f64 - 2.0 * tp;
                ratio(2.0 * tp, 2.0 * tp + errors)
            })
            .sum();
        ratio(sum, self.n as f64)
    }

    /// Multiclass Matthews correlation coefficient (Gorodkin 2004, scikit-learn's
    /// `matthews_corrcoef`): `(c·s − Σ pₖtₖ) / √((s² − Σ pₖ²)(s² − Σ tₖ²))` with `c` correct, `s`
    /// total, `tₖ`/`pₖ` the true/predicted counts of class k; 0 when the denominator is 0.
    pub fn mcc(&self) -> f64 {
        let (truth, predicted) = (self.truth_sums(), self.predicted_sums());
        let s = self.total() as f64;
        let dot = |a: &[u64], b: &[u64]| -> f64 {
            a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
        };
        let numerator = self.correct() as f64 * s - dot(&predicted, &truth);
        let denominator =
            ((s * s - dot(&predicted, &predicted)) * (s * s - dot(&truth, &truth))).sqrt();
        ratio(numerator, denominator)
    }

    /// `counts[truth][predicted]`, 0 outside the stored table.
    fn cell(&self, truth: usize, predicted: usize) -> u64 {
        self.counts
            .get(truth)
            .and_then(|row| row.get(predicted))
            .copied()
            .unwrap_or(0)
    }

    fn correct(&self) -> u64 {
        (0..self.n).map(|k| self.cell(k, k)).sum()
    }

    /// Examples per true class.
    fn truth_sums(&self) -> Vec<u64> {
        (0..self.n)
            .map(|t| (0..self.n).map(|p| self.cell(t, p)).sum())
            .collect()
    }

    /// Examples per predicted class.
    fn predicted_sums(&self) -> Vec<u64> {
        (0..self.n)
            .map(|p| (0..self.n).map(|t| self.cell(t, p)).sum())
            .collect()
    }
}

/// `a / b`, or 0 when `b` is 0 (or the result is not finite).
fn ratio(a: f64, b: f64) -> f64 {
    let r = a / b;
    if r.is_finite() {
        r
    } else {
        0.0
    }
}

/// The metrics of one task on one evaluation set, as reported and serialized.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskMetrics {
    /// Fraction correct.
    pub accuracy: f64,
    /// Mean per-class F1.
    pub macro_f1: f64,
    /// Multiclass Matthews correlation coefficient.
    pub mcc: f64,
    /// Number of labelled examples evaluated.
    pub support: u64,
    /// `confusion[truth][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

impl From<&ConfusionMatrix> for TaskMetrics {
    fn from(m: &ConfusionMatrix) -> Self {
        Self {
            accuracy: m.accuracy(),
            macro_f1: m.macro_f1(),
            mcc: m.mcc(),
            support: m.total(),
            confusion: m.counts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn matrix(counts: &[&[u64]]) -> ConfusionMatrix {
        let mut m = ConfusionMatrix::new(counts.len());
        for (t, row) in counts.iter().enumerate() {
            for (p, &c) in row.iter().enumerate() {
                for _ in 0..c {
                    m.add(t, p);
                }
            }
        }
        m
    }

    #[test]
    fn binary_by_hand() {
        // Truth 0: 3 right, 1 wrong; truth 1: 2 wrong, 4 right.
        let m = matrix(&[&[3, 1], &[2, 4]]);
        assert_eq!(m.counts, vec![vec![3, 1], vec![2, 4]]);
        assert_eq!(m.total(), 10);
        assert!(close(m.accuracy(), 0.7));
        // F1: class 0 = 6/9, class 1 = 8/11; mean 23/33.
        assert!(close(m.macro_f1(), 23.0 / 33.0));
        // (TP·TN − FP·FN)/√(…) = (4·3 − 1·2)/√(5·5·6·4) = 10/√600 = 1/√6.
        assert!(close(m.mcc(), 1.0 / 6f64.sqrt()));
    }

    #[test]
    fn three_classes_by_hand() {
        let m = matrix(&[&[5, 1, 0], &[2, 3, 1], &[0, 0, 4]]);
        assert!(close(m.accuracy(), 0.75));
        // F1 = 10/13, 3/5, 8/9 -> mean 1321/1755.
        assert!(close(m.macro_f1(), 1321.0 / 1755.0));
        // c = 12, s = 16, t = [6, 6, 4], p = [7, 4, 5]: (192 − 86) / √(166 · 168).
        assert!(close(m.mcc(), 106.0 / 27888f64.sqrt()));
        assert!(close(m.mcc(), 0.634_741_918_814_027_3));
    }

    #[test]
    fn unseen_class_scores_zero_f1_but_counts() {
        let m = matrix(&[&[2, 1, 0], &[1, 2, 0], &[0, 0, 0]]);
        assert!(close(m.accuracy(), 4.0 / 6.0));
        // F1 = 2/3, 2/3, 0 over three classes.
        assert!(close(m.macro_f1(), 4.0 / 9.0));
        assert!(close(m.mcc(), 1.0 / 3.0));
    }

    #[test]
    fn constant_prediction_and_empty_matrix_are_zero_not_nan() {
        let m = matrix(&[&[0, 5], &[0, 5]]);
        assert!(close(m.accuracy(), 0.5));
        assert!(close(m.macro_f1(), 1.0 / 3.0));
        assert_eq!(m.mcc(), 0.0);

        for m in [ConfusionMatrix::new(3), ConfusionMatrix::new(0)] {
            assert_eq!(m.total(), 0);
            assert_eq!((m.accuracy(), m.macro_f1(), m.mcc()), (0.0, 0.0, 0.0));
        }
    }

    #[test]
    fn perfect_and_inverted_binary() {
        let m = matrix(&[&[4, 0], &[0, 6]]);
        assert_eq!((m.accuracy(), m.macro_f1(), m.mcc()), (1.0, 1.0, 1.0));
        let m = matrix(&[&[0, 4], &[6, 0]]);
        assert_eq!((m.accuracy(), m.macro_f1()), (0.0, 0.0));
        assert!(close(m.mcc(), -1.0));
    }

    #[test]
    fn malformed_deserialized_matrix_does_not_panic() {
        let m: ConfusionMatrix = serde_json::from_str(r#"{"n":3,"counts":[[1,2],[3]]}"#).unwrap();
        assert_eq!(m.total(), 6);
        // Cells outside the stored table read as 0: correct = 1 of 6.
        assert!(close(m.accuracy(), 1.0 / 6.0));
        assert!(m.macro_f1().is_finite() && m.mcc().is_finite());
    }

    #[test]
    fn task_metrics_round_trip() {
        let m = matrix(&[&[3, 1], &[2, 4]]);
        let t = TaskMetrics::from(&m);
        assert_eq!(t.support, 10);
        assert_eq!(t.confusion, m.counts);
        assert!(close(t.accuracy, 0.7));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<TaskMetrics>(&json).unwrap(), t);
        let back: ConfusionMatrix =
            serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
