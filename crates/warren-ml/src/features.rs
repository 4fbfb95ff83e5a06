//! A seeded train/test split (stratified by class for classification), preprocessed as fitted
//! on the training rows only (see [`crate::preprocess`]).

use std::collections::BTreeMap;

use warren_schemas::{Column, Preprocessor, Scaler, Task, params::FeaturesParams};

use crate::{
    MlError, Result, preprocess,
    table::{Table, Values},
};

/// The result of [`prepare`].
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Training rows: the features (preprocessed), then the target.
    pub train: Table,
    /// Held-out rows, same layout.
    pub test: Table,
    /// Feature names in order (a one-hot category is `column=category`).
    pub feature_names: Vec<String>,
    /// Class labels in index order (classification).
    pub classes: Vec<String>,
    /// The preprocessing fitted on the training rows.
    pub preprocessor: Preprocessor,
    /// Rows dropped because their target is missing.
    pub dropped: usize,
    /// The input table's rows in `train`, in order.
    pub train_rows: Vec<usize>,
    /// The input table's rows in `test`, in order.
    pub test_rows: Vec<usize>,
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

/// Splits `table` (seeded; stratified by class), fits the preprocessing on the training rows
/// and applies it to both parts. `columns` describes the dataset's columns (their kinds).
pub fn prepare(table: &Table, columns: &[Column], target: &str, task: Task, p: &FeaturesParams) -> Result<Split> {
    if !(0.0..1.0).contains(&p.test_fraction) || p.test_fraction == 0.0 {
        return Err(MlError::invalid(format!("test_fraction must be in (0, 1), got {}", p.test_fraction)));
    }
    let Some(t) = table.names.iter().position(|n| n == target) else {
        return Err(MlError::invalid(format!("no target `{target}`")));
    };
    let present: Vec<usize> = match &table.columns[t] {
        Values::Str(v) => (0..v.len()).filter(|&i| v[i].is_some()).collect(),
        Values::F64(v) => (0..v.len()).filter(|&i| v[i].is_some()).collect(),
    };
    let dropped = table.rows() - present.len();
    if dropped > 0 && !p.drop_missing_target {
        let row = (0..table.rows()).find(|i| !present.contains(i)).unwrap_or(0);
        return Err(MlError::invalid(format!(
            "target `{target}`, row {}: missing ({dropped} rows in all; drop_missing_target = true drops them)",
            row + 1
        )));
    }
    let table = if dropped > 0 { table.take(&present) } else { table.clone() };
    let (classes, groups) = match (&table.columns[t], task) {
        (Values::Str(labels), Task::Classification) => encode_classes(labels),
        (Values::F64(_), Task::Regression) => (Vec::new(), vec![0; table.rows()]),
        _ => return Err(MlError::invalid(format!("target `{target}` does not fit a {task:?} task"))),
    };
    let (train_idx, test_idx) = split_indices(&groups, p.test_fraction, p.seed);
    let preprocessor = preprocess::fit(&table, columns, target, &train_idx, p)?;
    let feature_names = preprocess::feature_names(&preprocessor);
    let part = |idx: &[usize]| -> Result<Table> {
        let raw = table.take(idx);
        let out = preprocess::transform(&preprocessor, &raw)?;
        if let Some((row, why)) = out.refused.first() {
            return Err(MlError::invalid(format!("row {}: {why}", present[idx[*row]] + 1)));
        }
        let mut names = feature_names.clone();
        let mut cols: Vec<Values> =
            out.x.columns().into_iter().map(|c| Values::F64(c.iter().map(|v| Some(*v)).collect())).collect();
        names.push(target.to_owned());
        cols.push(raw.columns[t].clone());
        Ok(Table { names, columns: cols })
    };
    let (train, test) = (part(&train_idx)?, part(&test_idx)?);
    let original = |idx: &[usize]| idx.iter().map(|&i| present[i]).collect();
    let (train_rows, test_rows) = (original(&train_idx), original(&test_idx));
    Ok(Split { train, test, feature_names, classes, preprocessor, dropped, train_rows, test_rows })
}

/// Standardises the first `scaler.means.len()` columns of `table` in place (models from before
/// preprocessing).
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
        let p = FeaturesParams { test_fraction: 0.2, seed: 3, ..FeaturesParams::default() };
        let a = prepare(&iris.table, &iris.columns, &iris.target, iris.task, &p).unwrap();
        let b = prepare(&iris.table, &iris.columns, &iris.target, iris.task, &p).unwrap();
        assert_eq!(a, b, "same seed, same split");
        assert_eq!((a.train.rows(), a.test.rows()), (120, 30));
        let Values::Str(test_labels) = &a.test.columns[4] else { panic!("labels") };
        for class in &a.classes {
            assert_eq!(test_labels.iter().flatten().filter(|l| *l == class).count(), 10, "stratified");
        }
        let Values::F64(x) = &a.train.columns[0] else { panic!("numeric") };
        let mean = x.iter().flatten().sum::<f64>() / x.len() as f64;
        assert!(mean.abs() < 1e-9, "train features centred: {mean}");
        let other =
            prepare(&iris.table, &iris.columns, &iris.target, iris.task, &FeaturesParams { seed: 4, ..p }).unwrap();
        assert_ne!(other.test, a.test, "another seed, another split");
    }
}
