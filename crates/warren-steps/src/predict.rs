//! `predict`: serves a registered model, over RPC (rows in, labels or values out) or as a batch
//! over a dataset artifact. The version alias is resolved on every request, so a newly
//! registered version answers without a restart; loaded models are kept per version.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use warren::{Context, StepError};
use warren_ml::{
    model::{Predicted, SavedModel},
    table::{Table, Values},
};
use warren_schemas::{PredictRequest, Predictions};

use crate::{art, fetch, ml, put, register};

type Loaded = Arc<SavedModel>;

fn loaded() -> &'static Mutex<HashMap<(String, u32), Loaded>> {
    static MODELS: OnceLock<Mutex<HashMap<(String, u32), Loaded>>> = OnceLock::new();
    MODELS.get_or_init(Default::default)
}

/// Resolves `version` (a number, or an alias; `latest` by default) of `name`.
async fn resolve(ctx: &Context, name: &str, version: Option<&str>) -> Result<(u32, Loaded), StepError> {
    let store = ctx.store()?;
    let version = match version.unwrap_or("latest") {
        "latest" => {
            let bytes = store
                .get_opt(&register::latest_key(name))
                .await
                .map_err(art)?
                .ok_or_else(|| StepError::permanent(format!("no model `{name}` is registered")))?;
            serde_json::from_slice::<register::Alias>(&bytes).map_err(|e| StepError::permanent(e.to_string()))?.version
        }
        v => v.parse().map_err(|_| StepError::permanent(format!("version `{v}` is neither a number nor `latest`")))?,
    };
    if let Some(m) = loaded().lock().ok().and_then(|m| m.get(&(name.to_owned(), version)).cloned()) {
        return Ok((version, m));
    }
    let entry_bytes = store
        .get_opt(&register::version_key(name, version))
        .await
        .map_err(art)?
        .ok_or_else(|| StepError::permanent(format!("model `{name}` has no version {version}")))?;
    let entry: register::Entry =
        serde_json::from_slice(&entry_bytes).map_err(|e| StepError::permanent(e.to_string()))?;
    let model = Arc::new(SavedModel::from_bytes(&fetch(ctx, &entry.model).await?).map_err(ml)?);
    if let Ok(mut m) = loaded().lock() {
        m.insert((name.to_owned(), version), model.clone());
    }
    Ok((version, model))
}

/// Answers a prediction request.
pub async fn handle(ctx: Context, req: PredictRequest) -> Result<Predictions, StepError> {
    let (version, model) = resolve(&ctx, &req.model, req.version.as_deref()).await?;
    let (rows, batch) = match &req.dataset {
        Some(r) => {
            let table = Table::from_ipc(&fetch(&ctx, r).await?).map_err(ml)?;
            let mut rows = vec![Vec::with_capacity(model.feature_names.len()); table.rows()];
            for name in &model.feature_names {
                let Some(Values::F64(col)) = table.column(name) else {
                    return Err(StepError::permanent(format!("dataset has no numeric column `{name}`")));
                };
                for (row, v) in rows.iter_mut().zip(col) {
                    row.push(v.unwrap_or(f64::NAN));
                }
            }
            (rows, true)
        }
        None => (req.rows.clone(), false),
    };
    let (labels, values) = match model.predict_rows(&rows).map_err(ml)? {
        Predicted::Classes(c) => (model.labels(&c), Vec::new()),
        Predicted::Values(v) => (Vec::new(), v),
    };
    let artifact = if batch {
        let column = if labels.is_empty() {
            Values::F64(values.iter().map(|v| Some(*v)).collect())
        } else {
            Values::Str(labels.iter().map(|l| Some(l.clone())).collect())
        };
        let table = Table { names: vec!["prediction".into()], columns: vec![column] };
        Some(put(&ctx, &format!("predictions-{}-v{version}.arrow", req.model), table.to_ipc().map_err(ml)?).await?)
    } else {
        None
    };
    Ok(Predictions { model: req.model, version, labels, values, artifact })
}
