//! `warren submit`: publish a job, and with `--wait` follow it step by step until it is done or dead.

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode, time::Duration};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use uuid::Uuid;
use warren::{Config, EventKind, JobEvent, Names};
use warren_ops::spec::PipelineSpec;

use crate::{Fail, Outcome, connect, parse_age};

/// `warren submit` arguments.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The pipeline spec (TOML).
    pipeline: PathBuf,
    /// Override a step parameter, e.g. `--set features.seed=7` (repeatable).
    #[arg(long = "set", value_name = "STEP.PARAM=VALUE")]
    set: Vec<String>,
    /// Follow the job until it is done (exit 0) or dead (exit 1).
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long.
    #[arg(long, default_value = "30m", value_name = "AGE")]
    timeout: String,
    /// Put a local file into the artifact store and give the job its URI, e.g.
    /// `--upload ingest.csv=./data.csv` (repeatable).
    #[arg(long, value_name = "STEP.PARAM=FILE")]
    upload: Vec<String>,
    /// Submit without checking the spec against the registered steps (a step no worker has
    /// announced yet, say). Files named in the spec are then not uploaded either.
    #[arg(long)]
    no_check: bool,
}

impl SubmitArgs {
    /// How long to wait on a broker that blocks publishes: `--timeout` (`None` if it does not
    /// parse: the command then says so).
    pub fn blocked_limit(&self) -> Option<Duration> {
        parse_age(&self.timeout).ok().map(Duration::from_millis)
    }
}

/// Loads a spec and applies `--set` overrides; errors are usage errors naming the line or key.
pub fn load_spec(path: &std::path::Path, set: &[String]) -> Result<PipelineSpec, Fail> {
    let mut spec = PipelineSpec::load(path).map_err(|e| Fail::usage(e.to_string()))?;
    for s in set {
        let (key, value) =
            s.split_once('=').ok_or_else(|| Fail::usage(format!("--set {s}: expected STEP.PARAM=VALUE")))?;
        spec.set(key, value).map_err(|e| Fail::usage(format!("--set {s}: {e}")))?;
    }
    Ok(spec)
}

pub use warren_ops::follow::End;

/// What is wrong with a local input file, checked as its step's descriptor says (`format`;
/// today `csv`: the delimiter, header, encoding and column parameters it names), before anything is uploaded.
fn check_local_file(
    path: &std::path::Path,
    format: Option<&serde_json::Value>,
    params: &serde_json::Value,
) -> Option<String> {
    let format = format?;
    if format["format"].as_str() != Some("csv") {
        return None;
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return Some(format!("cannot read it: {e}")),
    };
    fn param<'a>(name: &'a serde_json::Value, params: &'a serde_json::Value) -> Option<(&'a str, &'a str)> {
        let n = name.as_str()?;
        Some((n, params.get(n)?.as_str()?))
    }
    let options = warren_schemas::csvfile::Options {
        delimiter: param(&format["delimiter_param"], params).map(|(_, d)| d),
        header: format["header_param"].as_str().and_then(|n| params.get(n)?.as_bool()),
        encoding: param(&format["encoding_param"], params).map(|(_, e)| e),
    };
    let named: Vec<(&str, &str)> = format["column_params"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| param(p, params)).collect())
        .unwrap_or_default();
    warren_schemas::csvfile::check(&bytes, options, &named).err()
}

/// Exit codes of `warren submit --wait` (and of every command for the broker).
pub mod exit {
    /// The job finished.
    pub const DONE: u8 = 0;
    /// A message of the job went to a dead-letter queue.
    pub const DEAD: u8 = 1;
    /// The job was cancelled.
    pub const CANCELLED: u8 = 3;
    /// The job did not finish within `--timeout`.
    pub const TIMED_OUT: u8 = 4;
    /// The broker could not be reached, or refused the credentials (every command).
    pub const BROKER: u8 = 5;
}

/// What a follow shows of a job: a bar per step on a terminal, one plain line per step event
/// otherwise, nothing when quiet.
struct Progress {
    plain: bool,
    bars: BTreeMap<String, ProgressBar>,
    succeeded: BTreeMap<String, u32>,
}

impl Progress {
    fn new(steps: &[String], quiet: bool) -> Self {
        use std::io::IsTerminal;
        let live = !quiet && std::io::stderr().is_terminal();
        let multi = MultiProgress::new();
        if !live {
            multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let style = ProgressStyle::with_template("{spinner} {prefix:<9} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bars = steps
            .iter()
            .map(|s| {
                let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()).with_prefix(s.clone()));
                bar.set_message("waiting");
                if live {
                    bar.enable_steady_tick(Duration::from_millis(120));
                }
                (s.clone(), bar)
            })
            .collect();
        Self { plain: !quiet && !live, bars, succeeded: BTreeMap::new() }
    }

