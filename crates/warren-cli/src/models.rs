//! `warren models`: the model registry in the artifact store — list, show, promote, rollback.
//!
//! Promotion and rollback are alias moves (see `warren_schemas::models`): each is a new move
//! file created only if nobody moved the alias since it was read, so two operators (or an
//! operator and a register worker) never overwrite each other; the loser is told and nothing
//! changes.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use warren::{Config, artifacts::ArtifactStore};
use warren_schemas::models::{AliasMove, Entry, ModelRegistry, Promote, RegistryError, score};

use crate::{Fail, Outcome, table};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Registered models, or one model's versions with their metrics and aliases.
    #[command(after_help = "Example:\n  warren models list\n  warren models list iris")]
    List {
        /// A model name: list its versions.
        model: Option<String>,
    },
    /// One version: metrics, signature, lineage (data hash, parameters, code, job) and the
    /// promotion decision.
    #[command(after_help = "Example:\n  warren models show iris 3\n  warren models show iris production")]
    Show {
        /// Model name.
        model: String,
        /// A version number or an alias (`latest` when absent).
        #[arg(value_name = "VERSION")]
        at: Option<String>,
    },
    /// Point an alias at a version; refused unless it beats the alias's model (`--force` to
    /// move anyway, say to pin a known-good version).
    #[command(
        after_help = "Example:\n  warren models promote iris 3 --to production --reason \"passed the shadow test\""
    )]
    Promote(PromoteArgs),
    /// Register an ONNX model trained anywhere (scikit-learn through skl2onnx, PyTorch, ...):
    /// its columns and classes read from the graph, checked by running it, scored on `--test`.
    #[command(
        after_help = "Example:\n  warren models import churn.onnx --name churn --test holdout.csv --target churned\n\n\
                      scikit-learn: skl2onnx.to_onnx(pipeline, X[:1], options={'zipmap': False})"
    )]
    Import(crate::onnx::ImportArgs),
    /// Write a version as an ONNX file (Warren's models with their preprocessing as part of the
    /// graph), to serve it in onnxruntime, Triton or a browser.
    #[command(after_help = "Example:\n  warren models export iris production -o iris.onnx")]
    Export(crate::onnx::ExportArgs),
    /// Point an alias back at the version it pointed at before its last move.
    #[command(after_help = "Example:\n  warren models rollback iris --alias production --reason \"bad predictions\"")]
    Rollback(RollbackArgs),
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// Model name.
    model: String,
    /// A version number or an alias (`staging` to promote what staging holds).
    #[arg(value_name = "VERSION")]
    at: String,
    /// The alias to move.
    #[arg(long, default_value = "production")]
    to: String,
    /// The metric to compare on (the one the version was selected on when absent).
    #[arg(long)]
    metric: Option<String>,
    /// How much better it must score.
    #[arg(long, default_value_t = 0.0)]
    margin: f64,
    /// Move even if it does not score better.
    #[arg(long)]
    force: bool,
    /// Why (recorded in the move).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Model name.
    model: String,
    /// The alias to move back.
    #[arg(long, default_value = "production")]
    alias: String,
    /// Why (recorded in the move).
    #[arg(long)]
    reason: Option<String>,
}

/// The model registry of a deployment: its artifact store and its registry namespace.
#[derive(Debug)]
pub struct Models {
    store: ArtifactStore,
    scope: String,
}

impl Models {
    /// The registry `config` names: its store, and `registry_namespace` else `namespace`.
    pub fn open(config: &Config) -> Result<Self, Fail> {
        let store = ArtifactStore::open(&config.artifacts).map_err(|e| Fail::usage(format!("--artifacts: {e}")))?;
        Ok(Self { store, scope: config.registry_scope().to_owned() })
    }

