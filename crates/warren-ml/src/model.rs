//! Fitting candidates, the saved model format, and prediction.
//!
//! A saved model is MessagePack of [`SavedModel`]: the fitted linfa model plus everything needed
//! to use it on raw rows (feature names, the scaler, class labels).

use std::collections::BTreeMap;

use linfa::prelude::*;
use linfa_elasticnet::ElasticNet;
use linfa_linear::{FittedLinearRegression, LinearRegression};
use linfa_logistic::{MultiFittedLogisticRegression, MultiLogisticRegression};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use warren_schemas::{Algorithm, Candidate, Cell, Hyper, Preprocessor, Scaler, Task};

use crate::{
    MlError, Result, Stop, features, metrics, preprocess,
    table::{Table, Values},
    tree::{BoostParams, Boosted, Criterion, Forest, ForestParams, Target, Tree, TreeParams},
};

/// A fitted model of one of the supported algorithms.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Fitted {
    /// Multinomial logistic regression.
    Logistic(MultiFittedLogisticRegression<f64, usize>),
    /// A decision tree (classification or regression).
    Tree(crate::tree::Tree),
    /// A random forest.
    Forest(crate::tree::Forest),
    /// Gradient-boosted trees.
    Boosted(crate::tree::Boosted),
    /// Ordinary least squares.
    Linear(FittedLinearRegression<f64>),
    /// Elastic net.
    ElasticNet(ElasticNet<f64>),
}

/// What a model artifact holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedModel {
    /// What was fitted.
    pub candidate: Candidate,
    /// Feature names, in the order the fitted model takes them.
    pub feature_names: Vec<String>,
    /// Applied to raw rows before predicting (models from before preprocessing).
    pub scaler: Option<Scaler>,
    /// Class labels by index (classification).
    pub classes: Vec<String>,
    /// The model.
    pub fitted: Fitted,
    /// The preprocessing fitted with it: raw columns in, `feature_names` out.
    #[serde(default)]
    pub preprocessor: Option<Preprocessor>,
}

/// What a split gives a model besides its rows: everything a saved model keeps to read raw rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prepared {
    /// Feature names, in order.
    pub feature_names: Vec<String>,
    /// Class labels by index (classification).
    pub classes: Vec<String>,
    /// A scaler (splits from before preprocessing).
    pub scaler: Option<Scaler>,
    /// The fitted preprocessing.
    pub preprocessor: Option<Preprocessor>,
}

/// A model's predictions.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicted {
    /// Class indices.
    Classes(Vec<usize>),
    /// Values.
    Values(Vec<f64>),
}

