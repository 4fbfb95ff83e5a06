//! `train`: fits one candidate and stores the model as `model-{trial}.msgpack`.

use warren::{Context, StepError};
use warren_ml::{model, table::Table};
use warren_schemas::{Model, TrainTask, params::TrainParams};

use crate::{blocking, fetch, put};

/// Fits the trial's candidate; scores it on validation rows carved from the training rows.
pub async fn handle(ctx: Context, task: TrainTask) -> Result<Model, StepError> {
    let p: TrainParams = ctx.params()?;
    let bytes = fetch(&ctx, &task.features.train).await?;
    let t = task.clone();
    let stop = warren_ml::Stop::from_flag(ctx.stop_flag());
    let started = std::time::Instant::now();
    let (trained, model_bytes) = blocking(move || {
        let table = Table::from_ipc(&bytes)?;
        let f = &t.features;
        let prepared = model::Prepared {
            feature_names: f.feature_names.clone(),
            classes: f.classes.clone(),
            scaler: f.scaler.clone(),
            preprocessor: f.preprocessor.clone(),
        };
        let trained =
            model::train(&t.candidate, &table, &prepared, f.task, &t.metric, p.validation_fraction, f.seed, &stop)
                .inspect_err(|e| {
                    if matches!(e, warren_ml::MlError::Stopped(_)) {
                        tracing::warn!(
                            trial = t.trial,
                            algorithm = ?t.candidate.algorithm,
                            after_ms = started.elapsed().as_millis() as u64,
                            "training stopped: the step's maximum duration ran out"
                        );
                    }
                })?;
        let bytes = trained.model.to_bytes()?;
        Ok((trained, bytes))
    })
    .await?;
    let artifact = put(&ctx, &format!("model-{:04}.msgpack", task.trial), model_bytes).await?;
    // The trial as `warren status` and the console show it: what was tried and how it scored.
    let trial = serde_json::json!({
        "trial": task.trial,
        "algorithm": task.candidate.algorithm,
        "hyperparams": task.candidate.hyperparams,
        "metric": task.metric,
        "validation_score": trained.validation_score,
    });
    if let Ok(detail) = warren::envelope::to_msgpack_value(&trial) {
        ctx.report(detail);
    }
    Ok(Model {
        artifact,
        candidate: task.candidate,
        features: task.features,
        trial: task.trial,
        trials: task.trials,
        metric: task.metric,
        validation_score: trained.validation_score,
        format: warren_schemas::models::ModelFormat::Warren,
    })
}
