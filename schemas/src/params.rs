//! What each step takes from its hop on the routing slip. Unknown keys are refused, so a typo in
//! a pipeline spec is an error at submit, not a silently ignored setting.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Algorithm;

/// `ingest`: where the data comes from. Exactly one of `dataset` and `csv`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("oneOf" = [{ "required": ["dataset"], "not": { "required": ["csv"] } }, { "required": ["csv"], "not": { "required": ["dataset"] } }]))]
#[serde(deny_unknown_fields)]
pub struct IngestParams {
    /// A dataset shipped with the workers: `iris`, `winequality` or `diabetes`.
    #[serde(default)]
    #[schemars(extend("enum" = ["iris", "winequality", "diabetes"]))]
    pub dataset: Option<String>,
    /// A CSV file: a path on the worker's machine, `file://…`, or an artifact URI.
    #[serde(default)]
    pub csv: Option<String>,
    /// The target column of a CSV file (default: its last column).
    #[serde(default)]
    pub target: Option<String>,
    /// The CSV's field delimiter, one character (`","`, `";"`, `"\t"`, `"|"`); unset, the one
    /// of those the header line holds most of.
    #[serde(default)]
    #[schemars(length(min = 1, max = 1))]
    pub delimiter: Option<String>,
    /// Older form of `task`: `true` is classification, `false` regression.
    #[serde(default)]
    pub classification: Option<bool>,
    /// `classification` or `regression`; unset, the target decides (text, or whole numbers with
    /// few distinct values: classes; other numbers: regression), as scikit-learn's
    /// `type_of_target` does.
    #[serde(default)]
    #[schemars(extend("enum" = ["classification", "regression"]))]
    pub task: Option<String>,
}

/// `validate`: what the data must satisfy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ValidateParams {
    /// Fewest rows accepted.
    #[schemars(range(min = 1))]
    pub min_rows: u64,
    /// Fewest examples of each class (classification).
    pub min_class_count: u64,
    /// Whether a constant feature column is only a warning (default: an error).
    pub allow_constant: bool,
}

impl Default for ValidateParams {
    fn default() -> Self {
        Self { min_rows: 10, min_class_count: 2, allow_constant: false }
    }
}

/// `features`: the split and the scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturesParams {
    /// Share of rows held out for evaluation.
    #[schemars(extend("exclusiveMinimum" = 0, "exclusiveMaximum" = 1))]
    pub test_fraction: f64,
    /// Seed of the (stratified, for classes) shuffle.
    pub seed: u64,
    /// Standardise features, fitted on the training rows only.
    pub scale: bool,
}

impl Default for FeaturesParams {
    fn default() -> Self {
        Self { test_fraction: 0.25, seed: 42, scale: true }
    }
}

/// One algorithm and the values to try for each hyperparameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchSpace {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Values per hyperparameter; the grid is their product.
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<crate::Hyper>>,
}

/// `tune`: the candidates to train, one train message each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TuneParams {
    /// The metric to pick the best by (`accuracy`, `f1_macro`, `r2`, `neg_rmse`, `neg_mae`).
    #[schemars(extend("enum" = ["accuracy", "f1_macro", "r2", "neg_rmse", "neg_mae"]))]
    pub metric: String,
    /// Algorithms and their grids.
    #[schemars(length(min = 1))]
    pub search: Vec<SearchSpace>,
    /// Random search: train this many points drawn from the grids instead of all of them.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub budget: Option<u32>,
    /// Seed of the random search.
    #[serde(default)]
    pub seed: u64,
}

/// `train`: how trials are scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TrainParams {
    /// Share of the training rows kept aside to score the trial.
    #[schemars(extend("exclusiveMinimum" = 0, "exclusiveMaximum" = 1))]
    pub validation_fraction: f64,
}

impl Default for TrainParams {
    fn default() -> Self {
        Self { validation_fraction: 0.2 }
    }
}

/// `register`: the registry entry and its promotion gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterParams {
    /// Model name in the registry.
    #[schemars(length(min = 1))]
    pub model: String,
    /// Minimum held-out metrics to register at all, e.g. `{ accuracy = 0.9 }` (for error metrics
    /// such as `rmse`, a maximum).
    #[serde(default)]
    pub min_metrics: BTreeMap<String, f64>,
    /// The alias a registered version is promoted to when it beats the alias's model.
    #[serde(default = "default_alias")]
    #[schemars(length(min = 1), regex(pattern = r"^[a-z][a-z0-9_-]*$"))]
    pub alias: String,
    /// How much better (on `metric`) a version must score to be promoted.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub margin: f64,
    /// The metric promotion compares on (`accuracy`, `f1_macro`, `r2`, `neg_rmse`, `neg_mae`);
    /// the one trials were compared on when absent.
    #[serde(default)]
    #[schemars(extend("enum" = ["accuracy", "f1_macro", "r2", "neg_rmse", "neg_mae", null]))]
    pub metric: Option<String>,
}

fn default_alias() -> String {
    "latest".into()
}

/// `select`: what happens when trials die (a dead trial is dead-lettered at train; select is
/// told, see `warren::DeadNotice`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SelectParams {
    /// `fail` (the default): once every trial is in or dead, a dead trial kills the job at
    /// select, naming the dead trials; replaying them later still ends in one selection.
    /// `continue`: the job goes on with the trials that succeeded, if there are `min_trials`.
    pub on_failed_trial: FailedTrials,
    /// With `continue`: how many trials must succeed.
    #[schemars(range(min = 1))]
    pub min_trials: u32,
}

impl Default for SelectParams {
    fn default() -> Self {
        Self { on_failed_trial: FailedTrials::Fail, min_trials: 1 }
    }
}

/// What `select` does about dead trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailedTrials {
    /// The job dies at select, naming the dead trials.
    Fail,
    /// The job goes on with the trials that succeeded.
    Continue,
}

/// Steps that take no parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}
