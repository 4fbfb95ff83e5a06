//! Metrics. Every score used to compare trials is "higher is better" (`neg_rmse`, `neg_mae`).

use std::collections::BTreeMap;

use crate::{MlError, Result};

/// Accuracy, macro F1 and the confusion matrix (rows = true class, columns = predicted).
pub fn classification(
    truth: &[usize],
    predicted: &[usize],
    n_classes: usize,
) -> (BTreeMap<String, f64>, Vec<Vec<u64>>) {
    let mut confusion = vec![vec![0u64; n_classes]; n_classes];
    for (&t, &p) in truth.iter().zip(predicted) {
        if t < n_classes && p < n_classes {
            confusion[t][p] += 1;
        }
    }
    let correct: u64 = (0..n_classes).map(|c| confusion[c][c]).sum();
    let accuracy = correct as f64 / truth.len().max(1) as f64;
    let mut f1_sum = 0.0;
    #[allow(clippy::needless_range_loop)] // c indexes rows and columns of the matrix alike
    for c in 0..n_classes {
        let tp = confusion[c][c] as f64;
        let fp: f64 = (0..n_classes).filter(|&r| r != c).map(|r| confusion[r][c] as f64).sum();
        let fn_: f64 = (0..n_classes).filter(|&p| p != c).map(|p| confusion[c][p] as f64).sum();
        let denom = 2.0 * tp + fp + fn_;
        f1_sum += if denom > 0.0 { 2.0 * tp / denom } else { 0.0 };
    }
    let metrics = [("accuracy".to_owned(), accuracy), ("f1_macro".to_owned(), f1_sum / n_classes.max(1) as f64)].into();
    (metrics, confusion)
}

/// RMSE, MAE and R².
pub fn regression(truth: &[f64], predicted: &[f64]) -> BTreeMap<String, f64> {
    let n = truth.len().max(1) as f64;
    let mse = truth.iter().zip(predicted).map(|(t, p)| (t - p).powi(2)).sum::<f64>() / n;
    let mae = truth.iter().zip(predicted).map(|(t, p)| (t - p).abs()).sum::<f64>() / n;
    let mean = truth.iter().sum::<f64>() / n;
    let ss_tot: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
    let r2 = if ss_tot > 0.0 { 1.0 - mse * n / ss_tot } else { 0.0 };
    [("rmse".to_owned(), mse.sqrt()), ("mae".to_owned(), mae), ("r2".to_owned(), r2)].into()
}

/// The comparison score named `metric` (higher is better) from a metrics map.
pub fn score(metrics: &BTreeMap<String, f64>, metric: &str) -> Result<f64> {
    let (name, sign) = match metric.strip_prefix("neg_") {
        Some(base) => (base, -1.0),
        None => (metric, 1.0),
    };
    metrics.get(name).map(|v| v * sign).ok_or_else(|| {
        MlError::invalid(format!(
            "unknown metric `{metric}` (have: {})",
            metrics.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Whether a smaller value of `metric` is better (an error measure).
pub fn lower_is_better(metric: &str) -> bool {
    matches!(metric, "rmse" | "mae")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_metrics() {
        let (m, c) = classification(&[0, 0, 1, 1], &[0, 1, 1, 1], 2);
        assert_eq!(m["accuracy"], 0.75);
        assert_eq!(c, vec![vec![1, 1], vec![0, 2]]);
        let f1 = (2.0 / 3.0 + 0.8) / 2.0;
        assert!((m["f1_macro"] - f1).abs() < 1e-12);
    }

    #[test]
    fn regression_metrics_and_scores() {
        let m = regression(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0]);
        assert!((m["rmse"] - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((m["mae"] - 1.0 / 3.0).abs() < 1e-12);
        assert!((m["r2"] - 0.5).abs() < 1e-12);
        assert_eq!(score(&m, "neg_mae").unwrap(), -m["mae"]);
        assert!(score(&m, "auc").is_err());
    }
}
