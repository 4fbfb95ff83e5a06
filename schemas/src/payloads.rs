//! Payloads: what the ML steps send each other. Datasets and models never ride in a message:
//! an [`ArtifactRef`] points at them in the artifact store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A schema id per payload type; the envelope's `schema` field and the AMQP `type` carry it.
pub trait SchemaId {
    /// E.g. `warren.ml.Dataset/1`.
    const SCHEMA_ID: &'static str;
}

macro_rules! schema {
    ($t:ty, $id:literal) => {
        impl SchemaId for $t {
            const SCHEMA_ID: &'static str = $id;
        }
        #[cfg(feature = "warren")]
        impl warren::Payload for $t {
            const SCHEMA: &'static str = $id;
        }
    };
}

/// A version given as a number or as text (an alias, or digits), read as text.
fn number_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(u64),
        Text(String),
    }
    Ok(Option::<Either>::deserialize(d)?.map(|v| match v {
        Either::Number(n) => n.to_string(),
        Either::Text(t) => t,
    }))
}

/// A claim check: where an artifact is and what it contains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ArtifactRef {
    /// `file:///…` or `s3://bucket/…`.
    pub uri: String,
    /// `sha256:{hex}` of the bytes.
    pub hash: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// What kind of prediction the data asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Predict a class label.
    Classification,
    /// Predict a number.
    Regression,
}

/// One column of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Arrow data type, e.g. `Float64` or `Utf8`.
    pub dtype: String,
    /// What the column is to a model, as ingest inferred it (or the spec's `types` said);
    /// absent in datasets from before kinds: `Float64` is numeric, `Utf8` categorical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ColumnKind>,
    /// Why the kind, when it is not plain (a text column left out, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Column {
    /// The kind, or the one its type implies (datasets from before kinds).
    pub fn kind(&self) -> ColumnKind {
        self.kind.unwrap_or(if self.dtype == "Float64" { ColumnKind::Numeric } else { ColumnKind::Categorical })
    }
}

/// What a column is to a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// Numbers: imputed, then scaled.
    Numeric,
    /// A few distinct labels: imputed, then one-hot or ordinal encoded.
    Categorical,
    /// true/false, yes/no: imputed, then 1/0.
    Boolean,
    /// Free text or an identifier (too many distinct values to be categories): left out.
    Text,
}

impl ColumnKind {
    /// Its name as specs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnKind::Numeric => "numeric",
            ColumnKind::Categorical => "categorical",
            ColumnKind::Boolean => "boolean",
            ColumnKind::Text => "text",
        }
    }
}

impl std::fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's first message for pipelines that start from their parameters alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Start {
    /// Free text from whoever submitted the job.
    #[serde(default)]
    pub note: Option<String>,
}
schema!(Start, "warren.Start/1");

/// A dataset in the artifact store (Arrow IPC file, also known as Feather v2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Dataset {
    /// The table.
    pub artifact: ArtifactRef,
    /// Where it came from (`builtin:iris`, a path or URI).
    pub source: String,
    /// Hash of the source file's bytes when it was read (CSV sources), so a changed file can be
    /// told apart.
    #[serde(default)]
    pub source_hash: Option<String>,
    /// Row count.
    pub rows: u64,
    /// Columns, target included.
    pub columns: Vec<Column>,
    /// The target column.
    pub target: String,
    /// Classification or regression.
    pub task: Task,
    /// How a CSV source was read (so a re-read after the file is fixed reads it alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<crate::params::IngestParams>,
}
schema!(Dataset, "warren.ml.Dataset/1");

