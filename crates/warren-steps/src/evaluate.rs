//! `evaluate`: held-out metrics, written as a JSON report.

use warren::{Context, StepError};
use warren_ml::{
    model::{self, SavedModel},
    table::Table,
};
use warren_schemas::{Evaluation, Model};

use crate::{blocking, fetch, put};

/// Metrics by name, and the confusion matrix of a classifier.
type Scored = (std::collections::BTreeMap<String, f64>, Option<Vec<Vec<u64>>>);

/// Metrics of an ONNX model on raw held-out rows (Arrow IPC or CSV, the target included).
fn evaluate_onnx(graph: &[u8], test: &[u8], target: &str) -> Result<Scored, warren_ml::MlError> {
    use warren_ml::{MlError, model::Predicted, onnx, table::Values};
    let model = onnx::OnnxModel::import(graph, &onnx::ImportOptions::default())?;
    let table = if test.starts_with(b"ARROW1") {
        Table::from_ipc(test)?
    } else {
        let params = warren_schemas::params::IngestParams { target: Some(target.into()), ..Default::default() };
        warren_ml::ingest::csv(test, &params)?.table
    };
    let truth = table.column(target).ok_or_else(|| MlError::Invalid(format!("the test rows have no `{target}`")))?;
    let (out, refused) = model.predict_table(&table)?;
    if let Some((row, why)) = refused.first() {
        return Err(MlError::Invalid(format!("test row {}: {why}", row + 1)));
    }
    Ok(match (out.predicted, truth) {
        (Predicted::Classes(p), truth) => {
            let label = |i: usize| match truth {
                Values::Str(v) => v[i].clone(),
                Values::F64(v) => v[i].map(|x| x.to_string()),
            };
            let t = (0..table.rows())
                .map(|i| {
                    let l = label(i).unwrap_or_default();
                    model.classes.iter().position(|c| *c == l).ok_or_else(|| {
                        MlError::Invalid(format!("test row {}: `{l}` is not one of the model's classes", i + 1))
                    })
                })
                .collect::<Result<Vec<usize>, MlError>>()?;
            let (m, c) = warren_ml::metrics::classification(&t, &p, model.classes.len());
            (m, Some(c))
        }
        (Predicted::Values(p), Values::F64(v)) => {
            let t: Vec<f64> = v.iter().map(|x| x.unwrap_or(f64::NAN)).collect();
            (warren_ml::metrics::regression(&t, &p), None)
        }
        (Predicted::Values(_), Values::Str(_)) => {
            return Err(MlError::Invalid(format!("`{target}` is text, and the model predicts numbers")));
        }
    })
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