impl SavedModel {
    /// Encodes as MessagePack.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        rmp_serde::to_vec_named(self).map_err(MlError::invalid)
    }
    /// Decodes from MessagePack.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        rmp_serde::from_slice(bytes).map_err(|e| MlError::invalid(format!("not a Warren model: {e}")))
    }

    /// Predicts on feature rows already scaled.
    pub fn predict_scaled(&self, x: &Array2<f64>) -> Predicted {
        match &self.fitted {
            Fitted::Logistic(m) => Predicted::Classes(m.predict(x).to_vec()),
            Fitted::Tree(m) if m.classes == 0 => Predicted::Values(m.predict_values(x)),
            Fitted::Tree(m) => Predicted::Classes(m.predict(x)),
            Fitted::Forest(m) if m.classes == 0 => Predicted::Values(m.predict_values(x)),
            Fitted::Forest(m) => Predicted::Classes(m.predict(x)),
            Fitted::Boosted(m) if m.classes == 0 => Predicted::Values(m.predict_values(x)),
            Fitted::Boosted(m) => Predicted::Classes(m.predict(x)),
            Fitted::Linear(m) => Predicted::Values(m.predict(x).to_vec()),
            Fitted::ElasticNet(m) => Predicted::Values(m.predict(x).to_vec()),
        }
    }

    /// Predicts on raw rows (the scaler is applied here).
    pub fn predict_rows(&self, rows: &[Vec<f64>]) -> Result<Predicted> {
        let n = self.feature_names.len();
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != n) {
            return Err(MlError::invalid(format!(
                "row {i} has {} values; the model takes {n}: {}",
                r.len(),
                self.feature_names.join(", ")
            )));
        }
        let mut x = Array2::from_shape_fn((rows.len(), n), |(i, j)| rows[i][j]);
        if let Some(s) = &self.scaler {
            for j in 0..n {
                x.column_mut(j).mapv_inplace(|v| (v - s.means[j]) / s.stds[j]);
            }
        }
        Ok(self.predict_scaled(&x))
    }

    /// The raw columns a row gives, in order: the preprocessing's inputs, or the features.
    pub fn inputs(&self) -> Vec<String> {
        match &self.preprocessor {
            Some(p) => p.inputs.iter().map(|t| t.column.clone()).collect(),
            None => self.feature_names.clone(),
        }
    }

    /// Each input's kind (`numeric`, `categorical`, `boolean`), parallel to [`Self::inputs`].
    pub fn input_types(&self) -> Vec<String> {
        match &self.preprocessor {
            Some(p) => p.inputs.iter().map(|t| t.kind.to_string()).collect(),
            None => vec!["f64".into(); self.feature_names.len()],
        }
    }

    /// Predicts on a table of raw columns (a batch): the rows preprocessing refused come back
    /// with why (0-based), and are not predicted.
    pub fn predict_table(&self, table: &Table) -> Result<(Predicted, Vec<(usize, String)>)> {
        let Some(pre) = &self.preprocessor else {
            return Err(MlError::invalid("this model has no preprocessing to read raw columns with"));
        };
        let out = preprocess::transform(pre, table)?;
        let keep: Vec<usize> = (0..out.x.nrows()).filter(|i| !out.refused.iter().any(|(r, _)| r == i)).collect();
        let x = out.x.select(ndarray::Axis(0), &keep);
        Ok((self.predict_scaled(&x), out.refused))
    }

    /// Predicts on the rows of a request, as the raw table had them (`columns` names their
    /// values; the inputs in order when absent); any row that cannot be read refuses the lot.
    pub fn predict_cells(&self, columns: Option<&[String]>, rows: &[Vec<Option<Cell>>]) -> Result<Predicted> {
        let Some(pre) = &self.preprocessor else {
            return Err(MlError::invalid("this model has no preprocessing to read raw rows with"));
        };
        let table = preprocess::rows_table(pre, columns, rows)?;
        let out = preprocess::transform(pre, &table)?;
        if let Some((row, why)) = out.refused.first() {
            return Err(MlError::invalid(format!("row {}, {why}", row + 1)));
        }
        Ok(self.predict_scaled(&out.x))
    }

    /// Class labels of predicted indices.
    pub fn labels(&self, classes: &[usize]) -> Vec<String> {
        classes.iter().map(|&c| self.classes.get(c).cloned().unwrap_or_else(|| c.to_string())).collect()
    }
}

/// Features and targets of a split table (features first, target last).
#[derive(Debug, Clone)]
pub struct Xy {
    /// Feature matrix.
    pub x: Array2<f64>,
    /// Class indices (classification).
    pub classes: Array1<usize>,
    /// Values (regression).
    pub values: Array1<f64>,
}

/// Reads a split table into matrices; class labels are indexed by `classes`.
pub fn xy(table: &Table, classes: &[String]) -> Result<Xy> {
    let n_features = table.names.len().saturating_sub(1);
    let rows = table.rows();
    let mut x = Array2::zeros((rows, n_features));
    for (j, col) in table.columns[..n_features].iter().enumerate() {
        let Values::F64(v) = col else {
            return Err(MlError::invalid(format!("feature `{}` is not numeric", table.names[j])));
        };
        for (i, value) in v.iter().enumerate() {
            x[[i, j]] = value
                .ok_or_else(|| MlError::invalid(format!("feature `{}`, row {}: missing", table.names[j], i + 1)))?;
        }
    }
    let (mut c, mut v) = (Array1::zeros(0), Array1::zeros(0));
    match table.columns.last() {
        Some(Values::Str(labels)) => {
            c = labels
                .iter()
                .map(|l| l.as_ref().and_then(|l| classes.iter().position(|k| k == l)).unwrap_or(0))
                .collect();
        }
        Some(Values::F64(values)) => v = values.iter().map(|x| x.unwrap_or(f64::NAN)).collect(),
        None => return Err(MlError::invalid("empty table")),
    }
    Ok(Xy { x, classes: c, values: v })
}

