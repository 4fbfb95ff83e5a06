//! `ingest`: a CSV file or a shipped dataset into an Arrow IPC dataset artifact.

use warren::{Context, StepError, artifacts::content_hash};
use warren_ml::ingest;
use warren_schemas::{Dataset, Start, params::IngestParams};

use crate::{blocking, ml, put};

/// Loads the source named in the params and stores it as `dataset.arrow`.
pub async fn handle(ctx: Context, _start: Start) -> Result<Dataset, StepError> {
    let p: IngestParams = ctx.params()?;
    let (loaded, source, source_hash) = match (&p.dataset, &p.csv) {
        (Some(name), None) => {
            let name = name.clone();
            let source = format!("builtin:{name}");
            (blocking(move || ingest::builtin(&name)).await?, source, None)
        }
        (None, Some(csv)) => {
            let bytes = ctx.read_input(csv).await?;
            let hash = content_hash(&bytes);
            (ingest::csv(&bytes, &p).map_err(ml)?, csv.clone(), Some(hash))
        }
        _ => return Err(StepError::permanent("ingest takes exactly one of `dataset` and `csv`")),
    };
    // The task and why, in the job's events (`warren status` shows it).
    let task = if loaded.task == warren_schemas::Task::Classification { "classification" } else { "regression" };
    // And each column's kind as inferred (or as `types` said), so a person can check it.
    let kinds: std::collections::BTreeMap<&str, String> = loaded
        .columns
        .iter()
        .map(|c| {
            let kind = c.kind().to_string();
            (c.name.as_str(), c.note.as_ref().map_or_else(|| kind.clone(), |n| format!("{kind}: {n}")))
        })
        .collect();
    let report = serde_json::json!({
        "task": task,
        "because": loaded.task_reason,
        "target": loaded.target,
        "rows": loaded.table.rows(),
        "columns": kinds,
    });
    if let Ok(detail) = warren::envelope::to_msgpack_value(&report) {
        ctx.report(detail);
    }
    let bytes = loaded.table.to_ipc().map_err(ml)?;
    let artifact = put(&ctx, &format!("dataset-{}.arrow", short(&content_hash(&bytes))), bytes).await?;
    Ok(Dataset {
        artifact,
        source,
        source_hash,
        rows: loaded.table.rows() as u64,
        columns: loaded.columns,
        target: loaded.target,
        task: loaded.task,
        ingest: p.csv.is_some().then(|| p.clone()),
    })
}

/// The first 12 hex digits of a `sha256:` hash, to put content into artifact keys.
pub(crate) fn short(hash: &str) -> &str {
    let hex = hash.trim_start_matches("sha256:");
    &hex[..hex.len().min(12)]
}

/// Reads a CSV source again, if its file changed since `dataset` was ingested from it.
pub(crate) async fn reread_if_changed(
    ctx: &Context,
    dataset: &Dataset,
) -> Result<Option<(Dataset, ingest::Loaded)>, StepError> {
    let Some(old_hash) = &dataset.source_hash else { return Ok(None) };
    // Read as ingest read it (the store, or the data root); a source gone since is no change.
    let Ok(bytes) = ctx.read_input(&dataset.source).await else { return Ok(None) };
    let hash = content_hash(&bytes);
    if &hash == old_hash {
        return Ok(None);
    }
    // Read with the options of the first read (the delimiter sniffed again unless one was
    // given), for the same target and task.
    let p = IngestParams {
        csv: Some(dataset.source.clone()),
        target: Some(dataset.target.clone()),
        classification: None,
        task: Some(
            if dataset.task == warren_schemas::Task::Classification { "classification" } else { "regression" }.into(),
        ),
        dataset: None,
        ..dataset.ingest.clone().unwrap_or_default()
    };
    let loaded = ingest::csv(&bytes, &p).map_err(ml)?;
    let ipc = loaded.table.to_ipc().map_err(ml)?;
    let artifact = put(ctx, &format!("dataset-{}.arrow", short(&content_hash(&ipc))), ipc).await?;
    let fresh = Dataset {
        artifact,
        source: dataset.source.clone(),
        source_hash: Some(hash),
        rows: loaded.table.rows() as u64,
        columns: loaded.columns.clone(),
        target: loaded.target.clone(),
        task: loaded.task,
        ingest: Some(p),
    };
    Ok(Some((fresh, loaded)))
}
