//! Command-line flags shared by every Warren binary (feature `cli`).

use std::path::PathBuf;

use crate::{Config, ConfigError};

/// The configuration flags every worker and the `warren` command take: one per key of
/// [`crate::config::keys`], each overriding the file and the `WARREN_*` environment variable of
/// the same name.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Configuration (flag > WARREN_* environment > --config file > defaults)")]
pub struct ConfigArgs {
    /// TOML configuration file (default: $WARREN_CONFIG, if set).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration, each key with where it came from, and exit.
    #[arg(long, global = true)]
    pub print_config: bool,
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
    /// Messages the broker sends ahead of acks (default: the concurrency).
    #[arg(long, value_name = "N", global = true)]
    pub prefetch: Option<String>,
    /// Attempts before a retryable error dead-letters a message.
    #[arg(long, value_name = "N", global = true)]
    pub max_attempts: Option<String>,
    /// First retry delay in ms (doubles per attempt).
    #[arg(long, value_name = "MS", global = true)]
    pub retry_base_ms: Option<String>,
    /// Longest retry delay in ms.
    #[arg(long, value_name = "MS", global = true)]
    pub retry_max_ms: Option<String>,
    /// Deliveries without an ack (crashes) before the broker dead-letters a message.
    #[arg(long, value_name = "N", global = true)]
    pub delivery_limit: Option<String>,
    /// Longest run of one message in ms (at most the step's own limit).
    #[arg(long, value_name = "MS", global = true)]
    pub max_duration_ms: Option<String>,
    /// How long a stopping worker waits for messages in flight, in ms.
    #[arg(long, value_name = "MS", global = true)]
    pub shutdown_grace_ms: Option<String>,
    /// Publish job events (true or false).
    #[arg(long, value_name = "BOOL", global = true)]
    pub events: Option<String>,
    /// The job events batch version to write: 2, or 1 while a deployment still has readers
    /// written before version 2 (docs/PROTOCOL.md, "Compatibility").
    #[arg(long, value_name = "1|2", global = true)]
    pub events_version: Option<String>,
    /// The envelope version workers write: auto (the compact version 2 once every reader of
    /// the next step reads it), 1, or 2.
    #[arg(long, value_name = "auto|1|2", global = true)]
    pub envelope_version: Option<String>,
    /// Completed message ids remembered to drop duplicates.
    #[arg(long, value_name = "N", global = true)]
    pub dedup_window: Option<String>,
    /// Health and metrics address (host:port).
    #[arg(long, value_name = "ADDR", global = true)]
    pub health_addr: Option<String>,
    /// Directory workers may read local input files from (default: none, the store only).
    #[arg(long, value_name = "DIR", global = true)]
    pub data_root: Option<String>,
    /// PEM file of certificate authorities trusted for amqps:// (default: the system's).
    #[arg(long, value_name = "FILE", global = true)]
    pub tls_ca_file: Option<String>,
    /// Log lines as text (colour on a terminal only) or json.
    #[arg(long, value_name = "text|json", global = true)]
    pub log_format: Option<String>,
    /// The model registry's namespace (default: the namespace); deployments that set the same
    /// one share their models.
    #[arg(long, global = true, value_name = "NS")]
    pub registry_namespace: Option<String>,
}

impl ConfigArgs {
    /// The flags given, as `(key, value)` overrides.
    pub fn overrides(&self) -> Vec<(&'static str, String)> {
        let flags = [
            ("amqp_url", &self.amqp_url),
            ("namespace", &self.namespace),
            ("artifacts", &self.artifacts),
            ("concurrency", &self.concurrency),
            ("prefetch", &self.prefetch),
            ("max_attempts", &self.max_attempts),
            ("retry_base_ms", &self.retry_base_ms),
            ("retry_max_ms", &self.retry_max_ms),
            ("delivery_limit", &self.delivery_limit),
            ("max_duration_ms", &self.max_duration_ms),
            ("shutdown_grace_ms", &self.shutdown_grace_ms),
            ("events", &self.events),
            ("events_version", &self.events_version),
            ("envelope_version", &self.envelope_version),
            ("dedup_window", &self.dedup_window),
            ("health_addr", &self.health_addr),
            ("data_root", &self.data_root),
            ("tls_ca_file", &self.tls_ca_file),
            ("log_format", &self.log_format),
            ("registry_namespace", &self.registry_namespace),
        ];
        flags.into_iter().filter_map(|(k, v)| Some((k, v.clone()?))).collect()
    }

    /// Loads the configuration with these flags on top.
    pub fn load(&self) -> Result<Config, ConfigError> {
        self.load_with(&[])
    }

    /// Loads the configuration over a step's own defaults, with these flags on top.
    pub fn load_with(&self, step_defaults: &[(&str, String)]) -> Result<Config, ConfigError> {
        Config::load_layers(step_defaults, self.config.as_deref(), std::env::vars(), &self.overrides())
    }
}

/// How a step's worker binary runs (see [`worker_main`]).
#[derive(Debug, Clone, Default)]
pub struct StepOptions {
    /// The longest one message may take (sets the queue's consumer timeout beyond it).
    pub max_duration: Option<std::time::Duration>,
    /// Messages handled at once, unless configured (the step's default layer).
    pub concurrency: Option<usize>,
    /// JSON Schema of the step's parameters (see [`StepOptions::params_of`]); unset: any.
    pub params: Option<serde_json::Value>,
    /// Parameters naming an input file (uploaded at submit, read from the store or data root).
    pub file_params: Vec<String>,
    /// What some of those files must be (see [`crate::registry::StepDescriptor::file_formats`]).
    pub file_formats: std::collections::BTreeMap<String, serde_json::Value>,
    /// The step gathers a fan-out.
    pub gather: bool,
    /// JSON Schema of the step's input payload (see [`StepOptions::input_of`]); unset: not announced.
    pub input_schema: Option<serde_json::Value>,
}

