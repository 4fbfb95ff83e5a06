//! `warren up` (a local fleet) and `warren demo`.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{ExitCode, Stdio},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::Command,
    sync::watch,
    task::JoinHandle,
};
use warren::{Config, Declarer, Names};
use warren_ops::spec::PipelineSpec;
use warren_schemas::{PredictRequest, Predictions};

use crate::{Fail, Outcome, connect};

/// `warren up` arguments.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Run N copies of a step, e.g. `--scale train=3` (repeatable; default 1 each).
    #[arg(long, value_name = "STEP=N")]
    scale: Vec<String>,
    /// A fleet file (TOML): `[[workers]]` with `step`, `bin`, `args`, `workdir`, `scale` and `env` each. Without
    /// one, every worker binary in the binary directory (`$WARREN_BIN_DIR`, else beside `warren`).
    #[arg(long, value_name = "FILE")]
    fleet: Option<PathBuf>,
}

/// One kind of worker in a fleet.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetWorker {
    /// The step it consumes.
    pub step: String,
    /// Its binary: a path (relative to the fleet file), or a name in the binary directory.
    pub bin: PathBuf,
    /// Copies to run.
    #[serde(default = "one")]
    pub scale: usize,
    /// Environment for it (any `WARREN_*` key among them, under flags given to `warren up`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Arguments for it: for `warren-exec`, `["--", "python3", "my_step.py"]`.
    #[serde(default)]
    pub args: Vec<String>,
    /// The directory it runs in (relative to the fleet file); unset: `warren up`'s own.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
}

fn one() -> usize {
    1
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    workers: Vec<FleetWorker>,
}

/// Reads a fleet file; errors are one line naming the file.
pub fn load_fleet(path: &std::path::Path) -> Result<Vec<FleetWorker>, Fail> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| Fail::usage(format!("cannot read fleet file {shown}: {e}")))?;
    let file: FleetFile = parse_fleet(&text).map_err(|e| Fail::usage(format!("fleet file {shown}: {e}")))?;
    let base = path.parent().map(PathBuf::from).unwrap_or_default();
    let mut out = Vec::new();
    for mut w in file.workers {
        if let Some(dir) = &w.workdir {
            let dir = base.join(dir);
            if !dir.is_dir() {
                return Err(Fail::usage(format!(
                    "fleet file {shown}: step {}: no directory {}",
                    w.step,
                    dir.display()
                )));
            }
            w.workdir = Some(dir);
        }
        if w.bin.components().count() > 1 {
            w.bin = base.join(&w.bin);
        } else {
            w.bin = bin_dir().join(&w.bin);
        }
        if !w.bin.is_file() {
            return Err(Fail::usage(format!("fleet file {shown}: step {}: no binary {}", w.step, w.bin.display())));
        }
        out.push(w);
    }
    if out.is_empty() {
        return Err(Fail::usage(format!("fleet file {shown}: no [[workers]]")));
    }
    Ok(out)
}

/// The fleet file, or one line naming the line of the file and what is wrong there (an unknown
/// key with the keys that are known, a missing one, a wrong type).
fn parse_fleet(text: &str) -> Result<FleetFile, String> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let message = e.message().trim().replace('\n', " ");
        match e.span() {
            Some(span) => format!("line {}: {message}", text[..span.start.min(text.len())].matches('\n').count() + 1),
            None => message,
        }
    })
}

/// Every worker binary in the binary directory: the `warren-*` executables that describe a step
/// (`--describe`), one copy each.
pub fn discover() -> Result<Vec<FleetWorker>, Fail> {
    let dir = bin_dir();
    let mut out = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| Fail::from(format!("cannot list {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let executable = {
            use std::os::unix::fs::PermissionsExt;
            path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        if !name.starts_with("warren-") || name.contains('.') || !executable {
            continue;
        }
        let Ok(out_) = std::process::Command::new(&path)
            .arg("--describe")
            .env_remove("WARREN_CONFIG")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        else {
            continue;
        };
        if !out_.status.success() {
            continue;
        }
        let Ok(d) = serde_json::from_slice::<warren::registry::StepDescriptor>(&out_.stdout) else { continue };
        out.push(FleetWorker {
            step: d.step,
            bin: path,
            scale: 1,
            env: BTreeMap::new(),
            args: Vec::new(),
            workdir: None,
        });
    }
    if out.is_empty() {
        return Err(Fail::from(format!(
            "no worker binaries in {}: build them with `cargo build --workspace --bins`, set WARREN_BIN_DIR, or give --fleet FILE",
            dir.display()
        )));
    }
    Ok(out)
}

/// Where worker output goes.
#[derive(Debug, Clone)]
pub enum Logs {
    /// To stdout, each line prefixed with `[step#n]`.
    Prefixed,
    /// To one file per worker in this directory.
    Dir(PathBuf),
}

/// A running fleet.
#[derive(Debug)]
pub struct Fleet {
    stop: watch::Sender<bool>,
    slots: Vec<JoinHandle<()>>,
    /// Workers that exited in a way a restart cannot mend (bad usage, refused credentials).
    fatal: tokio::sync::mpsc::UnboundedReceiver<Fatal>,
}

/// A worker that will not be restarted: its name and exit code.
#[derive(Debug)]
pub struct Fatal {
    name: String,
    code: u8,
}

/// The directory holding the worker binaries: `$WARREN_BIN_DIR`, else beside this executable.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("WARREN_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| {
        std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from)).unwrap_or_else(|| PathBuf::from("."))
    })
}

