//! `warren models import`: an ONNX model trained anywhere (scikit-learn through skl2onnx,
//! PyTorch, XGBoost) into the registry, checked by running it, scored on held-out rows when
//! given, and recorded like a trained model, so promotion, aliases and `predict` treat it like
//! one.

use std::{collections::BTreeMap, path::PathBuf};

use clap::Args;
use warren_ml::{
    metrics,
    onnx::{ImportOptions, OnnxModel},
};
use warren_schemas::{
    Task,
    models::{Comparison, Entry, ModelFormat, Promote, Signature},
};

use crate::{Fail, models::Models};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The ONNX file.
    file: PathBuf,
    /// The model's name in the registry (a new version of it when it exists).
    #[arg(long)]
    name: String,
    /// Held-out rows to score it on (CSV with a header and the target column): its metrics are
    /// what promotion compares.
    #[arg(long, value_name = "CSV", requires = "target")]
    test: Option<PathBuf>,
    /// The target column of `--test`.
    #[arg(long, requires = "test")]
    target: Option<String>,
    /// Names for the columns of inputs that take several (an input of shape [N, 4], say),
    /// comma-separated, in order.
    #[arg(long, value_name = "A,B,...")]
    columns: Option<String>,
    /// Class labels in score order, for a classifier whose graph names none (a network that
    /// outputs only scores).
    #[arg(long, value_name = "A,B,...")]
    classes: Option<String>,
    /// The metric promotion compares on (`accuracy` for classifiers, `rmse` for regressors).
    #[arg(long)]
    metric: Option<String>,
    /// The alias to move to it when it beats the alias's model (as the register step does);
    /// `none` to move none.
    #[arg(long, default_value = "latest")]
    alias: String,
    /// Why (recorded with the version).
    #[arg(long)]
    reason: Option<String>,
}