    /// One model's registry.
    pub fn registry(&self, name: &str) -> ModelRegistry<'_> {
        ModelRegistry::new(&self.store, &self.scope, name)
    }

    /// The bytes of a model artifact.
    pub async fn fetch(&self, artifact: &warren_schemas::ArtifactRef) -> Result<Vec<u8>, Fail> {
        self.store.fetch(&artifact.uri, Some(&artifact.hash)).await.map_err(|e| Fail::from(e.to_string()))
    }

    /// Every registered model's name.
    pub async fn names(&self) -> Result<Vec<String>, Fail> {
        ModelRegistry::names(&self.store, &self.scope).await.map_err(fail)
    }

    /// Where it is, as people read it (`./artifacts, namespace iris-team`).
    pub fn shown(&self) -> String {
        format!("{} (registry namespace {})", self.store.base(), self.scope)
    }
}

pub(crate) fn fail(e: RegistryError) -> Fail {
    match e {
        RegistryError::NotFound(m) | RegistryError::Refused(m) => Fail::usage(m),
        other => Fail::from(other),
    }
}

fn operator(reason: Option<&str>) -> String {
    let who = std::env::var("USER").unwrap_or_else(|_| "an operator".into());
    match reason {
        Some(r) => format!("{who} with warren models: {r}"),
        None => format!("{who} with warren models"),
    }
}