fn apply_scale(workers: &mut [FleetWorker], scale: &[String]) -> Result<(), Fail> {
    for s in scale {
        let (step, n) = s.split_once('=').ok_or_else(|| Fail::usage(format!("--scale {s}: expected STEP=N")))?;
        let n: usize = n.parse().map_err(|_| Fail::usage(format!("--scale {s}: `{n}` is not a number")))?;
        let steps: Vec<String> = workers.iter().map(|w| w.step.clone()).collect();
        let w = workers.iter_mut().find(|w| w.step == step).ok_or_else(|| {
            Fail::usage(format!("--scale {s}: no step `{step}` in this fleet (steps: {})", steps.join(", ")))
        })?;
        w.scale = n;
    }
    Ok(())
}

async fn pump(reader: impl AsyncRead + Unpin, prefix: String) {
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        outln!("{prefix} {line}");
    }
}

impl Fleet {
    /// Starts every worker (`scale` copies each), restarting any that exits.
    pub fn start(config: &Config, workers: &[FleetWorker], logs: Logs, json: bool) -> Result<Self, Fail> {
        let (stop, stopped) = watch::channel(false);
        let (fatal_tx, fatal) = tokio::sync::mpsc::unbounded_channel();
        let mut slots = Vec::new();
        let mut health: Option<std::net::SocketAddr> = match &config.health_addr {
            Some(a) => Some(a.parse().map_err(|_| Fail::usage(format!("--health-addr {a}: expected host:port")))?),
            None => None,
        };
        for w in workers {
            for i in 0..w.scale {
                let name = format!("{}#{i}", w.step);
                let mut env: Vec<(String, String)> = w.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                // The fleet's own configuration (its flags above all) comes last and wins.
                env.extend(self::env(config));
                // One health address per worker: the configured one's port, then the next ones.
                if let Some(addr) = health.as_mut() {
                    if json {
                        outln!(
                            "{}",
                            serde_json::json!({ "worker": name, "step": w.step, "health": format!("http://{addr}/") })
                        );
                    } else {
                        outln!("[{name}] health and metrics on http://{addr}/");
                    }
                    env.push(("WARREN_HEALTH_ADDR".to_owned(), addr.to_string()));
                    addr.set_port(addr.port().saturating_add(1));
                }
                let task = slot(w.clone(), name, env, logs.clone(), stopped.clone(), fatal_tx.clone());
                slots.push(tokio::spawn(task));
            }
        }
        Ok(Self { stop, slots, fatal })
    }

    /// The first worker that exited for good (bad usage or refused credentials), if any does.
    pub async fn fatal(&mut self) -> Option<Fatal> {
        self.fatal.recv().await
    }

    /// Stops every worker with SIGTERM and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for s in self.slots {
            let _ = s.await;
        }
    }
}

/// The effective configuration, passed to the workers through the environment: what the fleet
/// was given by file, environment or flag (a key nobody set keeps each step's own default).
/// The health address is given per worker by [`Fleet::start`].
fn env(config: &Config) -> Vec<(String, String)> {
    let mut env = vec![
        // Workers stop by themselves if this process dies without stopping them.
        ("WARREN_FLEET_PID".to_owned(), std::process::id().to_string()),
    ];
    for (key, value) in config.set_values() {
        if key != "health_addr" {
            env.push((format!("WARREN_{}", key.to_uppercase()), value));
        }
    }
    if std::env::var_os("RUST_LOG").is_none() {
        env.push(("RUST_LOG".to_owned(), "info,lapin=warn".to_owned()));
    }
    env
}

