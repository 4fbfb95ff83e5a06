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
use warren_schemas::{Algorithm, Candidate, Scaler, Task};

use crate::{
    MlError, Result, features, metrics,
    table::{Table, Values},
};

/// A fitted model of one of the supported algorithms.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Fitted {
    /// Multinomial logistic regression.
    Logistic(MultiFittedLogisticRegression<f64, usize>),
    /// A decision tree.
    Tree(crate::tree::Tree),
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
    /// Feature names, in the order rows must give them.
    pub feature_names: Vec<String>,
    /// Applied to raw rows before predicting.
    pub scaler: Option<Scaler>,
    /// Class labels by index (classification).
    pub classes: Vec<String>,
    /// The model.
    pub fitted: Fitted,
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
            Fitted::Tree(m) => Predicted::Classes(m.predict(x)),
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

fn hp(c: &Candidate, name: &str, default: f64) -> f64 {
    c.hyperparams.get(name).copied().unwrap_or(default)
}

/// Fits `candidate` on `data`.
pub fn fit(candidate: &Candidate, data: &Xy) -> Result<Fitted> {
    let fail = |e: &dyn std::fmt::Display| MlError::invalid(format!("{:?} failed to fit: {e}", candidate.algorithm));
    Ok(match candidate.algorithm {
        Algorithm::Logistic => {
            let ds = Dataset::new(data.x.clone(), data.classes.clone());
            let m = MultiLogisticRegression::default()
                .alpha(hp(candidate, "alpha", 1.0))
                .max_iterations(hp(candidate, "max_iterations", 100.0) as u64)
                .fit(&ds)
                .map_err(|e| fail(&e))?;
            Fitted::Logistic(m)
        }
        Algorithm::DecisionTree => {
            let depth = hp(candidate, "max_depth", 0.0);
            let n_classes = data.classes.iter().max().map_or(1, |m| m + 1);
            let params = crate::tree::TreeParams {
                max_depth: (depth >= 1.0).then_some(depth as usize),
                min_samples_split: hp(candidate, "min_samples_split", 2.0).max(2.0) as usize,
            };
            Fitted::Tree(crate::tree::Tree::fit(&data.x, data.classes.as_slice().unwrap_or(&[]), n_classes, params))
        }
        Algorithm::Linear => {
            let ds = Dataset::new(data.x.clone(), data.values.clone());
            Fitted::Linear(LinearRegression::new().fit(&ds).map_err(|e| fail(&e))?)
        }
        Algorithm::ElasticNet => {
            let ds = Dataset::new(data.x.clone(), data.values.clone());
            let m = ElasticNet::params()
                .penalty(hp(candidate, "penalty", 0.1))
                .l1_ratio(hp(candidate, "l1_ratio", 0.5))
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
    feature_names: &[String],
    classes: &[String],
    scaler: Option<Scaler>,
    task: Task,
    metric: &str,
    validation_fraction: f64,
    seed: u64,
) -> Result<Trained> {
    if candidate.algorithm.task() != task {
        return Err(MlError::invalid(format!("{:?} cannot do {task:?}", candidate.algorithm)));
    }
    let all = xy(train_table, classes)?;
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
        feature_names: feature_names.to_vec(),
        scaler: scaler.clone(),
        classes: classes.to_vec(),
        fitted,
    };
    let probe = saved(fit(candidate, &part(&fit_idx))?);
    let (val_metrics, _) = evaluate(&probe, &part(&val_idx), task);
    let validation_score = metrics::score(&val_metrics, metric)?;
    let model = saved(fit(candidate, &all)?);
    Ok(Trained { model, validation_score })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{features::split_and_scale, ingest};
    use warren_schemas::params::FeaturesParams;

    #[test]
    fn iris_trains_to_a_good_held_out_accuracy_and_round_trips() {
        let iris = ingest::builtin("iris").unwrap();
        let s = split_and_scale(&iris.table, &iris.target, iris.task, &FeaturesParams::default()).unwrap();
        for candidate in [
            Candidate { algorithm: Algorithm::Logistic, hyperparams: [("alpha".to_owned(), 0.1)].into() },
            Candidate { algorithm: Algorithm::DecisionTree, hyperparams: [("max_depth".to_owned(), 4.0)].into() },
        ] {
            let t = train(
                &candidate,
                &s.train,
                &s.feature_names,
                &s.classes,
                s.scaler.clone(),
                iris.task,
                "accuracy",
                0.2,
                1,
            )
            .unwrap();
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
        let s = split_and_scale(&d.table, &d.target, d.task, &FeaturesParams::default()).unwrap();
        let c = Candidate { algorithm: Algorithm::Linear, hyperparams: BTreeMap::new() };
        let t = train(&c, &s.train, &s.feature_names, &s.classes, s.scaler.clone(), d.task, "r2", 0.2, 1).unwrap();
        let (m, _) = evaluate(&t.model, &xy(&s.test, &s.classes).unwrap(), d.task);
        assert!(m["r2"] > 0.3, "{m:?}");
        let raw: Vec<Vec<f64>> = vec![vec![0.0; s.feature_names.len()]];
        assert!(matches!(t.model.predict_rows(&raw).unwrap(), Predicted::Values(v) if v.len() == 1));
    }
}