    /// What an event says, in words (`done ×2 (31 ms)`, `retrying (attempt 2): …`).
    fn words(&mut self, e: &JobEvent) -> Option<String> {
        match e.kind {
            EventKind::Started => Some("running".into()),
            EventKind::Succeeded => {
                let n = self.succeeded.entry(e.step.to_string()).or_default();
                *n += 1;
                let times = if *n > 1 { format!(" ×{n}") } else { String::new() };
                Some(format!("done{times} ({} ms)", e.duration_ms.unwrap_or(0)))
            }
            EventKind::Retrying => {
                Some(format!("retrying (attempt {}): {}", e.attempt, e.error.clone().unwrap_or_default()))
            }
            EventKind::Dead => Some(format!("dead: {}", e.error.clone().unwrap_or_default())),
            EventKind::Cancelled => Some("cancelled".into()),
            // The submit's own record and an operator's cancel, in words (`cancelled by ann@host`).
            EventKind::Operator => warren::events::OperatorAction::from_event(e).map(|a| {
                let verb = match a.action.as_str() {
                    "cancel" => "cancelled",
                    "submit" => "submitted",
                    other => other,
                };
                let why = a.reason.map(|r| format!(": {r}")).unwrap_or_default();
                format!("{verb} by {}{why}", a.actor)
            }),
            EventKind::Report => {
                e.detail.as_ref().and_then(|d| serde_json::to_value(d).ok()).map(|d| format!("report {d}"))
            }
            _ => None,
        }
    }

    fn show(&mut self, e: &JobEvent) {
        let Some(what) = self.words(e) else { return };
        if let Some(bar) = self.bars.get(e.step.as_ref()).filter(|_| e.kind != EventKind::Report) {
            bar.set_message(what.clone());
        }
        if self.plain && e.kind != EventKind::Started {
            eprintln!("{}  {:<10} {what}", warren::events::format_time(e.at_ms), e.step);
        }
    }

    fn finish(&self, done: bool) {
        for b in self.bars.values() {
            if done { b.finish() } else { b.abandon() }
        }
    }
}

/// Follows `job` to its end (see [`warren_ops::follow`]), showing its progress unless `quiet`.
/// A timeout is an error with exit code 4.
pub async fn follow(
    op: &warren_ops::Operator,
    job: Uuid,
    steps: &[String],
    quiet: bool,
    within: Duration,
) -> Result<End, Fail> {
    let mut progress = Progress::new(steps, quiet);
    let end = op.follow(job, steps, within, |e| progress.show(e)).await;
    progress.finish(matches!(end, Ok(End::Done(_))));
    Ok(end?)
}

/// Steps of the slip with no consumer now: the job would wait at them.
async fn idle_steps(client: &warren::Client, names: &Names, steps: &[String]) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for s in steps {
        match warren_ops::queues::counts(client.broker(), &names.step_queue(s)).await {
            Some((ready, 0)) => out.push((s.clone(), ready)),
            None => out.push((s.clone(), 0)),
            Some(_) => {}
        }
    }
    out
}

/// Puts a local file into the artifact store under a content-addressed key; returns its URI.
async fn upload(config: &Config, path: &std::path::Path) -> Result<String, Fail> {
    let bytes = std::fs::read(path).map_err(|e| Fail::usage(format!("cannot read {}: {e}", path.display())))?;
    let store = warren::artifacts::ArtifactStore::open(&config.artifacts)?;
    let hash = warren::artifacts::content_hash(&bytes);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "upload".into());
    let key = format!("uploads/{}/{name}", hash.trim_start_matches("sha256:"));
    let stored = store.put(&key, bytes).await?;
    eprintln!("uploaded {} -> {}", path.display(), stored.uri);
    Ok(stored.uri)
}

/// Whether a file parameter's value names a local file to upload (not a store URI, an object
/// store URL, or a `data:` name in the workers' data root).
fn is_local(value: &str, store_base: &str) -> bool {
    !(value.starts_with(store_base) || value.starts_with("data:") || value.contains("://"))
}

