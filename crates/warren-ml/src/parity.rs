//! The runs compared with scikit-learn (see `benches/parity.rs` and `parity/`): each
//! algorithm with fixed hyperparameters on a data set, split by Warren's `features` step for
//! seeds `0..SEEDS` and preprocessed as it fits by default (on the training rows only), scored on
//! the held-out rows. Besides the three shipped numeric sets, two public tables with text
//! columns and gaps, committed as their packages ship them: the Palmer penguins (`palmerpenguins`)
//! for species and for body mass, and the 406 cars of `vega_datasets` for fuel use.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use serde::Deserialize;
use serde_json::{Value, json};
use warren_schemas::{
    Algorithm, Candidate, ColumnKind, Hyper, Task,
    params::{FeaturesParams, IngestParams},
};

use crate::{
    MlError, Result, Stop, features, ingest,
    model::{self, SavedModel},
    table::{Table, Values},
};

/// Splits per data set (seeds `0..SEEDS` of the `features` step).
pub const SEEDS: u64 = 10;

/// Model seeds per split (`random_state` in scikit-learn): both libraries break ties between
/// equally good splits at random, so a split's score is the mean over these.
pub const REPEATS: u64 = 5;

/// A data set compared: shipped with the workers, or a CSV file under the repository's `data/`.
#[derive(Debug, Clone, Copy)]
pub struct Data {
    /// Its name in the table.
    pub name: &'static str,
    /// `(file under data/, target column)`, or `None` for a shipped data set of that name.
    pub csv: Option<(&'static str, &'static str)>,
    /// What is predicted.
    pub task: Task,
}

/// Every data set compared.
pub const DATA: &[Data] = &[
    Data { name: "iris", csv: None, task: Task::Classification },
    Data { name: "winequality", csv: None, task: Task::Classification },
    Data { name: "diabetes", csv: None, task: Task::Regression },
    Data { name: "penguins", csv: Some(("penguins.csv", "species")), task: Task::Classification },
    Data { name: "penguins_body_mass", csv: Some(("penguins.csv", "body_mass_g")), task: Task::Regression },
    Data { name: "cars", csv: Some(("cars.csv", "Miles_per_Gallon")), task: Task::Regression },
];

/// The data set called `name`.
pub fn data(name: &str) -> Result<&'static Data> {
    DATA.iter().find(|d| d.name == name).ok_or_else(|| MlError::invalid(format!("no parity data set `{name}`")))
}

/// Loads a data set as ingest reads it (kinds inferred, nothing overridden).
pub fn load(d: &Data) -> Result<ingest::Loaded> {
    let Some((file, target)) = d.csv else { return ingest::builtin(d.name) };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data").join(file);
    let bytes = std::fs::read(&path).map_err(|e| MlError::invalid(format!("{}: {e}", path.display())))?;
    let task = match d.task {
        Task::Classification => "classification",
        Task::Regression => "regression",
    };
    let params = IngestParams { target: Some(target.into()), task: Some(task.into()), ..IngestParams::default() };
    ingest::csv(&bytes, &params)
}

/// One algorithm on one data set.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Data set (see [`DATA`]).
    pub dataset: &'static str,
    /// Algorithm name, as pipelines spell it.
    pub algorithm: &'static str,
    /// Hyperparameters (scikit-learn's script uses the same).
    pub hyperparams: &'static [(&'static str, f64)],
}

