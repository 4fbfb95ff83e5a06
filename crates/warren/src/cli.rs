//! Command-line flags shared by every Warren binary (feature `cli`).

use std::path::PathBuf;

use crate::{Config, ConfigError};

/// The configuration flags every worker and the `warren` command take. Each overrides the
/// file and the `WARREN_*` environment variable of the same name.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file (default: $WARREN_CONFIG, if set).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Broker URL(s), comma-separated, tried in turn.
    #[arg(long, value_name = "URL", global = true)]
    pub amqp_url: Option<String>,
    /// Namespace prefixing every exchange and queue.
    #[arg(long, value_name = "NS", global = true)]
    pub namespace: Option<String>,
    /// Artifact store: a directory or an object-store URL.
    #[arg(long, value_name = "DIR|URL", global = true)]
    pub artifacts: Option<String>,
    /// Messages handled at once.
    #[arg(long, value_name = "N", global = true)]
    pub concurrency: Option<String>,
    /// Messages the broker sends ahead of acks.
    #[arg(long, value_name = "N", global = true)]
    pub prefetch: Option<String>,
    /// Health and metrics address (host:port).
    #[arg(long, value_name = "ADDR", global = true)]
    pub health_addr: Option<String>,
}

impl ConfigArgs {
    /// Loads the configuration with these flags on top.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut overrides = Vec::new();
        let flags = [
            ("amqp_url", &self.amqp_url),
            ("namespace", &self.namespace),
            ("artifacts", &self.artifacts),
            ("concurrency", &self.concurrency),
            ("prefetch", &self.prefetch),
            ("health_addr", &self.health_addr),
        ];
        for (key, value) in flags {
            if let Some(v) = value {
                overrides.push((key, v.clone()));
            }
        }
        Config::load(self.config.as_deref(), &overrides)
    }
}

/// How a step's worker binary runs (see [`worker_main`]).
#[derive(Debug, Clone, Default)]
pub struct StepOptions {
    /// The longest one message may take (sets the queue's consumer timeout beyond it).
    pub max_duration: Option<std::time::Duration>,
    /// Messages handled at once, unless configured.
    pub concurrency: Option<usize>,
}

#[derive(Debug, clap::Parser)]
struct WorkerArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

/// The whole `main` of a step's worker binary: flags and configuration (a bad value prints one
/// line and exits 2), logging, the artifact store, a current-thread runtime, and the worker until
/// SIGTERM or Ctrl-C.
pub fn worker_main<I, O, H>(
    bin: &'static str,
    step: &'static str,
    version: &'static str,
    about: &'static str,
    options: StepOptions,
    handler: H,
) -> std::process::ExitCode
where
    I: crate::Payload,
    O: crate::StepOutput,
    H: crate::Handler<I, O>,
{
    use clap::{CommandFactory, FromArgMatches};
    use std::process::ExitCode;

    let command = WorkerArgs::command().name(bin).version(version).about(about);
    let args = match command.try_get_matches().and_then(|m| WorkerArgs::from_arg_matches(&m)) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let config = match args.config.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{bin}: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init();
    let store = match crate::artifacts::ArtifactStore::open(&config.artifacts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{bin}: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{bin}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut builder = crate::Worker::builder(step, &config).artifacts(store).version(version);
    if let Some(d) = options.max_duration {
        builder = builder.max_duration(d);
    }
    // The step's own default, unless a file, the environment or a flag set it.
    if let Some(n) = options.concurrency.filter(|_| !config.is_set("concurrency")) {
        builder = builder.concurrency(n);
    }
    let worker = builder.build();
    if let Some(addr) = config.health_addr.clone() {
        crate::telemetry::metrics_recorder();
        let health = worker.health();
        runtime.spawn(async move {
            if let Err(e) = crate::telemetry::serve(&addr, health).await {
                tracing::error!(%addr, error = %e, "cannot serve health and metrics");
            }
        });
    }
    match runtime.block_on(worker.run(handler, crate::shutdown::shutdown_signal_or_orphaned())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{bin}: {e}");
            ExitCode::FAILURE
        }
    }
}