/// A train/test split, standardised on the training part only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Features {
    /// Content hash of the dataset it came from (lineage).
    pub dataset_hash: String,
    /// Training rows (Arrow IPC: features, then the target).
    pub train: ArtifactRef,
    /// Held-out rows, same layout.
    pub test: ArtifactRef,
    /// Feature column names, in order.
    pub feature_names: Vec<String>,
    /// Target column name.
    pub target: String,
    /// Classification or regression.
    pub task: Task,
    /// Class labels in index order (classification only).
    pub classes: Vec<String>,
    /// Per-feature mean and standard deviation applied, when scaling was on (splits made
    /// before preprocessing; a preprocessed split has `preprocessor` instead).
    pub scaler: Option<Scaler>,
    /// The split's seed.
    pub seed: u64,
    /// The preprocessing fitted on the training rows: raw columns in, `feature_names` out. It
    /// travels with the model, so predict takes rows as the raw table has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessor: Option<Preprocessor>,
}
schema!(Features, "warren.ml.Features/1");

/// Preprocessing fitted on a split's training rows, as scikit-learn's `ColumnTransformer` holds
/// it: for each raw input column, what fills its gaps and how it becomes features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Preprocessor {
    /// The raw columns a row must give, in this order unless it names them.
    pub inputs: Vec<Transform>,
    /// Columns of the table not used, and why (text, excluded, the target).
    #[serde(default)]
    pub left_out: Vec<LeftOut>,
    /// The target column (a row may carry it; it is not read).
    pub target: String,
}

/// A column not used as a feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LeftOut {
    /// Column name.
    pub column: String,
    /// Why.
    pub reason: String,
}

/// One raw column's preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Transform {
    /// Raw column name.
    pub column: String,
    /// Its kind.
    pub kind: ColumnKind,
    /// What a missing value becomes (before encoding), and how that was chosen.
    pub fill: Hyper,
    /// `mean`, `median`, `most_frequent` or `constant`.
    pub impute: String,
    /// How the (filled) value becomes features.
    pub encode: Encoding,
}

/// How a filled value becomes features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// `(x - center) / scale`: standard (mean, std), min-max (min, range) or none (0, 1).
    Numeric {
        /// Subtracted.
        center: f64,
        /// Divided by.
        scale: f64,
    },
    /// One feature per category (`column=category`), 1 for the row's; an unknown category is
    /// all zeros (`unknown = "ignore"`) or refused (`"error"`).
    OneHot {
        /// Categories, in feature order.
        categories: Vec<String>,
        /// `ignore` or `error`.
        unknown: String,
    },
    /// The category's index; an unknown category is -1 (`ignore`) or refused (`error`).
    Ordinal {
        /// Categories by index.
        categories: Vec<String>,
        /// `ignore` or `error`.
        unknown: String,
    },
    /// 1 for true (`true`, `yes`, `t`, `y`, any case), 0 for false.
    Boolean,
}

/// Standardisation fitted on the training rows: `(x - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Scaler {
    /// Means, per feature.
    pub means: Vec<f64>,
    /// Standard deviations, per feature (1.0 where a feature is constant).
    pub stds: Vec<f64>,
}

/// A learning algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// (Multinomial) logistic regression; hyperparameters `alpha` (L2), `max_iterations`.
    Logistic,
    /// CART decision tree (classification or regression) with scikit-learn's split rule;
    /// hyperparameters `max_depth`, `min_samples_split`, `min_samples_leaf`, `max_features`,
    /// `criterion` (`gini`, `entropy`; `squared_error`, `friedman_mse`), `seed`.
    DecisionTree,
    /// Random forest of CART trees on bootstrap samples; the tree's hyperparameters plus
    /// `n_estimators` (100) and `bootstrap` (1); `max_features` defaults to `sqrt` for classes.
    RandomForest,
    /// Gradient-boosted trees (log loss or squared error); `n_estimators` (100),
    /// `learning_rate` (0.1), `max_depth` (3), `min_samples_split`, `min_samples_leaf`,
    /// `max_features`, `seed`.
    GradientBoosting,
    /// Ordinary least squares.
    Linear,
    /// Elastic net; hyperparameters `penalty`, `l1_ratio`.
    ElasticNet,
    /// A model trained outside Warren (by a step in Python, say) and brought as ONNX; its
    /// hyperparameters are whatever its step reports. Never fitted by `train`.
    External,
}

