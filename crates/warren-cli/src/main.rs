//! `warren`: the command for people who run Warren.
//!
//! Every command takes the configuration flags (`--amqp-url`, `--namespace`, `--artifacts`,
//! `--config`), has `--help` with an example, prints JSON with `--json` where a script would want
//! it, and exits 2 with a one-line reason on bad usage, 5 when the broker cannot be reached or
//! refuses the credentials. `submit --wait` adds 1 (dead), 3 (cancelled) and 4 (timed out).
//! While the broker blocks publishes (a memory or disk alarm) a command says so on stderr at
//! once and gives up with 4 if the alarm outlasts its limit (`submit`: `--timeout`; others: 30 s).

/// `println!` through [`print()`]: a closed pipe ends the command quietly.
macro_rules! outln {
    () => { $crate::print("") };
    ($($t:tt)*) => { $crate::print(&format!($($t)*)) };
}

mod cancel;
mod console;
mod dlq;
mod fleet;
mod jobs;
mod models;
mod onnx;
mod predict;
mod queues;
mod rerun;
mod steps;
mod submit;
mod topology;
mod traces;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use warren::cli::ConfigArgs;

/// Run pipelines as independent worker processes joined by RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "warren", version, about, propagate_version = true)]
#[command(after_help = "Example:\n  warren submit pipelines/iris.toml --wait")]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish a job of a pipeline spec.
    #[command(
        after_help = "Example:\n  warren submit pipelines/iris.toml --set features.seed=7 --wait\n\nExit codes with --wait: 0 done, 1 dead, 3 cancelled, 4 timed out, 2 bad usage or a refused spec, 5 broker unreachable."
    )]
    Submit(submit::SubmitArgs),
    /// A job's step-by-step history, rebuilt from the events stream.
    #[command(after_help = "Example:\n  warren status 01a21207-8239-7163-bbdd-cbddd44a96d3")]
    Status(jobs::StatusArgs),
    /// Recent jobs and their state, from the events stream.
    #[command(after_help = "Example:\n  warren jobs --pipeline iris --since 1h")]
    Jobs(jobs::JobsArgs),
    /// Read, count, replay and purge dead letters.
    #[command(subcommand)]
    Dlq(Box<dlq::DlqCommand>),
    /// The model registry: versions, metrics, lineage; promote and roll back aliases.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Cancel a job: every worker acks its queued and arriving messages without running them.
    #[command(
        after_help = "Example:\n  warren cancel 01a21207-8239-7163-bbdd-cbddd44a96d3 --reason \"wrong data set\""
    )]
    Cancel(cancel::CancelArgs),
    /// A new job that starts at a step from an earlier job's results (upstream work is reused).
    #[command(
        after_help = "Example:\n  warren rerun 01a21207-8239-7163-bbdd-cbddd44a96d3 --from evaluate --set register.model=iris-b"
    )]
    Rerun(rerun::RerunArgs),
    /// A web console: jobs, timelines, failure groups with replay, queues and steps.
    #[command(after_help = "Example:\n  WARREN_CONSOLE_OPERATOR_TOKEN=… warren console --listen 127.0.0.1:8080")]
    Console(console::ConsoleArgs),
    /// Serve the queue gauges (ready, unacked, consumers, dead letters per step) for Prometheus.
    #[command(after_help = "Example:\n  warren exporter --listen 0.0.0.0:9419")]
    Exporter(queues::ExporterArgs),
    /// Export every job as one OpenTelemetry trace (OTLP/HTTP), built from the events stream.
    #[command(
        after_help = "Example:\n  warren traces --otlp-endpoint http://localhost:4318   # Jaeger, Tempo, an OpenTelemetry collector"
    )]
    Traces(traces::TracesArgs),
    /// The registered steps (what their workers announce) and their live workers.
    #[command(
        after_help = "Example:\n  warren steps\n  warren steps ingest   # one step's parameters, types and defaults"
    )]
    Steps(steps::StepsArgs),
    /// Per step: messages ready and unacked, consumers, dead letters.
    #[command(after_help = "Example:\n  warren queues --json")]
    Queues(queues::QueuesArgs),
    /// Declare or check the exchanges and queues of every step.
    #[command(subcommand)]
    Topology(topology::TopologyCommand),
    /// Run a local fleet: every worker, N copies where asked, restarted when they crash.
    #[command(after_help = "Example:\n  warren up --scale train=3")]
    Up(fleet::UpArgs),
    /// Ask the predict step for a registered model's predictions (RPC).
    #[command(
        after_help = "Example:\n  warren predict iris --row 5.1,3.5,1.4,0.2\n  warren predict iris --row 6.3,2.9,5.6,1.8 --model-version production"
    )]
    Predict(predict::PredictArgs),
    /// Start a fleet, train and register an iris model, make a prediction, stop.
    #[command(after_help = "Example:\n  warren demo")]
    Demo,
    /// Exit 0 if a health URL answers 200 (for container health checks).
    #[command(after_help = "Example:\n  warren health http://127.0.0.1:9000/readyz")]
    Health {
        /// The URL (http only).
        url: String,
    },
}