fn when(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

fn metrics_text(e: &Entry) -> String {
    e.metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join(", ")
}

fn aliases_of(aliases: &std::collections::BTreeMap<String, AliasMove>, v: u32) -> String {
    aliases.iter().filter(|(_, m)| m.version == v).map(|(a, _)| a.as_str()).collect::<Vec<_>>().join(", ")
}

pub async fn run(config: &Config, cmd: ModelsCommand, json: bool) -> Outcome {
    let store = Models::open(config)?;
    match cmd {
        ModelsCommand::List { model: None } => list_models(&store, json).await?,
        ModelsCommand::List { model: Some(name) } => list_versions(&store, &name, json).await?,
        ModelsCommand::Show { model, at } => show(&store, &model, at.as_deref(), json).await?,
        ModelsCommand::Promote(a) => promote(&store, &a, json).await?,
        ModelsCommand::Rollback(a) => rollback(&store, &a, json).await?,
        ModelsCommand::Import(a) => crate::onnx::import(&store, &a, json).await?,
        ModelsCommand::Export(a) => crate::onnx::export(&store, &a, json).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Every registered model with its version count and aliases.
async fn list_models(store: &Models, json: bool) -> Result<(), Fail> {
    let names = store.names().await?;
    let mut rows = Vec::new();
    let mut out = Vec::new();
    for n in &names {
        let r = store.registry(n);
        let versions = r.versions().await.map_err(fail)?;
        let aliases = r.aliases().await.map_err(fail)?;
        let alias_text = aliases.iter().map(|(a, m)| format!("{a}→v{}", m.version)).collect::<Vec<_>>().join(", ");
        rows.push(vec![n.clone(), versions.len().to_string(), alias_text]);
        out.push(serde_json::json!({
            "model": n,
            "versions": versions.len(),
            "aliases": aliases.iter().map(|(a, m)| (a.clone(), m.version)).collect::<std::collections::BTreeMap<_, _>>(),
        }));
    }
    if json {
        outln!("{}", serde_json::Value::Array(out));
    } else if rows.is_empty() {
        outln!("no models are registered in {}", store.shown());
    } else {
        crate::print_raw(&table(&["MODEL", "VERSIONS", "ALIASES"], rows, &[1]));
    }
    Ok(())
}

/// One model's versions with metrics, aliases and promotion decisions.
async fn list_versions(store: &Models, name: &str, json: bool) -> Result<(), Fail> {
    let r = store.registry(name);
    let versions = r.versions().await.map_err(fail)?;
    if versions.is_empty() {
        return Err(Fail::usage(format!("no model `{name}` is registered in {}", store.shown())));
    }
    let aliases = r.aliases().await.map_err(fail)?;
    if json {
        let out: Vec<_> = versions
            .iter()
            .map(|e| {
                serde_json::json!({
                    "version": e.version, "metrics": e.metrics, "metric": e.metric,
                    "candidate": e.candidate, "job": e.job_id, "registered_at_ms": e.registered_at_ms,
                    "aliases": aliases.iter().filter(|(_, m)| m.version == e.version).map(|(a, _)| a).collect::<Vec<_>>(),
                })
            })
            .collect();
        outln!("{}", serde_json::Value::Array(out));
        return Ok(());
    }
    let mut rows = Vec::new();
    for e in &versions {
        let decision = r.decision(e.version).await.map_err(fail)?;
        rows.push(vec![
            e.version.to_string(),
            aliases_of(&aliases, e.version),
            metrics_text(e),
            e.candidate["algorithm"].as_str().unwrap_or("?").to_owned(),
            when(e.registered_at_ms),
            decision.map_or(String::new(), |d| if d.promoted { "promoted".into() } else { "kept out".into() }),
        ]);
    }
    crate::print_raw(&table(&["VERSION", "ALIASES", "METRICS", "ALGORITHM", "REGISTERED", "DECISION"], rows, &[0]));
    Ok(())
}

/// One version: metrics, signature, lineage, decision.
async fn show(store: &Models, model: &str, at: Option<&str>, json: bool) -> Result<(), Fail> {
    let r = store.registry(model);
    let v = r.resolve(at.unwrap_or("latest")).await.map_err(fail)?;
    let e = r.entry(v).await.map_err(fail)?;
    let decision = r.decision(v).await.map_err(fail)?;
    let aliases = r.aliases().await.map_err(fail)?;
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "model": e.name, "version": e.version, "aliases": aliases_of(&aliases, v),
                "metrics": e.metrics, "metric": e.metric, "candidate": e.candidate,
                "signature": e.signature, "dataset_hash": e.dataset_hash, "seed": e.seed,
                "job": e.job_id, "pipeline": e.pipeline, "code_version": e.code_version,
                "registered_by": e.registered_by, "registered_at_ms": e.registered_at_ms,
                "model_artifact": e.model.uri, "decision": decision, "format": e.format, "onnx": e.onnx,
            })
        );
        return Ok(());
    }
    outln!("{} version {}{}", e.name, e.version, {
        let a = aliases_of(&aliases, v);
        if a.is_empty() { String::new() } else { format!("  ({a})") }
    });
    outln!("  metrics      {}  (compared on {})", metrics_text(&e), e.metric);
    match &e.onnx {
        Some(o) => outln!("  format       onnx, from {} ({} operators)", o.producer, o.operators.len()),
        None => outln!("  format       {}", e.format),
    }
    outln!("  algorithm    {}", e.candidate);
    if let Some(s) = &e.signature {
        let typed: Vec<String> = s.features.iter().zip(&s.types).map(|(f, t)| format!("{f} ({t})")).collect();
        outln!("  signature    {:?}: {}", s.task, typed.join(", "));
        if !s.classes.is_empty() {
            outln!("  classes      {}", s.classes.join(", "));
        }
    }
    if e.job_id.is_empty() {
        let file = e.candidate["file"].as_str().unwrap_or("a file");
        match e.dataset_hash.as_str() {
            "" => outln!("  lineage      imported from {file}, not scored"),
            hash => outln!("  lineage      imported from {file}, scored on test rows {hash}"),
        }
    } else {
        outln!("  data         {} (split seed {})", e.dataset_hash, e.seed);
        outln!("  job          {} of pipeline {}", e.job_id, e.pipeline);
    }
    outln!("  code         {}", e.code_version);
    outln!("  registered   {} by {}", when(e.registered_at_ms), e.registered_by);
    outln!("  artifact     {}", e.model.uri);
    if let Some(d) = decision {
        outln!("  promotion    {}: {}", d.alias, d.reason);
    }
    Ok(())
}