/// The hyperparameters each algorithm takes.
pub fn hyperparameters(a: Algorithm) -> &'static [&'static str] {
    const TREE: &[&str] = &["max_depth", "min_samples_split", "min_samples_leaf", "max_features", "criterion", "seed"];
    match a {
        Algorithm::Logistic => &["alpha", "max_iterations"],
        Algorithm::DecisionTree => TREE,
        Algorithm::RandomForest => &[
            "n_estimators",
            "bootstrap",
            "max_depth",
            "min_samples_split",
            "min_samples_leaf",
            "max_features",
            "criterion",
            "seed",
        ],
        Algorithm::GradientBoosting => &[
            "n_estimators",
            "learning_rate",
            "max_depth",
            "min_samples_split",
            "min_samples_leaf",
            "max_features",
            "seed",
        ],
        Algorithm::Linear | Algorithm::External => &[],
        Algorithm::ElasticNet => &["penalty", "l1_ratio"],
    }
}

/// Reads a candidate's hyperparameters, refusing names the algorithm does not take.
struct Hp<'a>(&'a Candidate);

impl Hp<'_> {
    fn check(&self) -> Result<()> {
        let known = hyperparameters(self.0.algorithm);
        match self.0.hyperparams.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(MlError::invalid(format!(
                "{:?} has no hyperparameter `{k}` (it takes: {})",
                self.0.algorithm,
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            ))),
            None => Ok(()),
        }
    }
    fn num(&self, name: &str, default: f64) -> Result<f64> {
        match self.0.hyperparams.get(name) {
            None => Ok(default),
            Some(Hyper::Number(n)) if n.is_finite() => Ok(*n),
            Some(other) => Err(MlError::invalid(format!("hyperparameter `{name}` must be a number, got `{other}`"))),
        }
    }
    fn count(&self, name: &str, default: usize, min: usize) -> Result<usize> {
        let v = self.num(name, default as f64)?;
        if v < min as f64 || v.fract() != 0.0 {
            return Err(MlError::invalid(format!(
                "hyperparameter `{name}` must be a whole number of at least {min}, got {v}"
            )));
        }
        Ok(v as usize)
    }
    fn text(&self, name: &str, default: &str) -> String {
        self.0.hyperparams.get(name).map_or_else(|| default.to_owned(), |v| v.to_string())
    }
    /// `max_features`: a count (> 1), a share (0, 1], `sqrt`, `log2`, or all.
    fn max_features(&self, n: usize, default: &str) -> Result<Option<usize>> {
        let n = n.max(1);
        let resolve = |v: &Hyper| -> Result<Option<usize>> {
            Ok(match v {
                Hyper::Text(t) if t == "sqrt" => Some(((n as f64).sqrt() as usize).max(1)),
                Hyper::Text(t) if t == "log2" => Some(((n as f64).log2() as usize).max(1)),
                Hyper::Text(t) if t == "all" || t == "none" => None,
                Hyper::Number(f) if *f > 0.0 && *f <= 1.0 => Some(((f * n as f64) as usize).max(1)),
                Hyper::Number(c) if *c > 1.0 && c.fract() == 0.0 => Some((*c as usize).min(n)),
                other => {
                    return Err(MlError::invalid(format!(
                        "max_features `{other}`: give a count, a share in (0, 1], sqrt, log2 or all"
                    )));
                }
            })
        };
        match self.0.hyperparams.get("max_features") {
            Some(v) => resolve(v),
            None => resolve(&Hyper::Text(default.to_owned())),
        }
    }
    fn tree(
        &self,
        data: &Xy,
        classes: bool,
        default_criterion: &str,
        max_features: &str,
        depth: Option<usize>,
    ) -> Result<TreeParams> {
        let depth = self.num("max_depth", depth.map_or(0.0, |d| d as f64))?;
        let criterion = Criterion::parse(&self.text("criterion", default_criterion))?;
        let classifying = matches!(criterion, Criterion::Gini | Criterion::Entropy);
        if classifying != classes {
            let task = if classes { "classification" } else { "regression" };
            return Err(MlError::invalid(format!(
                "criterion `{}` does not fit a {task} task",
                self.text("criterion", "")
            )));
        }
        Ok(TreeParams {
            max_depth: (depth >= 1.0).then_some(depth as usize),
            min_samples_split: self.count("min_samples_split", 2, 2)?,
            min_samples_leaf: self.count("min_samples_leaf", 1, 1)?,
            max_features: self.max_features(data.x.ncols(), max_features)?,
            criterion,
            seed: self.num("seed", 0.0)? as u64,
        })
    }
}

