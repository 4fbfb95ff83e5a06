//! The handlers of Warren's ML workers. Each module is one step: it reads its inputs from the
//! artifact store, calls `warren-ml`, writes its outputs under deterministic keys and returns
//! the next payload. `workers/<step>` is a one-line `main` around each.
//!
//! Errors map onto the runtime's: bad data or parameters are permanent (dead-letter at once),
//! store and I/O trouble is retryable.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod evaluate;
pub mod features;
pub mod ingest;
pub mod predict;
pub mod register;
pub mod select;
pub mod train;
pub mod tune;
pub mod validate;

use warren::{Context, StepError, artifacts::ArtifactError};
use warren_ml::MlError;
use warren_schemas::ArtifactRef;

/// README.md's Rust examples, compiled as doctests so they stay true (this crate sees every
/// crate the README uses).
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// How each step's worker runs: its parameters (announced as JSON Schema), its input files,
/// and for train, hours per model and one model per process.
pub fn options(step: &str) -> warren::cli::StepOptions {
    use warren_schemas::{params::*, *};
    let o = warren::cli::StepOptions::default();
    let o = match step {
        "ingest" => o.input_of::<Start>(),
        "validate" | "features" => o.input_of::<Dataset>(),
        "tune" => o.input_of::<Features>(),
        "train" => o.input_of::<TrainTask>(),
        "select" | "evaluate" => o.input_of::<Model>(),
        "register" => o.input_of::<Evaluation>(),
        "predict" => o.input_of::<PredictRequest>(),
        _ => o,
    };
    match step {
        "ingest" => warren::cli::StepOptions {
            file_params: vec!["csv".into()],
            file_formats: [(
                "csv".to_owned(),
                serde_json::json!({
                    "format": "csv",
                    "delimiter_param": "delimiter",
                    "header_param": "header",
                    "encoding_param": "encoding",
                    "column_params": ["target"],
                }),
            )]
            .into(),
            ..o
        }
        .params_of::<IngestParams>(),
        "validate" => o.params_of::<ValidateParams>(),
        "features" => o.params_of::<FeaturesParams>(),
        "tune" => o.params_of::<TuneParams>(),
        "train" => warren::cli::StepOptions {
            max_duration: Some(std::time::Duration::from_secs(2 * 3600)),
            concurrency: Some(1),
            ..o
        }
        .params_of::<TrainParams>(),
        "select" => warren::cli::StepOptions { gather: true, ..o }.params_of::<SelectParams>(),
        "register" => o.params_of::<RegisterParams>(),
        _ => o.params_of::<NoParams>(),
    }
}

/// The version recorded in registry lineage and cache keys.
pub const STEP_VERSION: &str = env!("CARGO_PKG_VERSION");

pub(crate) fn ml(e: MlError) -> StepError {
    match e {
        MlError::Stopped(m) => StepError::Retryable(m),
        other => StepError::Permanent(other.to_string()),
    }
}

pub(crate) fn art(e: ArtifactError) -> StepError {
    match e {
        ArtifactError::NotFound(_) | ArtifactError::HashMismatch { .. } | ArtifactError::Foreign { .. } => {
            StepError::permanent(e)
        }
        other => StepError::retryable(other),
    }
}

/// Reads an artifact and checks its hash.
pub(crate) async fn fetch(ctx: &Context, r: &ArtifactRef) -> Result<Vec<u8>, StepError> {
    ctx.store()?.fetch(&r.uri, Some(&r.hash)).await.map_err(art)
}

/// Writes an artifact of this job and step under `name`.
pub(crate) async fn put(ctx: &Context, name: &str, bytes: Vec<u8>) -> Result<ArtifactRef, StepError> {
    Ok(ctx.store()?.put(&ctx.artifact_key(name), bytes).await.map_err(art)?.into())
}

/// Runs CPU-heavy work off the runtime thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, MlError> + Send + 'static,
) -> Result<T, StepError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StepError::retryable(format!("worker task failed: {e}")))?
        .map_err(ml)
}

#[cfg(test)]
mod tests;