/// The command of one worker: only the environment `env` gives it, its output prefixed on ours or
/// appended to its log file.
fn worker_command(w: &FleetWorker, name: &str, env: &[(String, String)], logs: &Logs) -> Command {
    let mut cmd = Command::new(&w.bin);
    cmd.args(&w.args);
    if let Some(dir) = &w.workdir {
        cmd.current_dir(dir);
    }
    // Only what `env` says: an inherited WARREN_HEALTH_ADDR would give every worker one port.
    cmd.env_remove("WARREN_HEALTH_ADDR")
        .env_remove("WARREN_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match logs {
        Logs::Prefixed => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        Logs::Dir(dir) => {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.log")));
            match file.and_then(|f| Ok((f.try_clone()?, f))) {
                Ok((out, err)) => {
                    cmd.stdout(out).stderr(err);
                }
                Err(_) => {
                    cmd.stdout(Stdio::null()).stderr(Stdio::null());
                }
            }
        }
    }
    cmd
}

/// One worker slot: runs the binary, restarts it with backoff when it exits, stops it on request.
async fn slot(
    worker: FleetWorker,
    name: String,
    env: Vec<(String, String)>,
    logs: Logs,
    mut stop: watch::Receiver<bool>,
    fatal: tokio::sync::mpsc::UnboundedSender<Fatal>,
) {
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let mut cmd = worker_command(&worker, &name, &env, &logs);
        let started = Instant::now();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("[{name}] cannot start {}: {e}", worker.bin.display());
                return;
            }
        };
        let prefix = format!("[{name}]");
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(out, prefix.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(err, prefix.clone()));
        }
        tokio::select! {
            status = child.wait() => {
                if *stop.borrow() {
                    return;
                }
                // Bad usage (2) or refused credentials (5): every restart would end the same way.
                if let Some(code @ (2 | warren::cli::ACCESS_REFUSED_EXIT)) = status.as_ref().ok().and_then(|s| s.code()).and_then(|c| u8::try_from(c).ok()) {
                    let _ = fatal.send(Fatal { name, code });
                    return;
                }
                failures = if started.elapsed() > Duration::from_secs(60) { 1 } else { failures + 1 };
                let backoff = Duration::from_millis((250u64 << failures.min(7)).min(30_000));
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                eprintln!("{prefix} exited ({status}); restarting in {} ms", backoff.as_millis());
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
            }
            _ = stop.changed() => {
                if let Some(pid) = child.id() {
                    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
                }
                if tokio::time::timeout(Duration::from_secs(40), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                return;
            }
        }
    }
}

