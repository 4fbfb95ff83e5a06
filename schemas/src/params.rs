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
    /// Whether the first line names the columns (default `true`); without one, columns are
    /// `column_1`, `column_2`, ….
    #[serde(default)]
    pub header: Option<bool>,
    /// `utf-8` (the default; a byte that is not is refused naming it) or `latin-1`.
    #[serde(default)]
    #[schemars(extend("enum" = ["utf-8", "latin-1"]))]
    pub encoding: Option<String>,
    /// Cells read as a missing value (default: empty, `NA`, `N/A`, `NaN`, `nan`, `null`, `NULL`,
    /// `None`, `?`, `-`), as pandas' `na_values` does.
    #[serde(default)]
    pub missing: Option<Vec<String>>,
    /// Column kinds that override inference: `{ year = "categorical", comment = "text" }`
    /// (`numeric`, `categorical`, `boolean`, or `text` to leave a column out).
    #[serde(default)]
    pub types: BTreeMap<String, crate::ColumnKind>,
    /// Most distinct values a text column may have and still be read as categories (default 50);
    /// one with more is free text or an identifier, left out with the reason.
    #[serde(default)]
    #[schemars(range(min = 2))]
    pub max_categories: Option<u32>,
}

/// Cells read as missing values unless `missing` says otherwise.
pub const MISSING: &[&str] = &["", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "?", "-"];

/// Distinct values a text column may have as categories unless `max_categories` says otherwise.
pub const MAX_CATEGORIES: u32 = 50;

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

/// `features`: the split, and the preprocessing fitted on its training rows (as scikit-learn's
/// `Pipeline(ColumnTransformer(...))`): which columns are features, how gaps are filled, how
/// categories are encoded and numbers scaled. The fitted preprocessing travels with the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturesParams {
    /// Share of rows held out for evaluation.
    #[schemars(extend("exclusiveMinimum" = 0, "exclusiveMaximum" = 1))]
    pub test_fraction: f64,
    /// Seed of the (stratified, for classes) shuffle.
    pub seed: u64,
    /// How numeric features are scaled: `standard` (`true`), `min_max`, or `none` (`false`).
    pub scale: ScaleSpec,
    /// The feature columns (default: every column but the target and text columns).
    pub include: Option<Vec<String>>,
    /// Columns left out.
    pub exclude: Vec<String>,
    /// Only columns of these kinds (`numeric`, `categorical`, `boolean`).
    pub kinds: Option<Vec<crate::ColumnKind>>,
    /// Numeric columns: how gaps are filled.
    pub numeric: NumericSpec,
    /// Categorical and boolean columns: how gaps are filled and categories encoded.
    pub categorical: CategoricalSpec,
    /// Per-column settings over the two above: `{ island = { encode = "ordinal" } }`.
    pub columns: BTreeMap<String, ColumnSpec>,
    /// Drop rows whose target is missing (default `true`; `false` refuses them).
    pub drop_missing_target: bool,
}

impl Default for FeaturesParams {
    fn default() -> Self {
        Self {
            test_fraction: 0.25,
            seed: 42,
            scale: ScaleSpec::Flag(true),
            include: None,
            exclude: Vec::new(),
            kinds: None,
            numeric: NumericSpec::default(),
            categorical: CategoricalSpec::default(),
            columns: BTreeMap::new(),
            drop_missing_target: true,
        }
    }
}

/// How numbers are scaled: a name, or `true` (standard) / `false` (none).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ScaleSpec {
    /// `true`: standard; `false`: none.
    Flag(bool),
    /// A scaling by name.
    Named(Scaling),
}

impl ScaleSpec {
    /// The scaling meant.
    pub fn scaling(self) -> Scaling {
        match self {
            ScaleSpec::Flag(true) => Scaling::Standard,
            ScaleSpec::Flag(false) => Scaling::None,
            ScaleSpec::Named(s) => s,
        }
    }
}

/// A scaling of numeric features, fitted on the training rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scaling {
    /// `(x - mean) / std` (scikit-learn's `StandardScaler`).
    Standard,
    /// `(x - min) / (max - min)` (`MinMaxScaler`).
    MinMax,
    /// Unchanged.
    None,
}

/// How a missing value is filled, from the training rows (scikit-learn's `SimpleImputer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Impute {
    /// The mean (numbers).
    Mean,
    /// The median (numbers).
    Median,
    /// The most frequent value (the smallest of ties).
    MostFrequent,
    /// `fill`.
    Constant,
}

impl Impute {
    /// Its name as specs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Impute::Mean => "mean",
            Impute::Median => "median",
            Impute::MostFrequent => "most_frequent",
            Impute::Constant => "constant",
        }
    }
}

/// How categories become features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encode {
    /// One feature per category (`OneHotEncoder`).
    OneHot,
    /// The category's index (`OrdinalEncoder`), in `categories` order or sorted.
    Ordinal,
}

/// What a category not seen in training becomes at predict time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unknown {
    /// All zeros (one-hot) or -1 (ordinal): answered.
    Ignore,
    /// Refused, naming the column and the categories known.
    Error,
}

impl Unknown {
    /// Its name as specs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Unknown::Ignore => "ignore",
            Unknown::Error => "error",
        }
    }
}

/// Numeric columns' gaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NumericSpec {
    /// `mean` (default), `median`, `most_frequent` or `constant`.
    pub impute: Impute,
    /// The value of `constant`.
    pub fill: f64,
}

impl Default for NumericSpec {
    fn default() -> Self {
        Self { impute: Impute::Mean, fill: 0.0 }
    }
}

/// Categorical (and boolean) columns' gaps and encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CategoricalSpec {
    /// `most_frequent` (default) or `constant`.
    pub impute: Impute,
    /// The value of `constant` (a category of its own).
    pub fill: String,
    /// `one_hot` (default) or `ordinal`.
    pub encode: Encode,
    /// A category unseen in training: `ignore` (default) or `error`.
    pub unknown: Unknown,
}

impl Default for CategoricalSpec {
    fn default() -> Self {
        Self { impute: Impute::MostFrequent, fill: "missing".into(), encode: Encode::OneHot, unknown: Unknown::Ignore }
    }
}

/// One column's settings, over its kind's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ColumnSpec {
    /// How its gaps are filled.
    pub impute: Option<Impute>,
    /// The value of `constant` (a number or a category).
    pub fill: Option<crate::Hyper>,
    /// How it is encoded (categorical).
    pub encode: Option<Encode>,
    /// Its categories in order (ordinal; also fixes one-hot's features).
    pub categories: Option<Vec<String>>,
    /// A category unseen in training.
    pub unknown: Option<Unknown>,
    /// How it is scaled (numeric).
    pub scale: Option<Scaling>,
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
