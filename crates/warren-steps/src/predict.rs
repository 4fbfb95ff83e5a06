//! `predict`: serves a registered model, over RPC (rows in, labels or values out) or as a batch
//! over a dataset artifact. The version (a number or an alias, `latest` by default) is resolved
//! on every request, so a newly promoted version answers without a restart; loaded models are
//! kept per version.
//!
//! A model trained with preprocessing takes rows as the raw table had them: text categories,
//! numbers, gaps (`nil`), filled and encoded as the fitted preprocessing says; an unseen
//! category is answered (or refused, with `unknown = "error"`). Every request is checked against
//! the model's signature. A bad RPC request gets an error reply whose message starts with its
//! kind: `no_model:`, `unknown_version:`, `wrong_shape:` (a column missing, text where a number
//! belongs; naming the columns the model takes). A batch scores the rows it can and lists the
//! others with why.
//!
//! An ONNX model (imported, or registered by a step that trained it elsewhere) is served by
//! tract with the signature recorded at import: the same raw rows, the same checks, and its
//! class probabilities in the answer.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use warren::{Context, StepError};
use warren_ml::{
    model::{Predicted, SavedModel},
    onnx::OnnxModel,
    table::{Table, Values},
};
use warren_schemas::{
    Cell, PredictRequest, Predictions, RefusedRow, Task,
    models::{Entry, ModelFormat, ModelRegistry, RegistryError},
};

use crate::{fetch, ml, put, register::reg};

/// A registered model, ready to answer.
#[derive(Debug)]
pub enum Served {
    /// Warren's own.
    Warren(SavedModel),
    /// An ONNX graph run by tract.
    Onnx(OnnxModel),
}

type Loaded = Arc<Served>;

/// Reads a registered version's artifact as its format says.
fn load(entry: &Entry, bytes: &[u8]) -> Result<Served, StepError> {
    match entry.format {
        ModelFormat::Warren => {
            let model = SavedModel::from_bytes(bytes).map_err(ml)?;
            if let Some(sig) = &entry.signature
                && (sig.features != model.inputs() || sig.classes != model.classes)
            {
                return Err(StepError::permanent(format!(
                    "model `{}` version {} does not match its registry signature (features {:?}, classes {:?})",
                    entry.name, entry.version, sig.features, sig.classes
                )));
            }
            Ok(Served::Warren(model))
        }
        ModelFormat::Onnx => {
            let (Some(onnx), Some(sig)) = (&entry.onnx, &entry.signature) else {
                return Err(StepError::permanent(format!(
                    "model `{}` version {} is ONNX but its registry entry has no signature",
                    entry.name, entry.version
                )));
            };
            Ok(Served::Onnx(OnnxModel::load(bytes, onnx, sig.task, &sig.classes).map_err(ml)?))
        }
    }
}

fn loaded() -> &'static Mutex<HashMap<(String, u32), Loaded>> {
    static MODELS: OnceLock<Mutex<HashMap<(String, u32), Loaded>>> = OnceLock::new();
    MODELS.get_or_init(Default::default)
}

/// Resolves `version` (a number, or an alias; `latest` by default) of `name`.
async fn resolve(ctx: &Context, name: &str, version: Option<&str>) -> Result<(u32, Loaded), StepError> {
    let store = ctx.store()?;
    let registry = ModelRegistry::new(store, ctx.registry_scope(), name);
    let version = match registry.resolve(version.unwrap_or("latest")).await {
        Ok(v) => v,
        Err(RegistryError::NotFound(m)) if m.starts_with("no model") => {
            return Err(StepError::permanent(format!("no_model: {m}")));
        }
        Err(RegistryError::NotFound(m)) => return Err(StepError::permanent(format!("unknown_version: {m}"))),
        Err(e) => return Err(reg(e)),
    };
    if let Some(m) = loaded().lock().ok().and_then(|m| m.get(&(name.to_owned(), version)).cloned()) {
        return Ok((version, m));
    }
    let entry = match registry.entry(version).await {
        Ok(e) => e,
        Err(RegistryError::NotFound(m)) => return Err(StepError::permanent(format!("unknown_version: {m}"))),
        Err(e) => return Err(reg(e)),
    };
    let bytes = fetch(ctx, &entry.model).await?;
    let model = crate::blocking(move || Ok(load(&entry, &bytes))).await??;
    let model = Arc::new(model);
    if let Ok(mut m) = loaded().lock() {
        m.insert((name.to_owned(), version), model.clone());
    }
    Ok((version, model))
}