impl Algorithm {
    /// Whether it can do `task`.
    pub fn supports(self, task: Task) -> bool {
        match self {
            Algorithm::Logistic => task == Task::Classification,
            Algorithm::Linear | Algorithm::ElasticNet => task == Task::Regression,
            Algorithm::DecisionTree | Algorithm::RandomForest | Algorithm::GradientBoosting => true,
            Algorithm::External => false,
        }
    }
}

/// A hyperparameter's value: a number, or a name (`criterion = "entropy"`, `max_features = "sqrt"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Hyper {
    /// A number.
    Number(f64),
    /// A name.
    Text(String),
}

impl Hyper {
    /// The number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Hyper::Number(n) => Some(*n),
            Hyper::Text(_) => None,
        }
    }
}

impl From<f64> for Hyper {
    fn from(v: f64) -> Self {
        Hyper::Number(v)
    }
}

impl From<&str> for Hyper {
    fn from(v: &str) -> Self {
        Hyper::Text(v.to_owned())
    }
}

impl std::fmt::Display for Hyper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hyper::Number(n) => write!(f, "{n}"),
            Hyper::Text(t) => write!(f, "{t}"),
        }
    }
}

/// An algorithm with its hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Candidate {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Hyperparameters by name.
    pub hyperparams: BTreeMap<String, Hyper>,
}

/// One training run: a candidate on a split, as one trial of a tuning job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TrainTask {
    /// The data.
    pub features: Features,
    /// What to fit.
    pub candidate: Candidate,
    /// This trial's index, from 0.
    pub trial: u32,
    /// Trials in the job.
    pub trials: u32,
    /// The metric trials are compared on (`accuracy`, `f1_macro`, `r2`, `neg_rmse`, ...).
    pub metric: String,
}
schema!(TrainTask, "warren.ml.TrainTask/1");

/// A fitted model in the artifact store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Model {
    /// The serialised model (MessagePack of the fitted linfa model with its metadata).
    pub artifact: ArtifactRef,
    /// What was fitted.
    pub candidate: Candidate,
    /// The data it was fitted on.
    pub features: Features,
    /// The trial it came from.
    pub trial: u32,
    /// Trials in the job.
    pub trials: u32,
    /// The comparison metric.
    pub metric: String,
    /// Its value on the validation rows carved from the training part (higher is better).
    pub validation_score: f64,
    /// How the artifact is stored: Warren's format, or an ONNX graph (a model a step trained
    /// elsewhere, scikit-learn's say; its `features.test` then holds the raw held-out rows,
    /// as CSV or Arrow, target included).
    #[serde(default, skip_serializing_if = "crate::onnx::ModelFormat::is_warren")]
    pub format: crate::onnx::ModelFormat,
}
schema!(Model, "warren.ml.Model/1");

/// Held-out metrics of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Evaluation {
    /// The model.
    pub model: Model,
    /// `accuracy`, `f1_macro` (classification); `rmse`, `mae`, `r2` (regression).
    pub metrics: BTreeMap<String, f64>,
    /// Confusion matrix, rows = true class, columns = predicted (classification).
    pub confusion: Option<Vec<Vec<u64>>>,
    /// The full report (JSON).
    pub report: ArtifactRef,
}
schema!(Evaluation, "warren.ml.Evaluation/1");

/// What the registry did with a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Registration {
    /// Model name.
    pub name: String,
    /// The version given, when registered.
    pub version: Option<u32>,
    /// Whether `latest` now points at it.
    pub promoted: bool,
    /// Why not, when refused.
    pub reason: Option<String>,
    /// The registry entry (JSON), when registered.
    pub entry: Option<ArtifactRef>,
    /// The metrics the decision was made on.
    pub metrics: BTreeMap<String, f64>,
}
schema!(Registration, "warren.ml.Registration/1");

