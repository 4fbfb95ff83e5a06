//! `evaluate`: held-out metrics, written as a JSON report.

use warren::{Context, StepError};
use warren_ml::{
    model::{self, SavedModel},
    onnx,
    table::Table,
};
use warren_schemas::{Evaluation, Model};

use crate::{blocking, fetch, put};

/// Metrics of an ONNX model on raw held-out rows (Arrow IPC or CSV, the target included).
fn evaluate_onnx(graph: &[u8], test: &[u8], target: &str) -> Result<onnx::Scored, warren_ml::MlError> {
    let model = onnx::OnnxModel::import(graph, &onnx::ImportOptions::default())?;
    model.score(&onnx::test_rows(test, target)?, target)
}

/// Scores the model on the test split.
pub async fn handle(ctx: Context, m: Model) -> Result<Evaluation, StepError> {
    let test = fetch(&ctx, &m.features.test).await?;
    let saved = fetch(&ctx, &m.artifact).await?;
    let (task, classes) = (m.features.task, m.features.classes.clone());
    let target = m.features.target.clone();
    let format = m.format;
    let (metrics, confusion) = blocking(move || {
        if format == warren_schemas::models::ModelFormat::Onnx {
            return evaluate_onnx(&saved, &test, &target);
        }
        let model = SavedModel::from_bytes(&saved)?;
        let data = model::xy(&Table::from_ipc(&test)?, &classes)?;
        Ok(model::evaluate(&model, &data, task))
    })
    .await?;
    let report = serde_json::json!({
        "job": ctx.job_id.to_string(),
        "model": m.artifact.uri,
        "algorithm": m.candidate.algorithm,
        "hyperparams": m.candidate.hyperparams,
        "trial": m.trial,
        "validation_score": m.validation_score,
        "test_rows_hash": m.features.test.hash,
        "classes": m.features.classes,
        "format": m.format,
        "metrics": metrics,
        "confusion_matrix": confusion,
    });
    let bytes = serde_json::to_vec_pretty(&report).map_err(|e| StepError::permanent(e.to_string()))?;
    let report = put(&ctx, "report.json", bytes).await?;
    ctx.report(rmpv::Value::Map(
        metrics.iter().map(|(k, v)| (rmpv::Value::from(k.as_str()), rmpv::Value::from(*v))).collect(),
    ));
    Ok(Evaluation { model: m, metrics, confusion, report })
}