fn wrong_shape(model: &SavedModel, what: impl std::fmt::Display) -> StepError {
    let inputs = model.inputs();
    let typed: Vec<String> = inputs.iter().zip(model.input_types()).map(|(n, t)| format!("{n} ({t})")).collect();
    StepError::permanent(format!("wrong_shape: {what}; the model takes {}: {}", inputs.len(), typed.join(", ")))
}

/// A request's rows for a model from before preprocessing: numbers in its feature order (or
/// `columns`'s), refusing what does not fit.
fn numeric_rows(model: &SavedModel, req: &PredictRequest) -> Result<Vec<Vec<f64>>, StepError> {
    let n = model.feature_names.len();
    let order: Vec<usize> = match &req.columns {
        None => (0..n).collect(),
        Some(cols) => {
            if let Some(c) = cols.iter().find(|c| !model.feature_names.contains(c)) {
                return Err(wrong_shape(model, format!("column `{c}` is not a feature of the model")));
            }
            let mut order = Vec::with_capacity(n);
            for f in &model.feature_names {
                match cols.iter().position(|c| c == f) {
                    Some(i) => order.push(i),
                    None => return Err(wrong_shape(model, format!("column `{f}` is missing"))),
                }
            }
            order
        }
    };
    let width = req.columns.as_ref().map_or(n, Vec::len);
    let mut rows = Vec::with_capacity(req.rows.len());
    for (i, r) in req.rows.iter().enumerate() {
        if r.len() != width {
            return Err(wrong_shape(model, format!("row {} has {} values", i + 1, r.len())));
        }
        let mut row = Vec::with_capacity(n);
        for (k, &j) in order.iter().enumerate() {
            match &r[j] {
                Some(Cell::Number(x)) if x.is_finite() => row.push(*x),
                Some(Cell::Text(t)) if t.parse::<f64>().is_ok_and(f64::is_finite) => row.push(t.parse().unwrap_or(0.0)),
                _ => {
                    return Err(wrong_shape(
                        model,
                        format!("row {}, `{}` is not a finite number", i + 1, model.feature_names[k]),
                    ));
                }
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Scores a dataset: the rows the model cannot read are listed with why, the rest predicted.
fn batch(model: &SavedModel, table: &Table) -> Result<(Predicted, Vec<RefusedRow>, usize), StepError> {
    let total = table.rows();
    if model.preprocessor.is_some() {
        let (predicted, refused) = model.predict_table(table).map_err(|e| wrong_shape(model, e))?;
        let refused = refused.into_iter().map(|(i, reason)| RefusedRow { row: i as u64 + 1, reason }).collect();
        return Ok((predicted, refused, total));
    }
    let mut rows = vec![Vec::with_capacity(model.feature_names.len()); total];
    for name in &model.feature_names {
        let Some(Values::F64(col)) = table.column(name) else {
            return Err(wrong_shape(model, format!("the dataset has no numeric column `{name}`")));
        };
        for (row, v) in rows.iter_mut().zip(col) {
            row.push(v.unwrap_or(f64::NAN));
        }
    }
    let mut refused = Vec::new();
    let mut good = Vec::with_capacity(total);
    for (i, row) in rows.into_iter().enumerate() {
        match row.iter().position(|v| !v.is_finite()) {
            Some(j) => refused.push(RefusedRow {
                row: i as u64 + 1,
                reason: format!("`{}` is missing or not a finite number", model.feature_names[j]),
            }),
            None => good.push(row),
        }
    }
    Ok((model.predict_rows(&good).map_err(ml)?, refused, total))
}

/// Scores the rows of an RPC request: raw values through the model's preprocessing (a gap is
/// filled, an unseen category answered as the preprocessing says), or numbers for older models.
fn rpc(model: &SavedModel, req: &PredictRequest) -> Result<Predicted, StepError> {
    if model.preprocessor.is_some() {
        return model.predict_cells(req.columns.as_deref(), &req.rows).map_err(|e| wrong_shape(model, e));
    }
    model.predict_rows(&numeric_rows(model, req)?).map_err(ml)
}

/// What a model answered: labels or values, refused rows, and class probabilities.
struct Answer {
    labels: Vec<String>,
    values: Vec<f64>,
    refused: Vec<RefusedRow>,
    total: usize,
    probabilities: Vec<Vec<f64>>,
    classes: Vec<String>,
}

fn answer_native(model: &SavedModel, req: &PredictRequest, table: Option<&Table>) -> Result<Answer, StepError> {
    let (predicted, refused, total) = match table {
        Some(t) => batch(model, t)?,
        None => (rpc(model, req)?, Vec::new(), req.rows.len()),
    };
    let (labels, values) = match predicted {
        Predicted::Classes(c) => (model.labels(&c), Vec::new()),
        Predicted::Values(v) => (Vec::new(), v),
    };
    Ok(Answer { labels, values, refused, total, probabilities: Vec::new(), classes: Vec::new() })
}

fn onnx_shape(model: &OnnxModel, what: impl std::fmt::Display) -> StepError {
    let s = &model.signature;
    let typed: Vec<String> = s.columns().iter().zip(s.types()).map(|(n, t)| format!("{n} ({t})")).collect();
    StepError::permanent(format!("wrong_shape: {what}; the model takes {}: {}", typed.len(), typed.join(", ")))
}

fn answer_onnx(model: &OnnxModel, req: &PredictRequest, table: Option<&Table>) -> Result<Answer, StepError> {
    let (out, refused, total) = match table {
        Some(t) => {
            let (out, refused) = model.predict_table(t).map_err(|e| onnx_shape(model, e))?;
            let refused = refused.into_iter().map(|(i, reason)| RefusedRow { row: i as u64 + 1, reason }).collect();
            (out, refused, t.rows())
        }
        None => {
            if let Some(cols) = &req.columns {
                let known = model.columns();
                if let Some(c) = cols.iter().find(|c| !known.contains(c)) {
                    return Err(onnx_shape(model, format!("column `{c}` is not a column of the model")));
                }
                if let Some(c) = known.iter().find(|c| !cols.contains(c)) {
                    return Err(onnx_shape(model, format!("column `{c}` is missing")));
                }
            }
            let out = model.predict_cells(req.columns.as_deref(), &req.rows).map_err(|e| onnx_shape(model, e))?;
            (out, Vec::new(), req.rows.len())
        }
    };
    let (labels, values) = match out.predicted {
        Predicted::Classes(c) => {
            (c.iter().map(|&i| model.classes.get(i).cloned().unwrap_or_default()).collect(), Vec::new())
        }
        Predicted::Values(v) => (Vec::new(), v),
    };
    let batch = table.is_some();
    let classes = if model.task == Task::Classification && !batch { model.classes.clone() } else { Vec::new() };
    let probabilities = if batch { Vec::new() } else { out.scores };
    Ok(Answer { labels, values, refused, total, probabilities, classes })
}

/// Answers a prediction request.
pub async fn handle(ctx: Context, req: PredictRequest) -> Result<Predictions, StepError> {
    let (version, model) = resolve(&ctx, &req.model, req.version.as_deref()).await?;
    let table = match &req.dataset {
        Some(r) => Some(Table::from_ipc(&fetch(&ctx, r).await?).map_err(ml)?),
        None => None,
    };
    let batch = table.is_some();
    let Answer { labels, values, refused, total, probabilities, classes } = match model.as_ref() {
        Served::Warren(m) => answer_native(m, &req, table.as_ref())?,
        Served::Onnx(m) => answer_onnx(m, &req, table.as_ref())?,
    };
    let scored = (labels.len() + values.len()) as u64;
    let artifact = if batch {
        // One prediction per dataset row, empty where the row was refused.
        let skipped: std::collections::HashSet<u64> = refused.iter().map(|r| r.row).collect();
        let (mut l, mut v) = (labels.iter(), values.iter());
        let mut labels_out = Vec::with_capacity(total);
        let mut values_out = Vec::with_capacity(total);
        for row in 1..=total as u64 {
            let take = !skipped.contains(&row);
            labels_out.push(if take { l.next().cloned() } else { None });
            values_out.push(if take { v.next().copied() } else { None });
        }
        let column = if labels.is_empty() { Values::F64(values_out) } else { Values::Str(labels_out) };
        let table = Table { names: vec!["prediction".into()], columns: vec![column] };
        let name = format!("predictions-{}-v{version}.arrow", req.model);
        let stored = put(&ctx, &name, table.to_ipc().map_err(ml)?).await?;
        ctx.report(rmpv::Value::Map(vec![
            ("scored".into(), scored.into()),
            ("refused".into(), (refused.len() as u64).into()),
            ("version".into(), version.into()),
        ]));
        Some(stored)
    } else {
        None
    };
    Ok(Predictions { model: req.model, version, labels, values, artifact, scored, refused, probabilities, classes })
}