/// Moves an alias to a version that beats it (or `--force`).
async fn promote(store: &Models, a: &PromoteArgs, json: bool) -> Result<(), Fail> {
    let how = Promotion {
        model: &a.model,
        at: &a.at,
        to: &a.to,
        metric: a.metric.as_deref(),
        margin: a.margin,
        force: a.force,
        by: operator(a.reason.as_deref()),
    };
    let moved = promote_version(store, &how).await?;
    report(&a.model, &moved, json);
    Ok(())
}

/// A promotion as an operator asks for it, from the command line or the console.
#[derive(Debug)]
pub struct Promotion<'a> {
    /// The model.
    pub model: &'a str,
    /// A version number or an alias.
    pub at: &'a str,
    /// The alias to move.
    pub to: &'a str,
    /// The metric to compare on (the version's own when absent).
    pub metric: Option<&'a str>,
    /// How much better it must score.
    pub margin: f64,
    /// Move even if it does not score better.
    pub force: bool,
    /// Who and why, recorded in the move.
    pub by: String,
}

/// Promotes as `how` says, through the registry's one compare-and-move: refused (usage) unless
/// the version beats the alias's model, or `force`.
pub async fn promote_version(store: &Models, how: &Promotion<'_>) -> Result<AliasMove, Fail> {
    let r = store.registry(how.model);
    let v = r.resolve(how.at).await.map_err(fail)?;
    let entry = r.entry(v).await.map_err(fail)?;
    let metric = how.metric.map_or_else(|| entry.metric.clone(), str::to_owned);
    if score(&entry.metrics, &metric).is_none() {
        return Err(Fail::usage(format!("version {v} has no metric `{metric}`")));
    }
    let rule = Promote { metric: &metric, margin: how.margin, force: how.force, action: "promote", by: &how.by };
    let (c, moved) = r.promote(how.to, v, &rule).await.map_err(fail)?;
    match moved {
        Some(m) => Ok(m),
        None if c.against == Some(v) => Err(Fail::usage(format!("`{}` already points at version {v}", how.to))),
        None => Err(Fail::usage(format!("refused: {} (--force to move it anyway)", c.reason))),
    }
}

/// Moves an alias back to where it pointed before its last move.
async fn rollback(store: &Models, a: &RollbackArgs, json: bool) -> Result<(), Fail> {
    let moved = rollback_alias(store, &a.model, &a.alias, operator(a.reason.as_deref())).await?;
    report(&a.model, &moved, json);
    Ok(())
}

/// Points `alias` of `model` back at its previous version, recorded as done `by`.
pub async fn rollback_alias(store: &Models, model: &str, alias: &str, by: String) -> Result<AliasMove, Fail> {
    let r = store.registry(model);
    let Some(current) = r.alias(alias).await.map_err(fail)? else {
        return Err(Fail::usage(format!("model `{model}` has no alias `{alias}`")));
    };
    let Some(previous) = current.previous else {
        return Err(Fail::usage(format!(
            "`{alias}` has pointed only at version {}: nothing to roll back to",
            current.version
        )));
    };
    r.try_move(alias, Some(&current), previous, "rollback", &by, None).await.map_err(fail)?.ok_or_else(|| {
        Fail::from(format!(
            "`{alias}` moved while rolling back (see `warren models show {model} {alias}`); nothing changed"
        ))
    })
}

fn report(model: &str, m: &AliasMove, json: bool) {
    if json {
        outln!("{}", serde_json::to_string(m).unwrap_or_default());
        return;
    }
    let from = m.previous.map_or("nothing".to_owned(), |p| format!("version {p}"));
    outln!("{model}: `{}` now points at version {} (was {from}; move {})", m.alias, m.version, m.seq);
    if let Some(c) = &m.comparison {
        outln!("  {}", c.reason);
    }
}