/// A failure with the exit code it deserves.
#[derive(Debug)]
pub struct Fail {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Fail {
    /// Bad usage: exit 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self { code: 2, message: message.into() }
    }
}

/// Errors that are failures of the command (exit 1), said as they are.
macro_rules! failures {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for Fail {
            fn from(e: $t) -> Self {
                Self { code: 1, message: e.to_string() }
            }
        }
    )*};
}
failures!(
    String,
    &str,
    std::io::Error,
    serde_json::Error,
    warren::BrokerError,
    warren::SubmitError,
    warren::CallError,
    warren::TopologyError,
    warren::artifacts::ArtifactError,
    warren_schemas::models::RegistryError,
);

/// The one place an operator error becomes an exit code: 2 bad usage, 5 no broker, else 1.
impl From<warren_ops::OpsError> for Fail {
    fn from(e: warren_ops::OpsError) -> Self {
        use warren_ops::OpsError;
        let code = if e.is_usage() {
            2
        } else if e.is_timed_out() {
            submit::exit::TIMED_OUT
        } else if e.is_unreachable() {
            submit::exit::BROKER
        } else {
            1
        };
        let message = match &e {
            OpsError::Broker(b) if b.is_unreachable() => format!(
                "{e}. Start RabbitMQ with `rabbitmq-server -detached` (Debian package rabbitmq-server) or \
                 `docker compose up -d rabbitmq`, or point WARREN_AMQP_URL / --amqp-url at one"
            ),
            _ => e.to_string(),
        };
        Self { code, message }
    }
}

/// Prints a line to stdout. A closed pipe (`warren jobs | head`) ends the command quietly, as
/// it ends any Unix filter; another write error ends it with exit 1.
pub fn print(text: &str) {
    print_raw(&format!("{text}\n"));
}

/// Prints text to stdout as it is (see [`print()`]).
pub fn print_raw(text: &str) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("warren: cannot write to stdout: {e}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
}

/// Prints a JSON value on one line.
pub fn print_json(value: &serde_json::Value) {
    print(&value.to_string());
}

