//! Warren's ML step logic: pure functions from input bytes, tables and parameters to outputs.
//! No broker and no artifact store here: the workers fetch and store the bytes, so every
//! function is testable on its own and deterministic for a given seed.
//!
//! # Layout
//!
//! - [`table`]: a small columnar table and its Arrow IPC (Feather v2) encoding.
//! - [`ingest`]: CSV files and the datasets that ship with linfa (iris, winequality, diabetes).
//! - [`validate`]: the checks a dataset must pass, with errors naming column and row.
//! - [`features`]: seeded, stratified train/test split, preprocessed as fitted on train only.
//! - [`preprocess`]: column choice, imputation, category encoding and scaling (scikit-learn's
//!   `ColumnTransformer`), fitted on training rows and applied to raw rows at predict time.
//! - [`tune`]: expanding search spaces into candidates (grid or seeded random search).
//! - [`model`]: fitting candidates (logistic regression, decision tree, random forest,
//!   gradient boosting, linear, elastic net),
//!   the saved model format, and prediction.
//! - [`onnx`]: ONNX models (scikit-learn's through skl2onnx, networks), read and served with
//!   tract, and Warren's own models written as ONNX.
//! - [`tree`]: CART trees with scikit-learn's split rule, random forests and gradient boosting.
//! - [`parity`]: the runs compared with scikit-learn (benchmark and test).
//! - [`metrics`]: accuracy, macro F1, confusion matrix; RMSE, MAE, R².
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod features;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod parity;
pub mod preprocess;
pub mod table;
pub mod tree;
pub mod tune;
pub mod validate;

/// What can go wrong in a step's logic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MlError {
    /// The data or parameters cannot work, however often the step is tried (a permanent error).
    #[error("{0}")]
    Invalid(String),
    /// Training was told to stop (its step's maximum duration ran out).
    #[error("{0}")]
    Stopped(String),
}

/// Tells long-running work (training) to stop: checked between tree nodes, trees and boosting
/// stages, so it ends within milliseconds of [`Stop::set`].
#[derive(Debug, Clone, Default)]
pub struct Stop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Stop {
    /// A stop driven by a shared flag (a worker's cancellation flag, say).
    pub fn from_flag(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Stop {
        Stop(flag)
    }
    /// Asks the work to stop.
    pub fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    /// Whether stop was asked for.
    pub fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// `Err(Stopped)` once stop was asked for.
    pub fn check(&self) -> Result<()> {
        if self.is_set() { Err(MlError::Stopped("training stopped: it was told to stop".into())) } else { Ok(()) }
    }
}

impl MlError {
    pub(crate) fn invalid(msg: impl std::fmt::Display) -> Self {
        MlError::Invalid(msg.to_string())
    }
}

/// Result of this crate's functions.
pub type Result<T> = std::result::Result<T, MlError>;
