//! Worker processes under a supervisor that restarts them when they exit, as systemd, Docker or
//! Kubernetes would; the chaos run kills and restarts them.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use tokio::{process::Command, sync::watch};

use super::ChaosError;

/// How the workers of a fleet run.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The worker binary.
    pub bin: PathBuf,
    /// Its arguments after `--step STEP`.
    pub args: Vec<String>,
    /// Broker URLs, comma-separated.
    pub urls: String,
    /// Namespace.
    pub namespace: String,
    /// `WARREN_CONCURRENCY`.
    pub concurrency: usize,
    /// Folder for the workers' logs.
    pub logs: PathBuf,
    /// More environment (over the defaults: a scenario's retry delays, say).
    pub env: Vec<(String, String)>,
}

/// One supervised worker: its current process id and how often it was started.
#[derive(Debug)]
pub struct Slot {
    /// The step it consumes.
    pub step: String,
    pid: Arc<AtomicU32>,
    /// Processes started in this slot.
    pub starts: Arc<AtomicU32>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Slot {
    /// Starts a worker for `step` and keeps one running until [`Slot::stop`].
    pub fn start(spec: &WorkerSpec, step: &str, index: usize) -> Slot {
        let (stop, mut stopped) = watch::channel(false);
        let pid = Arc::new(AtomicU32::new(0));
        let starts = Arc::new(AtomicU32::new(0));
        let (spec, step_name, p, n) = (spec.clone(), step.to_owned(), pid.clone(), starts.clone());
        let task = tokio::spawn(async move {
            loop {
                let k = n.fetch_add(1, Ordering::SeqCst);
                let log = std::fs::File::create(spec.logs.join(format!("{step_name}-{index}-{k}.log")));
                let mut cmd = Command::new(&spec.bin);
                cmd.arg("--step")
                    .arg(&step_name)
                    .args(&spec.args)
                    .env("WARREN_AMQP_URL", &spec.urls)
                    .env("WARREN_NAMESPACE", &spec.namespace)
                    .env("WARREN_CONCURRENCY", spec.concurrency.to_string())
                    .env("WARREN_RETRY_BASE_MS", "100")
                    .env("WARREN_SHUTDOWN_GRACE_MS", "20000")
                    .env("RUST_LOG", "info,lapin=off")
                    .env_remove("WARREN_PREFETCH")
                    .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log.map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
                    .kill_on_drop(true);
                let Ok(mut child) = cmd.spawn() else {
                    tracing::error!(bin = %spec.bin.display(), "cannot start a worker");
                    return;
                };
                p.store(child.id().unwrap_or(0), Ordering::SeqCst);
                tokio::select! {
                    _ = child.wait() => {}
                    _ = stopped.changed() => {
                        if let Some(id) = child.id() {
                            let _ = Command::new("kill").args(["-TERM", &id.to_string()]).status().await;
                        }
                        if tokio::time::timeout(Duration::from_secs(40), child.wait()).await.is_err() {
                            let _ = child.kill().await;
                        }
                        return;
                    }
                }
                p.store(0, Ordering::SeqCst);
            }
        });
        Slot { step: step.to_owned(), pid, starts, stop, task }
    }

    /// Sends `signal` (`KILL`, `TERM`) to the current process; the supervisor starts a new one
    /// when it exits. Returns the start count before the signal.
    pub async fn signal(&self, signal: &str) -> Result<u32, ChaosError> {
        let starts = self.starts.load(Ordering::SeqCst);
        let pid = self.pid.load(Ordering::SeqCst);
        if pid != 0 {
            let _ = Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status()
                .await
                .map_err(|e| ChaosError(format!("kill: {e}")))?;
        }
        Ok(starts)
    }

    /// Stops the worker gracefully (SIGTERM) and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