/// What commands return.
pub type Outcome = Result<ExitCode, Fail>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => return usage_error(&e),
        Err(e) => e.exit(),
    };
    let config = match cli.config.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warren: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.config.print_config {
        crate::print_raw(&config.render());
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        eprintln!("warren: a command is required (see `warren --help`)");
        return ExitCode::from(2);
    };
    if std::env::var_os("RUST_LOG").is_some() {
        warren::telemetry::init_with(&config.log_format);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warren: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    let blocked_limit = match &command {
        Command::Submit(a) => a.blocked_limit(),
        _ => Some(BLOCKED_LIMIT),
    };
    let result = runtime.block_on(unless_blocked(blocked_limit, async move {
        match command {
            Command::Submit(a) => submit::run(&config, a, json).await,
            Command::Status(a) => jobs::status(&config, a, json).await,
            Command::Jobs(a) => jobs::jobs(&config, a, json).await,
            Command::Dlq(c) => dlq::run(&config, *c, json).await,
            Command::Cancel(a) => cancel::run(&config, a, json).await,
            Command::Models(c) => models::run(&config, c, json).await,
            Command::Predict(a) => predict::run(&config, a, json).await,
            Command::Rerun(a) => rerun::run(&config, a, json).await,
            Command::Queues(a) => queues::run(&config, a, json).await,
            Command::Steps(a) => steps::run(&config, a, json).await,
            Command::Exporter(a) => queues::exporter(&config, a).await,
            Command::Traces(a) => traces::run(&config, a).await,
            Command::Console(a) => console::run(&config, a).await,
            Command::Topology(c) => topology::run(&config, c, json).await,
            Command::Up(a) => fleet::up(&config, a, json).await,
            Command::Demo => fleet::demo(&config, json).await,
            Command::Health { url } => health(&url, json),
        }
    }));
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("warren: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// clap's message up to its usage block, on one line (what is wrong, what is missing, and its
/// "a similar … exists" tip), naming the subcommand's help; exit 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    let text = e.to_string();
    let parts: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect();
    let line = parts.join(" ");
    let line = line.trim_start_matches("error: ");
    eprintln!("warren: {} (see `{} --help`)", if line.is_empty() { "bad usage" } else { line }, command_path(&text));
    ExitCode::from(2)
}

/// The command a clap error is about, from its usage line (`warren dlq replay`), for "see
/// `… --help`".
fn command_path(clap_text: &str) -> String {
    clap_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .map(|usage| {
            let words: Vec<&str> = usage.split_whitespace().take_while(|w| !w.starts_with(['[', '<', '-'])).collect();
            words.join(" ")
        })
        .filter(|p| p.starts_with("warren"))
        .unwrap_or_else(|| "warren".to_owned())
}

/// The command's one connection: an operator, with a message that says how to start a broker
/// when none answers (exit 5).
pub async fn connect(config: &warren::Config) -> Result<warren_ops::Operator, Fail> {
    let op = warren_ops::Operator::connect(config).await?;
    let _ = ALARMS.set(op.client().broker().blocked_changes());
    Ok(op)
}

/// The broker's resource alarms as the command's connection sees them (`connection.blocked`).
static ALARMS: std::sync::OnceLock<tokio::sync::watch::Receiver<Option<String>>> = std::sync::OnceLock::new();

/// How long a command other than `submit` waits on a broker that blocks its publishes.
const BLOCKED_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs a command; while the broker blocks publishes says so once on stderr (naming the alarm,
/// as the broker does), and gives up with exit 4 once it has been blocked for `limit`.
async fn unless_blocked(limit: Option<std::time::Duration>, command: impl Future<Output = Outcome>) -> Outcome {
    use tokio::time::{Instant, sleep_until};
    let mut command = std::pin::pin!(command);
    let mut blocked_since: Option<Instant> = None;
    let mut alarms: Option<tokio::sync::watch::Receiver<Option<String>>> = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        if alarms.is_none() {
            alarms = ALARMS.get().cloned();
        }
        let reason = alarms.as_mut().and_then(|a| a.borrow_and_update().clone());
        match (&reason, blocked_since) {
            (Some(r), None) => {
                eprintln!(
                    "warren: RabbitMQ is blocking publishes ({r}): a memory or disk alarm is in effect (`rabbitmqctl status` \
                     or the management UI's overview says which); waiting{} for it to clear",
                    limit.map(|l| format!(" up to {}", humantime::format_duration(l))).unwrap_or_default()
                );
                blocked_since = Some(Instant::now());
            }
            (None, Some(_)) => {
                eprintln!("warren: RabbitMQ takes publishes again");
                blocked_since = None;
            }
            _ => {}
        }
        let give_up = blocked_since.zip(limit).map(|(at, l)| at + l);
        tokio::select! {
            out = command.as_mut() => return out,
            _ = sleep_until(give_up.unwrap_or_else(Instant::now)), if give_up.is_some() => {
                let waited = limit.map(humantime::format_duration).map(|d| d.to_string()).unwrap_or_default();
                return Err(Fail {
                    code: submit::exit::TIMED_OUT,
                    message: format!(
                        "gave up after {waited}: RabbitMQ still blocks publishes ({}); what was sent may be taken once the \
                         alarm clears: check with `warren jobs` before trying again",
                        reason.unwrap_or_default()
                    ),
                });
            }
            // The connection is made inside the command: look for it, and for alarm changes.
            _ = tick.tick() => {}
        }
    }
}

/// Rows as an aligned plain-text table (comfy-table), `right` the columns aligned right.
pub fn table(header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> String {
    use comfy_table::{CellAlignment, Table, presets::NOTHING};
    let mut t = Table::new();
    t.load_preset(NOTHING);
    if !header.is_empty() {
        t.set_header(header.iter().copied());
    }
    for r in rows {
        t.add_row(r);
    }
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    for i in right {
        if let Some(c) = t.column_mut(*i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut text = t.to_string().lines().map(|l| l.trim_end().to_owned()).collect::<Vec<_>>().join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

/// Parses `90s`, `30m`, `2h`, `7d` into milliseconds.
pub fn parse_age(text: &str) -> Result<u64, Fail> {
    let (n, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = n.parse().map_err(|_| Fail::usage(format!("`{text}` is not an age such as 90s, 30m, 2h or 7d")))?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(Fail::usage(format!("`{text}` is not an age such as 90s, 30m, 2h or 7d"))),
    };
    Ok(n * ms)
}

fn health(url: &str, json: bool) -> Outcome {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or_else(|| Fail::usage(format!("{url} is not an http:// URL")))?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).map_err(|e| Fail::from(format!("cannot reach {url}: {e}")))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.lines().next().unwrap_or_default().to_owned();
    let ok = status.contains(" 200 ");
    if json {
        let code: Option<u16> = status.split_whitespace().nth(1).and_then(|c| c.parse().ok());
        outln!("{}", serde_json::json!({ "url": url, "ok": ok, "status": code }));
    } else if !ok {
        eprintln!("warren: {url} answered {}", if status.is_empty() { "nothing" } else { status.as_str() });
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
