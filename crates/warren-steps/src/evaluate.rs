//! `evaluate`: held-out metrics, written as a JSON report.

use warren::{Context, StepError};
use warren_ml::{
    model::{self, SavedModel},
    table::Table,
};
use warren_schemas::{Evaluation, Model};

use crate::{blocking, fetch, put};

/// Scores the model on the test split.
pub async fn handle(ctx: Context, m: Model) -> Result<Evaluation, StepError> {
    let test = fetch(&ctx, &m.features.test).await?;
    let saved = fetch(&ctx, &m.artifact).await?;
    let (task, classes) = (m.features.task, m.features.classes.clone());
    let (metrics, confusion) = blocking(move || {
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