/// Checks the spec against the registry and uploads the local files its file parameters name.
pub async fn check_and_upload(client: &warren::Client, config: &Config, spec: &mut PipelineSpec) -> Result<(), Fail> {
    let registry = crate::steps::registry(client, config).await?;
    spec.check(&registry).map_err(|e| Fail::usage(e.to_string()))?;
    let base = warren::artifacts::ArtifactStore::open(&config.artifacts)?.base().to_owned();
    for i in 0..spec.steps.len() {
        let step = spec.steps[i].step.clone();
        let file_params = registry.descriptor(&step).map(|d| d.file_params.clone()).unwrap_or_default();
        for key in file_params {
            let Some(value) = spec.steps[i].params.get(&key).and_then(|v| v.as_str()).map(str::to_owned) else {
                continue;
            };
            if !is_local(&value, &base) {
                continue;
            }
            let path = std::path::Path::new(&value);
            if !path.is_file() {
                return Err(Fail::usage(
                    spec.params_error(
                        i,
                        format!(
                            "step `{step}`: {key}: no file {value} here to upload (give a file on this machine, an artifact URI, or `data:NAME` for a file in the workers' data root)"
                        ),
                    )
                    .to_string(),
                ));
            }
            let format = registry.descriptor(&step).and_then(|d| d.file_formats.get(&key));
            if let Some(problem) = check_local_file(path, format, &spec.steps[i].params) {
                let message = format!("step `{step}`: {key} {value}: {problem}");
                return Err(Fail::usage(spec.params_error(i, message).to_string()));
            }
            let uri = upload(config, path).await?;
            spec.set(&format!("{step}.{key}"), &toml_quote(&uri)).map_err(Fail::usage)?;
        }
    }
    Ok(())
}

fn toml_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `warren submit`.
pub async fn run(config: &Config, args: SubmitArgs, json: bool) -> Outcome {
    let mut spec = load_spec(&args.pipeline, &args.set)?;
    let within = Duration::from_millis(parse_age(&args.timeout)?);
    let op = connect(config).await?;
    let client = op.client();
    let names = Names::new(&config.namespace);
    for u in &args.upload {
        let (key, file) =
            u.split_once('=').ok_or_else(|| Fail::usage(format!("--upload {u}: expected STEP.PARAM=FILE")))?;
        let uri = upload(config, std::path::Path::new(file)).await?;
        spec.set(key, &toml_quote(&uri)).map_err(|e| Fail::usage(format!("--upload {u}: {e}")))?;
    }
    if !args.no_check {
        check_and_upload(client, config, &mut spec).await?;
    }
    let job = client.submit(&spec.job()).await?;
    op.record_submitted(job, &spec.name, &warren_ops::Audit::new(None, None)).await?;
    if !args.wait {
        if json {
            outln!("{}", serde_json::json!({ "job": job.to_string(), "pipeline": spec.name }));
        } else {
            outln!("{job}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        eprintln!("job {job} ({})", spec.name);
    }
    let steps: Vec<String> = spec.steps.iter().map(|s| s.step.clone()).collect();
    let mut unique = steps.clone();
    unique.dedup();
    for (step, ready) in idle_steps(client, &names, &unique).await {
        eprintln!(
            "warning: no worker consumes step `{step}` now ({ready} message(s) waiting there); the job will wait at it \
             until one starts (`warren steps`, `warren up`)"
        );
    }
    let started = std::time::Instant::now();
    let end = follow(&op, job, &steps, json, within).await?;
    Ok(said(end, job, started.elapsed().as_millis() as u64, json))
}

/// Says how the followed job ended, and the exit code that says it too.
fn said(end: End, job: Uuid, took: u64, json: bool) -> ExitCode {
    match end {
        End::Done(events) => {
            let view = warren_ops::history::fold(&events, true).into_iter().find(|j| j.job == job);
            let reports: Vec<serde_json::Value> = view
                .iter()
                .flat_map(|v| v.steps.iter())
                .flat_map(|s| s.reports.iter().map(move |r| serde_json::json!({ "step": s.step, "report": r })))
                .collect();
            if json {
                outln!(
                    "{}",
                    serde_json::json!({ "job": job.to_string(), "state": "done", "duration_ms": took, "reports": reports })
                );
            } else {
                for r in &reports {
                    outln!("  {:<10} {}", r["step"].as_str().unwrap_or(""), r["report"]);
                }
                outln!("{job} done in {}", crate::jobs::duration(took));
            }
            ExitCode::from(exit::DONE)
        }
        End::Dead(e) => {
            let next = format!(
                "warren dlq show {}    then, once the cause is fixed:  warren dlq replay --step {} --job {job} --reason \"…\"",
                e.message_id, e.step
            );
            if json {
                outln!(
                    "{}",
                    serde_json::json!({ "job": job.to_string(), "state": "dead", "step": e.step.to_string(),
                        "error": e.error, "dead_letter": e.message_id.to_string(), "next": next })
                );
            } else {
                outln!("{job} dead at {}: {}", e.step, e.error.unwrap_or_default());
                outln!("  dead letter {}; next: {next}", e.message_id);
            }
            ExitCode::from(exit::DEAD)
        }
        End::Cancelled(e) => {
            let why = warren::events::OperatorAction::from_event(&e)
                .map(|a| format!(" by {}{}", a.actor, a.reason.map(|r| format!(": {r}")).unwrap_or_default()))
                .unwrap_or_default();
            if json {
                outln!("{}", serde_json::json!({ "job": job.to_string(), "state": "cancelled" }));
            } else {
                outln!("{job} cancelled{why}");
            }
            ExitCode::from(exit::CANCELLED)
        }
    }
}