fn list(text: &Option<String>) -> Option<Vec<String>> {
    text.as_ref().map(|t| t.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
}

/// `warren models import FILE.onnx --name N`.
pub async fn import(store: &Models, a: &ImportArgs, json: bool) -> Result<(), Fail> {
    let shown = a.file.display().to_string();
    let bytes = std::fs::read(&a.file).map_err(|e| Fail::usage(format!("{shown}: {e}")))?;
    let options = ImportOptions { columns: list(&a.columns), classes: list(&a.classes) };
    let checked = bytes.clone();
    let model = tokio::task::spawn_blocking(move || OnnxModel::import(&checked, &options))
        .await
        .map_err(|e| Fail::from(e.to_string()))?
        .map_err(|e| Fail::usage(format!("{shown}: {e}; nothing registered")))?;
    let (metrics, test_rows, test_hash) = match (&a.test, &a.target) {
        (Some(path), Some(target)) => {
            let csv = std::fs::read(path).map_err(|e| Fail::usage(format!("--test {}: {e}", path.display())))?;
            let test = |e: warren_ml::MlError| Fail::usage(format!("--test {}: {e}", path.display()));
            let table = warren_ml::onnx::test_rows(&csv, target).map_err(test)?;
            let (m, _) = model.score(&table, target).map_err(test)?;
            (m, table.rows(), warren::artifacts::content_hash(&csv))
        }
        _ => (BTreeMap::new(), 0, String::new()),
    };
    let metric = a
        .metric
        .clone()
        .unwrap_or_else(|| if model.task == Task::Classification { "accuracy".into() } else { "rmse".into() });
    if !metrics.is_empty() && metrics::score(&metrics, &metric).is_err() {
        return Err(Fail::usage(format!(
            "--metric {metric}: the test rows give {}",
            metrics.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let registry = store.registry(&a.name);
    let artifact = registry.put_import(bytes, "onnx").await.map_err(crate::models::fail)?;
    let signature = model.signature.clone();
    let who = std::env::var("USER").unwrap_or_else(|_| "an operator".into());
    let mut entry = Entry {
        name: a.name.clone(),
        version: 0,
        model: artifact,
        metrics: metrics.clone(),
        metric: metric.clone(),
        candidate: serde_json::json!({
            "algorithm": "onnx",
            "producer": signature.producer,
            "file": a.file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        }),
        signature: Some(Signature {
            features: signature.columns(),
            types: signature.types(),
            task: model.task,
            classes: model.classes.clone(),
        }),
        dataset_hash: test_hash,
        seed: 0,
        job_id: String::new(),
        pipeline: String::new(),
        code_version: signature.producer.clone(),
        registered_by: match &a.reason {
            Some(r) => format!("{who} with warren models import: {r}"),
            None => format!("{who} with warren models import"),
        },
        registered_at_ms: warren::envelope::now_ms(),
        format: ModelFormat::Onnx,
        onnx: Some(signature.clone()),
    };
    let version = registry.add(&mut entry).await.map_err(crate::models::fail)?;
    let fail = crate::models::fail;
    let decision = if a.alias == "none" {
        None
    } else if metrics.is_empty() {
        // Nothing to compare on: the alias moves only if it points nowhere yet.
        let current = registry.alias(&a.alias).await.map_err(fail)?;
        let promoted = current.is_none()
            && registry
                .try_move(&a.alias, None, version, "import", &entry.registered_by, None)
                .await
                .map_err(fail)?
                .is_some();
        let reason = if promoted {
            format!("`{}` had no version", a.alias)
        } else {
            "no --test rows to compare on: `warren models promote --force` moves it".to_owned()
        };
        Some(Comparison {
            alias: a.alias.clone(),
            metric: metric.clone(),
            score: f64::NAN,
            against: current.map(|m| m.version),
            against_score: None,
            margin: 0.0,
            promoted,
            reason,
        })
    } else {
        let how = Promote { metric: &metric, margin: 0.0, force: false, action: "import", by: &entry.registered_by };
        let (c, _) = registry.promote(&a.alias, version, &how).await.map_err(fail)?;
        registry.decide(version, &c).await.map_err(fail)?;
        Some(c)
    };
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "model": a.name, "version": version, "format": "onnx", "task": model.task,
                "columns": signature.columns(), "types": signature.types(), "classes": model.classes,
                "metrics": metrics, "metric": metric, "test_rows": test_rows, "producer": signature.producer,
                "artifact": entry.model.uri, "decision": decision,
            })
        );
        return Ok(());
    }
    let task = match model.task {
        Task::Classification => format!("classifier of {} classes ({})", model.classes.len(), model.classes.join(", ")),
        Task::Regression => "regressor".to_owned(),
    };
    outln!("imported {shown} as {} version {version}: an ONNX {task} from {}", a.name, signature.producer);
    let typed: Vec<String> =
        signature.columns().iter().zip(signature.types()).map(|(c, t)| format!("{c} ({t})")).collect();
    outln!("  takes        {}", typed.join(", "));
    if metrics.is_empty() {
        outln!("  metrics      none (no --test rows): promotion over a scored version needs --force");
    } else {
        let m: Vec<String> = metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        outln!("  metrics      {} on {test_rows} test rows (compared on {metric})", m.join(", "));
    }
    match &decision {
        Some(c) if c.promoted => outln!("  {:<12} now points here: {}", c.alias, c.reason),
        Some(c) => outln!("  {:<12} stays where it was: {}", c.alias, c.reason),
        None => {}
    }
    let force = if metrics.is_empty() { " --force" } else { "" };
    outln!("  next         warren models promote {} {version} --to production{force}", a.name);
    Ok(())
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Model name.
    model: String,
    /// A version number or an alias.
    #[arg(value_name = "VERSION")]
    at: String,
    /// Where to write the ONNX file.
    #[arg(short, long, value_name = "FILE.onnx")]
    output: PathBuf,
}

/// `warren models export NAME VERSION -o model.onnx`: Warren's own models as ONNX graphs with
/// their preprocessing; an imported ONNX model as the file it came from.
pub async fn export(store: &Models, a: &ExportArgs, json: bool) -> Result<(), Fail> {
    let registry = store.registry(&a.model);
    let fail = crate::models::fail;
    let version = registry.resolve(&a.at).await.map_err(fail)?;
    let entry = registry.entry(version).await.map_err(fail)?;
    let bytes = store.fetch(&entry.model).await?;
    // What the file takes: the model's raw columns and their kinds, its classes.
    let sig = entry.signature.clone();
    let (graph, how, columns) = match entry.format {
        ModelFormat::Onnx => {
            let columns = sig.as_ref().map(|s| (s.features.clone(), s.types.clone(), s.classes.clone()));
            (bytes, "the ONNX file it was registered with", columns)
        }
        ModelFormat::Warren => {
            let (graph, columns) = tokio::task::spawn_blocking(move || {
                let model = warren_ml::model::SavedModel::from_bytes(&bytes)?;
                let graph = warren_ml::onnx::export::export(&model)?;
                Ok::<_, warren_ml::MlError>((graph, (model.inputs(), model.input_types(), model.classes.clone())))
            })
            .await
            .map_err(|e| Fail::from(e.to_string()))?
            .map_err(|e| Fail::from(format!("{} version {version} cannot be exported: {e}", a.model)))?;
            (graph, "its preprocessing and model as one graph", Some(columns))
        }
    };
    let size = graph.len();
    std::fs::write(&a.output, graph).map_err(|e| Fail::usage(format!("-o {}: {e}", a.output.display())))?;
    let (inputs, types, classes) = columns.unwrap_or_default();
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "model": a.model, "version": version, "file": a.output, "bytes": size, "format": entry.format,
                "inputs": inputs, "types": types, "classes": classes,
            })
        );
        return Ok(());
    }
    outln!("wrote {} ({size} bytes): {} version {version}, {how}", a.output.display(), a.model);
    if entry.format == ModelFormat::Warren {
        let typed: Vec<String> = inputs
            .iter()
            .zip(&types)
            .map(|(f, t)| {
                format!("{f} ({})", if t == "numeric" || t == "f64" { "double [N,1]" } else { "string [N,1]" })
            })
            .collect();
        outln!("  inputs       {}", typed.join(", "));
        outln!(
            "  outputs      {}",
            if classes.is_empty() { "variable [N,1]" } else { "label [N], probabilities [N,classes]" }
        );
        outln!("  gaps         NaN in a numeric input, the empty string in a text one");
    }
    Ok(())
}