impl StepOptions {
    /// The step's parameters are `P`.
    pub fn params_of<P: schemars::JsonSchema>(mut self) -> Self {
        self.params = Some(schemars::schema_for!(P).to_value());
        self
    }

    /// The step's input payload is `I` (its JSON Schema is announced).
    pub fn input_of<I: schemars::JsonSchema>(mut self) -> Self {
        self.input_schema = Some(schemars::schema_for!(I).to_value());
        self
    }
}

#[derive(Debug, clap::Parser)]
struct WorkerArgs {
    /// Print the step's descriptor (JSON: schemas, parameters with defaults) and exit.
    #[arg(long)]
    describe: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

/// The configuration: the step's defaults under the file, the environment and the flags.
/// A bad value prints one line and gives exit code 2.
pub(crate) fn configure(
    bin: &str,
    step: &str,
    args: &ConfigArgs,
    describe: bool,
    options: &StepOptions,
) -> Result<crate::Config, std::process::ExitCode> {
    let step_defaults: Vec<(&str, String)> =
        options.concurrency.map(|n| ("concurrency", n.to_string())).into_iter().collect();
    let config = args.load_with(&step_defaults).map_err(|e| {
        eprintln!("{bin}: {e}");
        std::process::ExitCode::from(2)
    })?;
    if let (Some(limit), Some(ceiling)) = (config.max_duration, options.max_duration)
        && limit > ceiling
        && !args.print_config
        && !describe
    {
        eprintln!(
            "{bin}: max_duration_ms ({}) is above the {step} step's own limit of {}; its queue's consumer timeout is set from that",
            limit.as_millis(),
            humantime::format_duration(ceiling)
        );
        return Err(std::process::ExitCode::from(2));
    }
    Ok(config)
}

/// The step's descriptor as its workers announce it.
fn descriptor<I: crate::Payload, O: crate::StepOutput>(
    step: &str,
    version: &str,
    about: &str,
    options: &StepOptions,
    config: &crate::Config,
) -> crate::registry::StepDescriptor {
    let mut d = crate::registry::StepDescriptor::new(step, version).completed::<I, O>(
        step,
        version,
        config.concurrency,
        options.max_duration,
    );
    d.about = about.to_owned();
    d.gather = options.gather;
    d.input_schema = options.input_schema.clone();
    d.file_params = options.file_params.clone();
    d.file_formats = options.file_formats.clone();
    if let Some(p) = &options.params {
        d.params = p.clone();
    }
    d
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
    let config = match configure(bin, step, &args.config, args.describe, &options) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if args.config.print_config {
        print!("{}", config.render());
        return ExitCode::SUCCESS;
    }
    let descriptor = descriptor::<I, O>(step, version, about, &options, &config);
    if args.describe {
        return match serde_json::to_string_pretty(&descriptor) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{bin}: cannot encode the descriptor: {e}");
                ExitCode::FAILURE
            }
        };
    }
    crate::telemetry::init_with(&config.log_format);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{bin}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run_worker(&runtime, bin, step, version, &options, descriptor, &config, handler) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// The worker on `runtime`, with its health endpoint, until it stops.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_worker<I, O, H>(
    runtime: &tokio::runtime::Runtime,
    bin: &str,
    step: &str,
    version: &str,
    options: &StepOptions,
    descriptor: crate::registry::StepDescriptor,
    config: &crate::Config,
    handler: H,
) -> Result<(), std::process::ExitCode>
where
    I: crate::Payload,
    O: crate::StepOutput,
    H: crate::Handler<I, O>,
{
    use std::process::ExitCode;
    let store = crate::artifacts::ArtifactStore::open(&config.artifacts).map_err(|e| {
        eprintln!("{bin}: {e}");
        ExitCode::from(2)
    })?;
    let mut builder = crate::Worker::builder(step, config).artifacts(store).version(version).descriptor(descriptor);
    if let Some(d) = options.max_duration {
        builder = builder.max_duration(d);
    }
    // The recorder first: the worker's metric handles are made when it is built.
    if config.health_addr.is_some() {
        crate::telemetry::metrics_recorder();
    }
    let worker = builder.build();
    if let Some(addr) = config.health_addr.clone() {
        let health = worker.health();
        runtime.spawn(async move {
            if let Err(e) = crate::telemetry::serve(&addr, health).await {
                tracing::error!(%addr, error = %e, "cannot serve health and metrics");
            }
        });
    }
    runtime.block_on(worker.run(handler, crate::shutdown::shutdown_signal_or_orphaned())).map_err(|e| {
        eprintln!("{bin}: {e}");
        // Refused credentials: exit 5, as the `warren` command does, so a supervisor (`warren
        // up`) knows that restarting will not help.
        let code = if matches!(e, crate::WorkerError::AccessRefused(_)) { ACCESS_REFUSED_EXIT } else { 1 };
        ExitCode::from(code)
    })
}

/// The exit code of a worker whose broker refused its credentials (the `warren` command's 5).
pub const ACCESS_REFUSED_EXIT: u8 = 5;