impl Run {
    /// The metric compared: accuracy for classes, R² for values.
    pub fn metric(&self) -> &'static str {
        match data(self.dataset).map(|d| d.task) {
            Ok(Task::Regression) => "r2",
            _ => "accuracy",
        }
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
    "penguins": "logistic" &[("alpha", 1.0)];
    "penguins": "decision_tree" &[("max_depth", 5.0)];
    "penguins": "random_forest" &[("n_estimators", 100.0)];
    "penguins": "gradient_boosting" &[("n_estimators", 100.0)];
    "penguins_body_mass": "linear" &[];
    "penguins_body_mass": "elastic_net" &[("penalty", 0.1), ("l1_ratio", 0.5)];
    "penguins_body_mass": "decision_tree" &[("max_depth", 5.0)];
    "penguins_body_mass": "random_forest" &[("n_estimators", 100.0)];
    "penguins_body_mass": "gradient_boosting" &[("n_estimators", 100.0)];
    "cars": "linear" &[];
    "cars": "elastic_net" &[("penalty", 0.1), ("l1_ratio", 0.5)];
    "cars": "decision_tree" &[("max_depth", 5.0)];
    "cars": "random_forest" &[("n_estimators", 100.0)];
    "cars": "gradient_boosting" &[("n_estimators", 100.0)];
};

fn algorithm(name: &str) -> Result<Algorithm> {
    serde_json::from_value(Value::String(name.into())).map_err(MlError::invalid)
}

fn split(loaded: &ingest::Loaded, seed: u64) -> Result<features::Split> {
    let p = FeaturesParams { seed, ..FeaturesParams::default() };
    features::prepare(&loaded.table, &loaded.columns, &loaded.target, loaded.task, &p)
}

/// Warren's figures for one run.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Held-out score of each split (the mean over [`REPEATS`] model seeds).
    pub scores: Vec<f64>,
    /// Mean time of one fit on a split's training rows: the `features` step's preprocessing
    /// (fitted on them, applied to both parts) and the model's fit.
    pub fit: Duration,
}

/// Runs `run` on every split.
pub fn measure(run: &Run) -> Result<Measured> {
    let candidate = Candidate {
        algorithm: algorithm(run.algorithm)?,
        hyperparams: run.hyperparams.iter().map(|(k, v)| ((*k).to_owned(), Hyper::Number(*v))).collect(),
    };
    let loaded = load(data(run.dataset)?)?;
    let seeded =
        matches!(candidate.algorithm, Algorithm::RandomForest | Algorithm::GradientBoosting | Algorithm::DecisionTree);
    let repeats = if seeded { REPEATS } else { 1 };
    let (mut scores, mut spent, mut fits) = (Vec::new(), Duration::ZERO, 0u32);
    for seed in 0..SEEDS {
        let started = Instant::now();
        let s = split(&loaded, seed)?;
        let preprocessing = started.elapsed();
        let test = model::xy(&s.test, &s.classes)?;
        let mut sum = 0.0;
        for repeat in 0..repeats {
            let mut c = candidate.clone();
            if seeded {
                c.hyperparams.insert("seed".into(), Hyper::Number(repeat as f64));
            }
            let started = Instant::now();
            let train = model::xy(&s.train, &s.classes)?;
            let fitted = model::fit(&c, &train, loaded.task, &Stop::default())?;
            spent += preprocessing + started.elapsed();
            fits += 1;
            let saved = SavedModel {
                candidate: c,
                feature_names: s.feature_names.clone(),
                scaler: None,
                classes: s.classes.clone(),
                fitted,
                preprocessor: None,
            };
            let (m, _) = model::evaluate(&saved, &test, loaded.task);
            sum += m.get(run.metric()).copied().ok_or_else(|| MlError::invalid("no such metric"))?;
        }
        scores.push(sum / repeats as f64);
    }
    Ok(Measured { scores, fit: spent / fits.max(1) })
}

/// Warren's held-out score of `run` for each split (the mean over [`REPEATS`] model seeds).
pub fn scores(run: &Run) -> Result<Vec<f64>> {
    measure(run).map(|m| m.scores)
}

/// The rows `idx` of `table` as JSON arrays: numbers, text, `null` for a gap.
fn rows_json(table: &Table, idx: &[usize]) -> Value {
    let cell = |c: &Values, i: usize| match c {
        Values::F64(v) => v[i].map_or(Value::Null, |x| json!(x)),
        Values::Str(v) => v[i].as_ref().map_or(Value::Null, |x| json!(x)),
    };
    Value::Array(idx.iter().map(|&i| Value::Array(table.columns.iter().map(|c| cell(c, i)).collect())).collect())
}