/// Fits `candidate` on `data` for `task`; `stop` ends tree training early.
pub fn fit(candidate: &Candidate, data: &Xy, task: Task, stop: &Stop) -> Result<Fitted> {
    let fail = |e: &dyn std::fmt::Display| MlError::invalid(format!("{:?} failed to fit: {e}", candidate.algorithm));
    let hp = Hp(candidate);
    hp.check()?;
    let classes = task == Task::Classification;
    let n_classes = data.classes.iter().max().map_or(1, |m| m + 1);
    let target = if classes {
        Target::Classes { y: data.classes.as_slice().unwrap_or(&[]), k: n_classes }
    } else {
        Target::Values(data.values.as_slice().unwrap_or(&[]))
    };
    let criterion = if classes { "gini" } else { "squared_error" };
    Ok(match candidate.algorithm {
        Algorithm::External => {
            return Err(MlError::invalid("`external` models are trained outside Warren (a step brings them as ONNX)"));
        }
        Algorithm::Logistic => {
            let ds = Dataset::new(data.x.clone(), data.classes.clone());
            let m = MultiLogisticRegression::default()
                .alpha(hp.num("alpha", 1.0)?)
                .max_iterations(hp.num("max_iterations", 100.0)? as u64)
                .fit(&ds)
                .map_err(|e| fail(&e))?;
            Fitted::Logistic(m)
        }
        Algorithm::DecisionTree => {
            Fitted::Tree(Tree::fit(&data.x, target, None, hp.tree(data, classes, criterion, "all", None)?, stop)?)
        }
        Algorithm::RandomForest => {
            let p = ForestParams {
                n_estimators: hp.count("n_estimators", 100, 1)?,
                bootstrap: hp.num("bootstrap", 1.0)? != 0.0,
                tree: hp.tree(data, classes, criterion, if classes { "sqrt" } else { "all" }, None)?,
            };
            Fitted::Forest(Forest::fit(&data.x, target, p, stop)?)
        }
        Algorithm::GradientBoosting => {
            let p = BoostParams {
                n_estimators: hp.count("n_estimators", 100, 1)?,
                learning_rate: hp.num("learning_rate", 0.1)?,
                tree: hp.tree(data, false, "friedman_mse", "all", Some(3))?,
            };
            Fitted::Boosted(Boosted::fit(&data.x, target, p, stop)?)
        }
        Algorithm::Linear => {
            let ds = Dataset::new(data.x.clone(), data.values.clone());
            Fitted::Linear(LinearRegression::new().fit(&ds).map_err(|e| fail(&e))?)
        }
        Algorithm::ElasticNet => {
            let ds = Dataset::new(data.x.clone(), data.values.clone());
            let m = ElasticNet::params()
                .penalty(hp.num("penalty", 0.1)?)
                .l1_ratio(hp.num("l1_ratio", 0.5)?)
                .fit(&ds)
                .map_err(|e| fail(&e))?;
            Fitted::ElasticNet(m)
        }
    })
}

/// Metrics of a model on `data`: classification or regression, as the task says.
pub fn evaluate(model: &SavedModel, data: &Xy, task: Task) -> (BTreeMap<String, f64>, Option<Vec<Vec<u64>>>) {
    match (model.predict_scaled(&data.x), task) {
        (Predicted::Classes(p), _) => {
            let (m, c) = metrics::classification(data.classes.as_slice().unwrap_or(&[]), &p, model.classes.len());
            (m, Some(c))
        }
        (Predicted::Values(p), _) => (metrics::regression(data.values.as_slice().unwrap_or(&[]), &p), None),
    }
}

/// The result of [`train`].
#[derive(Debug, Clone)]
pub struct Trained {
    /// The model, refitted on all training rows.
    pub model: SavedModel,
    /// Its comparison score on the validation rows (fitted without them).
    pub validation_score: f64,
}

