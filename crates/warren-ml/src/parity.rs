//! The runs compared with scikit-learn (see `benches/parity.rs` and `parity/`): each
//! algorithm with fixed hyperparameters on a shipped data set, split by Warren's `features`
//! step for seeds `0..SEEDS`, scored on the held-out rows.

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;
use warren_schemas::{Algorithm, Candidate, Hyper, Task, params::FeaturesParams};

use crate::{
    MlError, Result, Stop, features, ingest,
    model::{self, SavedModel},
};

/// Splits per data set (seeds `0..SEEDS` of the `features` step).
pub const SEEDS: u64 = 10;

/// Model seeds per split (`random_state` in scikit-learn): both libraries break ties between
/// equally good splits at random, so a split's score is the mean over these.
pub const REPEATS: u64 = 5;

/// One algorithm on one data set.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Shipped data set.
    pub dataset: &'static str,
    /// Algorithm name, as pipelines spell it.
    pub algorithm: &'static str,
    /// Hyperparameters (scikit-learn's script uses the same).
    pub hyperparams: &'static [(&'static str, f64)],
}

impl Run {
    /// The metric compared: accuracy for classes, R² for values.
    pub fn metric(&self) -> &'static str {
        if self.dataset == "diabetes" { "r2" } else { "accuracy" }
    }
}

macro_rules! runs {
    ($($d:literal: $a:literal $h:expr;)*) => { &[$(Run { dataset: $d, algorithm: $a, hyperparams: $h }),*] };
}

/// Everything compared. The script `parity/sklearn_parity.py` maps each to its estimator.
pub const RUNS: &[Run] = runs! {
    "iris": "logistic" &[("alpha", 1.0)];
    "iris": "decision_tree" &[("max_depth", 5.0)];
    "iris": "random_forest" &[("n_estimators", 100.0)];
    "iris": "gradient_boosting" &[("n_estimators", 100.0)];
    "winequality": "logistic" &[("alpha", 1.0)];
    "winequality": "decision_tree" &[("max_depth", 5.0)];
    "winequality": "random_forest" &[("n_estimators", 100.0)];
    "winequality": "gradient_boosting" &[("n_estimators", 100.0)];
    "diabetes": "linear" &[];
    "diabetes": "elastic_net" &[("penalty", 0.1), ("l1_ratio", 0.5)];
    "diabetes": "decision_tree" &[("max_depth", 5.0)];
    "diabetes": "random_forest" &[("n_estimators", 100.0)];
    "diabetes": "gradient_boosting" &[("n_estimators", 100.0)];
};

fn algorithm(name: &str) -> Result<Algorithm> {
    serde_json::from_value(serde_json::Value::String(name.into())).map_err(MlError::invalid)
}

fn split(dataset: &str, seed: u64) -> Result<(features::Split, Task, String)> {
    let loaded = ingest::builtin(dataset)?;
    let p = FeaturesParams { seed, ..FeaturesParams::default() };
    let s = features::prepare(&loaded.table, &loaded.columns, &loaded.target, loaded.task, &p)?;
    Ok((s, loaded.task, loaded.target))
}

/// Warren's held-out score of `run` for each split (the mean over [`REPEATS`] model seeds).
pub fn scores(run: &Run) -> Result<Vec<f64>> {
    let candidate = Candidate {
        algorithm: algorithm(run.algorithm)?,
        hyperparams: run.hyperparams.iter().map(|(k, v)| ((*k).to_owned(), Hyper::Number(*v))).collect(),
    };
    (0..SEEDS)
        .map(|seed| {
            let (s, task, _) = split(run.dataset, seed)?;
            let train = model::xy(&s.train, &s.classes)?;
            let test = model::xy(&s.test, &s.classes)?;
            let seeded = matches!(
                candidate.algorithm,
                Algorithm::RandomForest | Algorithm::GradientBoosting | Algorithm::DecisionTree
            );
            let mut sum = 0.0;
            for repeat in 0..if seeded { REPEATS } else { 1 } {
                let mut c = candidate.clone();
                if seeded {
                    c.hyperparams.insert("seed".into(), Hyper::Number(repeat as f64));
                }
                let fitted = model::fit(&c, &train, task, &Stop::default())?;
                let saved = SavedModel {
                    candidate: c,
                    feature_names: s.feature_names.clone(),
                    scaler: None,
                    classes: s.classes.clone(),
                    fitted,
                    preprocessor: None,
                };
                let (m, _) = model::evaluate(&saved, &test, task);
                sum += m.get(run.metric()).copied().ok_or_else(|| MlError::invalid("no such metric"))?;
            }
            Ok(sum / if seeded { REPEATS as f64 } else { 1.0 })
        })
        .collect()
}

/// Writes `{dataset}-{seed}-{train,test}.csv` (scaled features, then the class index or value)
/// for every data set and seed; returns how many splits.
pub fn export(dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).map_err(MlError::invalid)?;
    let mut n = 0;
    for dataset in ingest::BUILTIN {
        for seed in 0..SEEDS {
            let (s, task, target) = split(dataset, seed)?;
            for (part, table) in [("train", &s.train), ("test", &s.test)] {
                let xy = model::xy(table, &s.classes)?;
                let mut text = s.feature_names.join(",");
                text.push(',');
                text.push_str(&target);
                text.push('\n');
                for (i, row) in xy.x.rows().into_iter().enumerate() {
                    for v in row {
                        text.push_str(&format!("{v:?},"));
                    }
                    match task {
                        Task::Classification => text.push_str(&xy.classes[i].to_string()),
                        Task::Regression => text.push_str(&format!("{:?}", xy.values[i])),
                    }
                    text.push('\n');
                }
                std::fs::write(dir.join(format!("{dataset}-{seed}-{part}.csv")), text).map_err(MlError::invalid)?;
            }
            n += 1;
        }
    }
    Ok(n)
}

/// scikit-learn's figures, as `parity/sklearn.json` records them.
#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    /// scikit-learn's version.
    pub version: String,
    /// Scores per data set, algorithm and seed.
    pub scores: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
}

impl Reference {
    /// The recorded figures (compiled in).
    pub fn load() -> Result<Reference> {
        serde_json::from_str(include_str!("../parity/sklearn.json")).map_err(MlError::invalid)
    }
    /// The scores of one run.
    pub fn scores(&self, dataset: &str, algorithm: &str) -> Option<&[f64]> {
        self.scores.get(dataset)?.get(algorithm).map(Vec::as_slice)
    }
}

/// Mean.
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Minimum.
pub fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decision tree gives scikit-learn's figures on the same splits (within half a point
    /// on average), on both classification data sets.
    #[test]
    fn the_tree_matches_scikit_learn_on_the_recorded_splits() {
        let reference = Reference::load().unwrap();
        for run in RUNS.iter().filter(|r| r.algorithm == "decision_tree" && r.dataset != "diabetes") {
            let ours = scores(run).unwrap();
            let theirs = reference.scores(run.dataset, run.algorithm).unwrap();
            assert_eq!(ours.len(), theirs.len());
            let gap = 100.0 * (mean(&ours) - mean(theirs));
            assert!(gap.abs() <= 0.5, "{}: Warren {ours:?} vs scikit-learn {theirs:?} ({gap:+.2} points)", run.dataset);
        }
    }
}