/// Writes `{dataset}-{seed}.json` for every data set and seed: the raw columns (gaps as
/// `null`), which of them the fitted preprocessing reads as numbers and as categories, and the
/// training and held-out rows. Returns how many splits.
pub fn export(dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).map_err(MlError::invalid)?;
    let mut n = 0;
    for d in DATA {
        let loaded = load(d)?;
        for seed in 0..SEEDS {
            let s = split(&loaded, seed)?;
            let inputs = &s.preprocessor.inputs;
            let of = |numeric: bool| -> Vec<&str> {
                let chosen = inputs.iter().filter(|t| (t.kind == ColumnKind::Numeric) == numeric);
                chosen.map(|t| t.column.as_str()).collect()
            };
            let out = json!({
                "dataset": d.name,
                "task": if d.task == Task::Classification { "classification" } else { "regression" },
                "target": loaded.target,
                "columns": loaded.table.names,
                "numeric": of(true),
                "categorical": of(false),
                "left_out": s.preprocessor.left_out.iter().map(|l| &l.column).collect::<Vec<_>>(),
                "train": rows_json(&loaded.table, &s.train_rows),
                "test": rows_json(&loaded.table, &s.test_rows),
            });
            let text = serde_json::to_vec(&out).map_err(MlError::invalid)?;
            std::fs::write(dir.join(format!("{}-{seed}.json", d.name)), text).map_err(MlError::invalid)?;
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
    /// Mean milliseconds of one `Pipeline.fit` on a split's training rows, per data set and
    /// algorithm.
    #[serde(default)]
    pub fit_ms: BTreeMap<String, BTreeMap<String, f64>>,
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
    /// scikit-learn's mean fit time of one run.
    pub fn fit(&self, dataset: &str, algorithm: &str) -> Option<Duration> {
        self.fit_ms.get(dataset)?.get(algorithm).map(|ms| Duration::from_secs_f64(ms / 1000.0))
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

    /// On the penguins as shipped (text columns, gaps), Warren's automatic preprocessing and
    /// model score within a point of scikit-learn's `Pipeline(ColumnTransformer(...))`, for
    /// species and for body mass.
    #[test]
    fn the_whole_chain_matches_scikit_learn_on_the_penguins() {
        let reference = Reference::load().unwrap();
        let chosen = [("penguins", "logistic"), ("penguins", "decision_tree"), ("penguins_body_mass", "linear")];
        for run in RUNS.iter().filter(|r| chosen.contains(&(r.dataset, r.algorithm))) {
            let ours = scores(run).unwrap();
            let theirs = reference.scores(run.dataset, run.algorithm).unwrap();
            let gap = 100.0 * (mean(&ours) - mean(theirs));
            assert!(gap.abs() <= 1.0, "{run:?}: Warren {ours:?} vs scikit-learn {theirs:?} ({gap:+.2} points)");
        }
    }

    /// The exported splits carry the raw rows (gaps as null) and the columns as Warren read them.
    #[test]
    fn the_export_holds_raw_rows_and_the_column_kinds() {
        let dir = std::env::temp_dir().join(format!("warren-parity-{}", std::process::id()));
        assert_eq!(export(&dir).unwrap(), DATA.len() * SEEDS as usize);
        let split: Value = serde_json::from_slice(&std::fs::read(dir.join("cars-3.json")).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(split["left_out"], json!(["Name"]));
        assert_eq!(split["categorical"], json!(["Year", "Origin"]));
        let rows = split["train"].as_array().unwrap().len() + split["test"].as_array().unwrap().len();
        assert_eq!(rows, 406 - 8, "the 8 cars without a fuel figure are dropped");
        let gaps = split["train"].as_array().unwrap().iter().filter(|r| r[4].is_null()).count();
        assert!(gaps > 0, "horsepower gaps stay gaps for the pipeline to fill");
    }
}
