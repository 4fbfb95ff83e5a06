//! A seeded train/test split (stratified by class for classification) and standardisation
//! fitted on the training rows only.

use std::collections::BTreeMap;

use warren_schemas::{Scaler, Task, params::FeaturesParams};

use crate::{
    MlError, Result,
    table::{Table, Values},
};

/// The result of [`split_and_scale`].
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Training rows: features (scaled if asked), then the target.
    pub train: Table,
    /// Held-out rows, same layout.
    pub test: Table,
    /// Feature names in order.
    pub feature_names: Vec<String>,
    /// Class labels in index order (classification).
    pub classes: Vec<String>,
    /// The scaler applied, if any.
    pub scaler: Option<Scaler>,
}

/// Splits row indices `0..n` into (train, test): within each group (a class, or all rows for
/// regression) a seeded shuffle puts `round(len × test_fraction)` rows in test. Both lists come
/// back sorted, so the same seed always gives the same rows in the same order.
pub fn split_indices(groups: &[usize], test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut by_group: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        by_group.entry(*g).or_default().push(i);
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (_, mut rows) in by_group {
        rng.shuffle(&mut rows);
        let n_test = ((rows.len() as f64) * test_fraction).round() as usize;
        let n_test = n_test.min(rows.len().saturating_sub(1));
        test.extend_from_slice(&rows[..n_test]);
        train.extend_from_slice(&rows[n_test..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// Class labels in sorted order, and each row's class index.
pub fn encode_classes(labels: &[Option<String>]) -> (Vec<String>, Vec<usize>) {
    let classes: Vec<String> =
        labels.iter().flatten().cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let index = labels.iter().map(|l| l.as_ref().and_then(|l| classes.binary_search(l).ok()).unwrap_or(0)).collect();
    (classes, index)
}

/// Splits `table` and standardises its features.
pub fn split_and_scale(table: &Table, target: &str, task: Task, p: &FeaturesParams) -> Result<Split> {
    if !(0.0..1.0).contains(&p.test_fraction) || p.test_fraction == 0.0 {
        return Err(MlError::invalid(format!("test_fraction must be in (0, 1), got {}", p.test_fraction)));
    }
    let t = table
        .names
        .iter()
        .position(|n| n == target)
        .ok_or_else(|| MlError::invalid(format!("no target `{target}`")))?;
    let (classes, groups) = match (&table.columns[t], task) {
        (Values::Str(labels), Task::Classification) => encode_classes(labels),
        (Values::F64(_), Task::Regression) => (Vec::new(), vec![0; table.rows()]),
        _ => return Err(MlError::invalid(format!("target `{target}` does not fit a {task:?} task"))),
    };
    let (train_idx, test_idx) = split_indices(&groups, p.test_fraction, p.seed);
    let mut train = table.take(&train_idx);
    let mut test = table.take(&test_idx);
    // Features first, target last.
    let order: Vec<usize> = (0..table.names.len()).filter(|&i| i != t).chain(std::iter::once(t)).collect();
    for tbl in [&mut train, &mut test] {
        *tbl = Table {
            names: order.iter().map(|&i| tbl.names[i].clone()).collect(),
            columns: order.iter().map(|&i| tbl.columns[i].clone()).collect(),
        };
    }
    let n_features = order.len() - 1;
    let feature_names = train.names[..n_features].to_vec();
    let scaler = if p.scale {
        let mut means = Vec::with_capacity(n_features);
        let mut stds = Vec::with_capacity(n_features);
        for col in &train.columns[..n_features] {
            let Values::F64(v) = col else {
                return Err(MlError::invalid("features must be numeric (run validate first)"));
            };
            let xs: Vec<f64> = v.iter().flatten().copied().collect();
            let n = xs.len().max(1) as f64;
            let mean = xs.iter().sum::<f64>() / n;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
            means.push(mean);
            stds.push(if var > 0.0 { var.sqrt() } else { 1.0 });
        }
        let scaler = Scaler { means, stds };
        for tbl in [&mut train, &mut test] {
            apply_scaler(tbl, &scaler);
        }
        Some(scaler)
    } else {
        None
    };
    Ok(Split { train, test, feature_names, classes, scaler })
}

/// Standardises the first `scaler.means.len()` columns of `table` in place.
pub fn apply_scaler(table: &mut Table, scaler: &Scaler) {
    for (j, col) in table.columns.iter_mut().take(scaler.means.len()).enumerate() {
        if let Values::F64(v) = col {
            for x in v.iter_mut().flatten() {
                *x = (*x - scaler.means[j]) / scaler.stds[j];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest;

    #[test]
    fn the_split_is_seeded_stratified_and_scaled_on_train_only() {
        let iris = ingest::builtin("iris").unwrap();
        let p = FeaturesParams { test_fraction: 0.2, seed: 3, scale: true };
        let a = split_and_scale(&iris.table, &iris.target, iris.task, &p).unwrap();
        let b = split_and_scale(&iris.table, &iris.target, iris.task, &p).unwrap();
        assert_eq!(a, b, "same seed, same split");
        assert_eq!((a.train.rows(), a.test.rows()), (120, 30));
        let Values::Str(test_labels) = &a.test.columns[4] else { panic!("labels") };
        for class in &a.classes {
            assert_eq!(test_labels.iter().flatten().filter(|l| *l == class).count(), 10, "stratified");
        }
        let Values::F64(x) = &a.train.columns[0] else { panic!("numeric") };
        let mean = x.iter().flatten().sum::<f64>() / x.len() as f64;
        assert!(mean.abs() < 1e-9, "train features centred: {mean}");
        let other = split_and_scale(&iris.table, &iris.target, iris.task, &FeaturesParams { seed: 4, ..p }).unwrap();
        assert_ne!(other.test, a.test, "another seed, another split");
    }
}