/// Waits until every step's queue has a consumer.
async fn wait_ready(client: &warren::Client, names: &Names, steps: &[String], within: Duration) -> Result<(), Fail> {
    let end = Instant::now() + within;
    for step in steps {
        loop {
            let counts = warren_ops::queues::counts(client.broker(), &names.step_queue(step)).await;
            if counts.is_some_and(|(_, consumers)| consumers > 0) {
                break;
            }
            if Instant::now() > end {
                return Err(Fail::from(format!("no `{step}` worker became ready within {within:?}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Refused credentials end `warren up` at once (exit 5); a broker that is not up yet does not,
/// since the workers wait for it.
async fn preflight(config: &Config) -> Result<(), Fail> {
    match warren_ops::Operator::connect(config).await {
        Ok(op) => op.close().await,
        Err(warren_ops::OpsError::Broker(e)) if e.is_access_refused() => {
            return Err(warren_ops::OpsError::from(e).into());
        }
        Err(e) => eprintln!("warren: {e}; the workers keep trying"),
    }
    Ok(())
}

/// `warren up`.
pub async fn up(config: &Config, args: UpArgs, json: bool) -> Outcome {
    let mut workers = match &args.fleet {
        Some(file) => load_fleet(file)?,
        None => discover()?,
    };
    apply_scale(&mut workers, &args.scale)?;
    preflight(config).await?;
    let total: usize = workers.iter().map(|w| w.scale).sum();
    eprintln!(
        "starting {total} workers: {}",
        workers.iter().map(|w| format!("{}×{}", w.step, w.scale)).collect::<Vec<_>>().join(", ")
    );
    let mut fleet = Fleet::start(config, &workers, Logs::Prefixed, json)?;
    eprintln!("fleet up in namespace {}: Ctrl-C or SIGTERM stops it", config.namespace);
    let fatal = tokio::select! {
        _ = warren::shutdown_signal() => None,
        f = fleet.fatal() => f,
    };
    eprintln!("stopping the fleet");
    fleet.stop().await;
    match fatal {
        None => Ok(ExitCode::SUCCESS),
        Some(Fatal { name, code }) => Err(Fail {
            code,
            message: if code == warren::cli::ACCESS_REFUSED_EXIT {
                format!(
                    "worker {name}: the broker refused the credentials (exit {code}); fix the user and password in the broker URL"
                )
            } else {
                format!("worker {name} exited with {code} (bad usage or configuration; its log above says why)")
            },
        }),
    }
}

const IRIS: &str = include_str!("../../../pipelines/iris.toml");

/// The events of `job`'s step `step` that are reports: the last one's detail.
fn last_report(events: &[warren::JobEvent], step: &str) -> serde_json::Value {
    events
        .iter()
        .filter(|e| &*e.step == step && e.kind == warren::EventKind::Report)
        .filter_map(|e| e.detail.as_ref())
        .filter_map(|d| serde_json::to_value(d).ok())
        .next_back()
        .unwrap_or_default()
}

/// The demo's job once its fleet is up: submit, follow to the end, ask for one prediction.
async fn demo_job(
    op: &warren_ops::Operator,
    config: &Config,
    spec: &mut PipelineSpec,
    steps: &[String],
    json: bool,
) -> Result<(), Fail> {
    let client = op.client();
    wait_ready(client, op.names(), steps, Duration::from_secs(60)).await?;
    crate::submit::check_and_upload(client, config, spec).await?;
    let job = client.submit(&spec.job()).await?;
    eprintln!("submitted iris job {job}");
    let slip: Vec<String> = spec.steps.iter().map(|s| s.step.clone()).collect();
    let events = match crate::submit::follow(op, job, &slip, false, Duration::from_secs(600)).await? {
        crate::submit::End::Done(events) => events,
        crate::submit::End::Dead(e) => {
            return Err(Fail::from(format!("the job died at {}: {}", e.step, e.error.unwrap_or_default())));
        }
        crate::submit::End::Cancelled(_) => return Err(Fail::from("the job was cancelled")),
    };
    let row = vec![5.1, 3.5, 1.4, 0.2];
    let cells = row.iter().map(|v| Some(warren_schemas::Cell::Number(*v))).collect();
    let request =
        PredictRequest { model: "iris".into(), version: None, rows: vec![cells], columns: None, dataset: None };
    let p: Predictions = client.call("predict", rmpv::Value::Nil, request, Duration::from_secs(30)).await?;
    let label = p.labels.first().map_or("?", String::as_str);
    let (evaluation, registered) = (last_report(&events, "evaluate"), last_report(&events, "register"));
    if json {
        let prediction = serde_json::json!({ "row": row, "label": label, "model": "iris", "version": p.version });
        let out = serde_json::json!({ "job": job.to_string(), "evaluation": evaluation, "registered": registered, "prediction": prediction });
        outln!("{out}");
    } else {
        outln!("evaluation on held-out rows: {evaluation}");
        outln!("registered: {registered}");
        outln!("prediction for {row:?}: {label} (model iris, version {})", p.version);
    }
    Ok(())
}

/// `warren demo`.
pub async fn demo(config: &Config, json: bool) -> Outcome {
    let op = connect(config).await?;
    let client = op.client();
    let names = Names::new(&config.namespace);
    Declarer::new(client.broker(), &names).base().await?;
    let mut spec = PipelineSpec::parse(IRIS, "pipelines/iris.toml").map_err(|e| Fail::from(e.to_string()))?;
    let mut steps: Vec<String> = spec.steps.iter().map(|s| s.step.clone()).collect();
    steps.push("predict".into());
    let workers: Vec<FleetWorker> = discover()?.into_iter().filter(|w| steps.contains(&w.step)).collect();
    for step in &steps {
        if !workers.iter().any(|w| &w.step == step) {
            return Err(Fail::from(format!(
                "no `{step}` worker binary in {}: build them with `cargo build --workspace --bins`",
                bin_dir().display()
            )));
        }
    }
    let logs = std::env::temp_dir().join(format!("warren-demo-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    eprintln!("starting a fleet of {} workers (logs in {})", workers.len(), logs.display());
    let fleet = Fleet::start(config, &workers, Logs::Dir(logs), false)?;
    let result = demo_job(&op, config, &mut spec, &steps, json).await;
    eprintln!("stopping the fleet");
    fleet.stop().await;
    result.map(|()| ExitCode::SUCCESS)
}
