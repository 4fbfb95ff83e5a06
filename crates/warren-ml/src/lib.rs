//! Warren's ML step logic: pure functions from input bytes, tables and parameters to outputs.
//! No broker and no artifact store here: the workers fetch and store the bytes, so every
//! function is testable on its own and deterministic for a given seed.
//!
//! # Layout
//!
//! - [`table`]: a small columnar table and its Arrow IPC (Feather v2) encoding.
//! - [`ingest`]: CSV files and the datasets that ship with linfa (iris, winequality, diabetes).
//! - [`validate`]: the checks a dataset must pass, with errors naming column and row.
//! - [`features`]: seeded, stratified train/test split and standardisation fitted on train only.
//! - [`tune`]: expanding search spaces into candidates (grid or seeded random search).
//! - [`model`]: fitting candidates (logistic regression, decision tree, linear, elastic net),
//!   the saved model format, and prediction.
//! - [`tree`]: a deterministic CART classification tree.
//! - [`metrics`]: accuracy, macro F1, confusion matrix; RMSE, MAE, R².
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod features;
pub mod ingest;
pub mod metrics;
pub mod model;
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
    /// Something that may work another time (reading a file that is being written, say).
    #[error("{0}")]
    Transient(String),
}

impl MlError {
    pub(crate) fn invalid(msg: impl std::fmt::Display) -> Self {
        MlError::Invalid(msg.to_string())
    }
}

/// Result of this crate's functions.
pub type Result<T> = std::result::Result<T, MlError>;
