//! `register`: the model registry in the artifact store.
//!
//! ```text
//! registry/{name}/versions/{000001}.json   one entry per version, with lineage
//! registry/{name}/latest.json              the `latest` alias: {"version": n}
//! ```
//!
//! A model below the `min_metrics` gate is refused (not registered) with the reason in the job's
//! events. One that passes gets the next version; `latest` moves to it unless the current latest
//! scores better on the pipeline's metric, in which case it is registered but not promoted. A
//! redelivered message finds its job's entry and returns it instead of adding another.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use warren::{Context, StepError};
use warren_ml::metrics::{lower_is_better, score};
use warren_schemas::{ArtifactRef, Evaluation, Registration, params::RegisterParams};

use crate::{STEP_VERSION, art};

/// One registry entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u32,
    /// The model artifact.
    pub model: ArtifactRef,
    /// Held-out metrics.
    pub metrics: BTreeMap<String, f64>,
    /// The metric trials were compared on.
    pub metric: String,
    /// Algorithm and hyperparameters.
    pub candidate: serde_json::Value,
    /// Lineage: the dataset, the split, the job.
    pub dataset_hash: String,
    /// The split's seed.
    pub seed: u64,
    /// The job that produced it.
    pub job_id: String,
    /// Its pipeline.
    pub pipeline: String,
    /// The register step's version and worker.
    pub registered_by: String,
    /// When (ms since the epoch).
    pub registered_at_ms: u64,
}

/// The `latest` alias.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alias {
    /// The version it points at.
    pub version: u32,
}

pub(crate) fn versions_dir(name: &str) -> String {
    format!("registry/{name}/versions")
}
pub(crate) fn version_key(name: &str, v: u32) -> String {
    format!("{}/{v:06}.json", versions_dir(name))
}
pub(crate) fn latest_key(name: &str) -> String {
    format!("registry/{name}/latest.json")
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, StepError> {
    serde_json::to_vec_pretty(v).map_err(|e| StepError::permanent(e.to_string()))
}

/// Registers (or refuses) the evaluated model.
pub async fn handle(ctx: Context, ev: Evaluation) -> Result<Registration, StepError> {
    let p: RegisterParams = ctx.params()?;
    let store = ctx.store()?;
    let refuse = |reason: String| {
        ctx.report(rmpv::Value::Map(vec![
            ("promoted".into(), false.into()),
            ("reason".into(), reason.as_str().into()),
        ]));
        Ok(Registration {
            name: p.model.clone(),
            version: None,
            promoted: false,
            reason: Some(reason),
            entry: None,
            metrics: ev.metrics.clone(),
        })
    };
    for (metric, bound) in &p.min_metrics {
        let Some(value) = ev.metrics.get(metric) else {
            return Err(StepError::permanent(format!("min_metrics names `{metric}`, which evaluate did not report")));
        };
        let passes = if lower_is_better(metric) { value <= bound } else { value >= bound };
        if !passes {
            let cmp = if lower_is_better(metric) { "above the maximum" } else { "below the minimum" };
            return refuse(format!("{metric} = {value:.4} is {cmp} of {bound} set by the promotion gate"));
        }
    }

    // Redelivery: this job may have registered already.
    let mut existing = Vec::new();
    for key in store.list(&versions_dir(&p.model)).await.map_err(art)? {
        let bytes = store.get(&key).await.map_err(art)?;
        if let Ok(e) = serde_json::from_slice::<Entry>(&bytes) {
            existing.push(e);
        }
    }
    let latest: Option<Alias> =
        store.get_opt(&latest_key(&p.model)).await.map_err(art)?.and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(mine) = existing.iter().find(|e| e.job_id == ctx.job_id.to_string()) {
        let promoted = latest.as_ref().is_some_and(|l| l.version == mine.version);
        let entry = store.uri(&version_key(&p.model, mine.version));
        return Ok(Registration {
            name: p.model,
            version: Some(mine.version),
            promoted,
            reason: None,
            entry: Some(ArtifactRef { uri: entry, hash: String::new(), bytes: 0 }),
            metrics: ev.metrics,
        });
    }

    // Compare with the current latest on the pipeline's metric.
    let metric = ev.model.metric.trim_start_matches("neg_").to_owned();
    let current = latest.as_ref().and_then(|l| existing.iter().find(|e| e.version == l.version));
    let worse_than = current.and_then(|c| {
        let new = score(&ev.metrics, &ev.model.metric).ok()?;
        let old = score(&c.metrics, &ev.model.metric).ok()?;
        (new < old).then_some((c.version, old))
    });

    let mut version = existing.iter().map(|e| e.version).max().unwrap_or(0) + 1;
    let mut entry = Entry {
        name: p.model.clone(),
        version,
        model: ev.model.artifact.clone(),
        metrics: ev.metrics.clone(),
        metric: ev.model.metric.clone(),
        candidate: serde_json::to_value(&ev.model.candidate).unwrap_or_default(),
        dataset_hash: ev.model.features.dataset_hash.clone(),
        seed: ev.model.features.seed,
        job_id: ctx.job_id.to_string(),
        pipeline: ctx.pipeline.to_string(),
        registered_by: format!("register {STEP_VERSION} on {}", ctx.worker),
        registered_at_ms: warren::envelope::now_ms(),
    };
    // Another job may take a version number at the same time: take the next free one.
    loop {
        entry.version = version;
        if store.create(&version_key(&p.model, version), json(&entry)?).await.map_err(art)? {
            break;
        }
        version += 1;
    }
    let entry_ref: ArtifactRef =
        ArtifactRef { uri: store.uri(&version_key(&p.model, version)), hash: String::new(), bytes: 0 };
    let (promoted, reason) = match worse_than {
        Some((v, old)) => {
            (false, Some(format!("{metric} is below that of version {v} ({old:.4}); `latest` stays there")))
        }
        None => {
            store.put(&latest_key(&p.model), json(&Alias { version })?).await.map_err(art)?;
            (true, None)
        }
    };
    ctx.report(rmpv::Value::Map(vec![
        ("model".into(), p.model.as_str().into()),
        ("version".into(), version.into()),
        ("promoted".into(), promoted.into()),
        ("reason".into(), reason.clone().map(Into::into).unwrap_or(rmpv::Value::Nil)),
    ]));
    Ok(Registration {
        name: p.model,
        version: Some(version),
        promoted,
        reason,
        entry: Some(entry_ref),
        metrics: ev.metrics,
    })
}
