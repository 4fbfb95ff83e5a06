//! `register`: the model registry in the artifact store (layout and guarantees in
//! [`warren_schemas::models`]).
//!
//! A model below the `min_metrics` gate is refused (not registered) with the reason in the job's
//! events. One that passes gets the next version number (taken by an exclusive create), then is
//! promoted to the `alias` (`latest` unless set) only if it beats the alias's current model on
//! the metric by more than `margin`; the comparison is written beside the entry and in the
//! alias's move. Racing register workers cannot lose an update: an alias moves by creating its
//! next move file, and the loser of a race compares again against the winner.
//!
//! A redelivered message finds its job's entry; if the worker died before deciding, the
//! decision is made now, so nothing is registered twice and no promotion is lost.

use warren::{Context, StepError};
use warren_ml::metrics::lower_is_better;
use warren_schemas::{
    ArtifactRef, Evaluation, Registration,
    models::{Comparison, Entry, ModelFormat, ModelRegistry, Promote, RegistryError, Signature},
    params::RegisterParams,
};

use crate::{STEP_VERSION, art};

pub(crate) fn reg(e: RegistryError) -> StepError {
    match e {
        RegistryError::Store(e) => art(e),
        other => StepError::permanent(other),
    }
}

/// Registers (or refuses) the evaluated model.
pub async fn handle(ctx: Context, ev: Evaluation) -> Result<Registration, StepError> {
    let p: RegisterParams = ctx.params()?;
    let store = ctx.store()?;
    let registry = ModelRegistry::new(store, ctx.registry_scope(), &p.model);
    for (metric, bound) in &p.min_metrics {
        let Some(value) = ev.metrics.get(metric) else {
            return Err(StepError::permanent(format!("min_metrics names `{metric}`, which evaluate did not report")));
        };
        let passes = if lower_is_better(metric) { value <= bound } else { value >= bound };
        if !passes {
            let cmp = if lower_is_better(metric) { "above the maximum" } else { "below the minimum" };
            let reason = format!("{metric} = {value:.4} is {cmp} of {bound} set by the promotion gate");
            ctx.report(rmpv::Value::Map(vec![
                ("promoted".into(), false.into()),
                ("reason".into(), reason.as_str().into()),
            ]));
            return Ok(Registration {
                name: p.model.clone(),
                version: None,
                promoted: false,
                reason: Some(reason),
                entry: None,
                metrics: ev.metrics.clone(),
            });
        }
    }

    // Redelivery: this job may have registered already.
    let job = ctx.job_id.to_string();
    let mine = registry.versions().await.map_err(reg)?.into_iter().find(|e| e.job_id == job);
    let version = match mine {
        Some(e) => e.version,
        None => {
            let f = &ev.model.features;
            let (mut features, mut types) = inputs(f);
            let (mut classes, mut task) = (f.classes.clone(), f.task);
            // An ONNX model's signature is read from its graph, as `warren models import` reads it.
            let onnx = match ev.model.format {
                ModelFormat::Warren => None,
                ModelFormat::Onnx => {
                    let bytes = crate::fetch(&ctx, &ev.model.artifact).await?;
                    let m = crate::blocking(move || {
                        warren_ml::onnx::OnnxModel::import(&bytes, &warren_ml::onnx::ImportOptions::default())
                    })
                    .await?;
                    (features, types, classes, task) = (m.columns(), m.signature.types(), m.classes.clone(), m.task);
                    Some(m.signature)
                }
            };
            let mut entry = Entry {
                name: p.model.clone(),
                version: 0,
                model: ev.model.artifact.clone(),
                metrics: ev.metrics.clone(),
                metric: ev.model.metric.clone(),
                candidate: serde_json::to_value(&ev.model.candidate).unwrap_or_default(),
                signature: Some(Signature { features, types, task, classes }),
                dataset_hash: f.dataset_hash.clone(),
                seed: f.seed,
                job_id: job.clone(),
                pipeline: ctx.pipeline.to_string(),
                code_version: match &onnx {
                    Some(o) => match ev.model.candidate.hyperparams.get("estimator") {
                        Some(e) => format!("{e}, ONNX from {}", o.producer),
                        None => format!("ONNX from {}", o.producer),
                    },
                    None => format!("warren-steps {STEP_VERSION}"),
                },
                registered_by: format!("register {STEP_VERSION} on {}", ctx.worker),
                registered_at_ms: warren::envelope::now_ms(),
                format: ev.model.format,
                onnx,
            };
            registry.add(&mut entry).await.map_err(reg)?
        }
    };
    let comparison: Comparison = match registry.decision(version).await.map_err(reg)? {
        Some(c) => c,
        None => {
            let metric = p.metric.clone().unwrap_or_else(|| ev.model.metric.clone());
            let by = format!("register {STEP_VERSION} on {} for job {job}", ctx.worker);
            let how = Promote { metric: &metric, margin: p.margin, force: false, action: "register", by: &by };
            let (c, _) = registry.promote(&p.alias, version, &how).await.map_err(reg)?;
            registry.decide(version, &c).await.map_err(reg)?;
            // A second decision (a redelivery racing this one) keeps the first on record.
            registry.decision(version).await.map_err(reg)?.unwrap_or(c)
        }
    };
    let reason = (!comparison.promoted).then(|| comparison.reason.clone());
    ctx.report(rmpv::Value::Map(vec![
        ("model".into(), p.model.as_str().into()),
        ("version".into(), version.into()),
        ("alias".into(), p.alias.as_str().into()),
        ("promoted".into(), comparison.promoted.into()),
        ("comparison".into(), comparison.reason.as_str().into()),
        ("reason".into(), reason.clone().map(Into::into).unwrap_or(rmpv::Value::Nil)),
    ]));
    Ok(Registration {
        name: p.model,
        version: Some(version),
        promoted: comparison.promoted,
        reason,
        entry: Some(ArtifactRef { uri: store.uri(&registry.version_key(version)), hash: String::new(), bytes: 0 }),
        metrics: ev.metrics,
    })
}

/// The raw columns a model of `f` takes and their kinds: the preprocessing's inputs, or (splits
/// from before preprocessing) the numeric features.
fn inputs(f: &warren_schemas::Features) -> (Vec<String>, Vec<String>) {
    match &f.preprocessor {
        Some(p) => {
            (p.inputs.iter().map(|t| t.column.clone()).collect(), p.inputs.iter().map(|t| t.kind.to_string()).collect())
        }
        None => (f.feature_names.clone(), vec!["f64".into(); f.feature_names.len()]),
    }
}