/// A request to the predict step: rows to score now (RPC), or a dataset to batch-score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PredictRequest {
    /// Registered model name.
    pub model: String,
    /// A version number (`1` or `"1"`) or alias; `latest` when absent.
    #[serde(default, deserialize_with = "number_or_text")]
    #[schemars(extend("type" = ["string", "integer", "null"]))]
    pub version: Option<String>,
    /// Rows as the raw table has them: numbers, text categories, true/false, and `nil` for a
    /// missing value (the model's preprocessing fills it).
    #[serde(default)]
    pub rows: Vec<Vec<Option<Cell>>>,
    /// The feature each value of a row is, when rows do not give them in the model's order;
    /// checked against the model's signature.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// A dataset to score instead, written back as an artifact.
    #[serde(default)]
    pub dataset: Option<ArtifactRef>,
}
schema!(PredictRequest, "warren.ml.PredictRequest/1");

/// One value of a prediction row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Cell {
    /// A number.
    Number(f64),
    /// true or false.
    Flag(bool),
    /// Text: a category, or a number written out.
    Text(String),
}

impl From<f64> for Cell {
    fn from(v: f64) -> Self {
        Cell::Number(v)
    }
}

impl From<&str> for Cell {
    fn from(v: &str) -> Self {
        Cell::Text(v.to_owned())
    }
}

/// A row a batch prediction did not score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RefusedRow {
    /// Row number, from 1.
    pub row: u64,
    /// Why.
    pub reason: String,
}

/// Predictions of a registered model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Predictions {
    /// Model name.
    pub model: String,
    /// The version that answered.
    pub version: u32,
    /// Class labels (classification), one per row.
    pub labels: Vec<String>,
    /// Values (regression), one per row.
    pub values: Vec<f64>,
    /// The scored dataset, for batch requests.
    pub artifact: Option<ArtifactRef>,
    /// Rows scored.
    #[serde(default)]
    pub scored: u64,
    /// Rows refused (a batch scores the rest), with why.
    #[serde(default)]
    pub refused: Vec<RefusedRow>,
    /// Class probabilities (or scores), a row per label, in the order of `classes`: from models
    /// that give them (ONNX classifiers); empty otherwise, and for batches (which store them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probabilities: Vec<Vec<f64>>,
    /// The class labels the probabilities are for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
}
schema!(Predictions, "warren.ml.Predictions/1");

/// Every payload schema id, for documentation and fixtures.
pub const ALL_SCHEMAS: &[&str] = &[
    Start::SCHEMA_ID,
    Dataset::SCHEMA_ID,
    Features::SCHEMA_ID,
    TrainTask::SCHEMA_ID,
    Model::SCHEMA_ID,
    Evaluation::SCHEMA_ID,
    Registration::SCHEMA_ID,
    PredictRequest::SCHEMA_ID,
    Predictions::SCHEMA_ID,
];

/// Checks a payload (as a MessagePack value) against the type of schema id `schema`:
/// `Ok(false)` when the schema is not one of these, `Err` naming what does not fit.
pub fn check_payload(schema: &str, payload: &rmpv::Value) -> Result<bool, String> {
    fn fits<T: serde::de::DeserializeOwned>(v: &rmpv::Value) -> Result<bool, String> {
        crate::spec::from_wire_value::<T>(v).map(|_| true)
    }
    match schema {
        s if s == Start::SCHEMA_ID => fits::<Start>(payload),
        s if s == Dataset::SCHEMA_ID => fits::<Dataset>(payload),
        s if s == Features::SCHEMA_ID => fits::<Features>(payload),
        s if s == TrainTask::SCHEMA_ID => fits::<TrainTask>(payload),
        s if s == Model::SCHEMA_ID => fits::<Model>(payload),
        s if s == Evaluation::SCHEMA_ID => fits::<Evaluation>(payload),
        s if s == Registration::SCHEMA_ID => fits::<Registration>(payload),
        s if s == PredictRequest::SCHEMA_ID => fits::<PredictRequest>(payload),
        s if s == Predictions::SCHEMA_ID => fits::<Predictions>(payload),
        _ => Ok(false),
    }
}

#[cfg(feature = "warren")]
impl From<warren::artifacts::Stored> for ArtifactRef {
    fn from(s: warren::artifacts::Stored) -> Self {
        ArtifactRef { uri: s.uri, hash: s.hash, bytes: s.bytes }
    }
}