/// Fits a candidate for a trial: scores it on validation rows carved (seeded, stratified) from
/// the training rows, then refits on all of them.
#[allow(clippy::too_many_arguments)]
pub fn train(
    candidate: &Candidate,
    train_table: &Table,
    prepared: &Prepared,
    task: Task,
    metric: &str,
    validation_fraction: f64,
    seed: u64,
    stop: &Stop,
) -> Result<Trained> {
    if !candidate.algorithm.supports(task) {
        return Err(MlError::invalid(format!("{:?} cannot do {task:?}", candidate.algorithm)));
    }
    let all = xy(train_table, &prepared.classes)?;
    let groups: Vec<usize> = match task {
        Task::Classification => all.classes.to_vec(),
        Task::Regression => vec![0; all.x.nrows()],
    };
    let (fit_idx, val_idx) = features::split_indices(&groups, validation_fraction, seed ^ 0x5eed);
    let part = |idx: &[usize]| Xy {
        x: all.x.select(ndarray::Axis(0), idx),
        classes: if all.classes.is_empty() { all.classes.clone() } else { all.classes.select(ndarray::Axis(0), idx) },
        values: if all.values.is_empty() { all.values.clone() } else { all.values.select(ndarray::Axis(0), idx) },
    };
    let saved = |fitted| SavedModel {
        candidate: candidate.clone(),
        feature_names: prepared.feature_names.clone(),
        scaler: prepared.scaler.clone(),
        classes: prepared.classes.clone(),
        fitted,
        preprocessor: prepared.preprocessor.clone(),
    };
    let probe = saved(fit(candidate, &part(&fit_idx), task, stop)?);
    let (val_metrics, _) = evaluate(&probe, &part(&val_idx), task);
    let validation_score = metrics::score(&val_metrics, metric)?;
    let model = saved(fit(candidate, &all, task, stop)?);
    Ok(Trained { model, validation_score })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{features::prepare, ingest};

    fn prepared(s: &features::Split) -> Prepared {
        Prepared {
            feature_names: s.feature_names.clone(),
            classes: s.classes.clone(),
            scaler: None,
            preprocessor: Some(s.preprocessor.clone()),
        }
    }
    use warren_schemas::params::FeaturesParams;

    #[test]
    fn iris_trains_to_a_good_held_out_accuracy_and_round_trips() {
        let iris = ingest::builtin("iris").unwrap();
        let s = prepare(&iris.table, &iris.columns, &iris.target, iris.task, &FeaturesParams::default()).unwrap();
        for candidate in [
            Candidate { algorithm: Algorithm::Logistic, hyperparams: [("alpha".to_owned(), 0.1.into())].into() },
            Candidate {
                algorithm: Algorithm::DecisionTree,
                hyperparams: [("max_depth".to_owned(), 4.0.into())].into(),
            },
            Candidate {
                algorithm: Algorithm::RandomForest,
                hyperparams: [("n_estimators".to_owned(), 20.0.into())].into(),
            },
            Candidate {
                algorithm: Algorithm::GradientBoosting,
                hyperparams: [("n_estimators".to_owned(), 20.0.into())].into(),
            },
        ] {
            let t =
                train(&candidate, &s.train, &prepared(&s), iris.task, "accuracy", 0.2, 1, &Stop::default()).unwrap();
            let test = xy(&s.test, &s.classes).unwrap();
            let (m, confusion) = evaluate(&t.model, &test, iris.task);
            assert!(m["accuracy"] >= 0.9, "{candidate:?}: {m:?}");
            assert_eq!(confusion.unwrap().iter().flatten().sum::<u64>(), s.test.rows() as u64);
            let back = SavedModel::from_bytes(&t.model.to_bytes().unwrap()).unwrap();
            assert_eq!(back.predict_scaled(&test.x), t.model.predict_scaled(&test.x));
        }
    }

    #[test]
    fn diabetes_regresses() {
        let d = ingest::builtin("diabetes").unwrap();
        let s = prepare(&d.table, &d.columns, &d.target, d.task, &FeaturesParams::default()).unwrap();
        let c = Candidate { algorithm: Algorithm::Linear, hyperparams: BTreeMap::new() };
        let t = train(&c, &s.train, &prepared(&s), d.task, "r2", 0.2, 1, &Stop::default()).unwrap();
        let (m, _) = evaluate(&t.model, &xy(&s.test, &s.classes).unwrap(), d.task);
        assert!(m["r2"] > 0.3, "{m:?}");
        let raw = vec![vec![Some(Cell::Number(0.0)); s.feature_names.len()]];
        assert!(matches!(t.model.predict_cells(None, &raw).unwrap(), Predicted::Values(v) if v.len() == 1));
    }
}
