//! `warren-chaos`: runs the chaos scenarios on RabbitMQ nodes of its own and prints one table
//! row per scenario (see `docs/OPERATIONS.md`). Needs root (it starts nodes as the `rabbitmq`
//! user) and the `warren-test-step` binary next to itself (`cargo build --release --bins`).
//!
//! The conformance kit: `--exec -- PROGRAM ARGS` runs the same scenarios against a step in any
//! language under `warren-exec` (`--exec -- python3 tests/steps/probe_step.py`), and
//! `--worker-bin PATH` against a worker that speaks AMQP itself.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use warren_e2e::chaos::{self, Options, Scenario};

/// Breaks a running Warren pipeline on purpose and counts what was lost, duplicated,
/// dead-lettered or left over.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Examples:\n  cargo run --release --bin warren-chaos -- --scenario kills --jobs 2000\n  \
                  target/release/warren-chaos --jobs 2000 --exec -- python3 tests/steps/probe_step.py"
)]
struct Args {
    /// Scenarios to run (kills, rolling, broker, cluster, hostile, retries, partition, alarm); all when none is named.
    #[arg(long = "scenario", value_parser = parse_scenario)]
    scenarios: Vec<Scenario>,
    /// Healthy jobs per scenario.
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// Rounds of rolling restarts.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Hostile messages in the hostile scenario.
    #[arg(long, default_value_t = 100)]
    hostile: usize,
    /// Size of the huge hostile bodies, in MB.
    #[arg(long, default_value_t = 50)]
    huge_mb: usize,
    /// Folder for node data and worker logs.
    #[arg(long, default_value = "/tmp/warren-chaos")]
    dir: PathBuf,
    /// A worker of your own instead of warren-test-step: it takes `--step STEP` and the
    /// `WARREN_*` environment, and passes `warren.test.Probe/1` on as warren-test-step does.
    #[arg(long, value_name = "PATH", conflicts_with = "exec")]
    worker_bin: Option<PathBuf>,
    /// The step's program, run under warren-exec (next to this binary): a step in any language
    /// that behaves as tests/steps/probe_step.py does.
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "PROGRAM")]
    exec: Vec<String>,
    /// Messages in flight per worker, at most (with --exec, one child process each; default 2).
    #[arg(long)]
    max_concurrency: Option<usize>,
}

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    Scenario::parse(s).ok_or_else(|| {
        format!("unknown scenario {s:?} (kills, rolling, broker, cluster, hostile, retries, partition, alarm)")
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    warren::telemetry::init();
    let beside =
        |name: &str| std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join(name))).filter(|p| p.exists());
    let (worker_bin, step_args, max_concurrency) = match (args.worker_bin, args.exec.is_empty()) {
        (Some(bin), _) => (Some(bin), Vec::new(), args.max_concurrency),
        (None, true) => (beside("warren-test-step"), Vec::new(), args.max_concurrency),
        (None, false) => {
            let program = args.exec.iter().skip_while(|a| *a == "--").cloned();
            let step_args = std::iter::once("--".to_owned()).chain(program).collect();
            (beside("warren-exec"), step_args, Some(args.max_concurrency.unwrap_or(2)))
        }
    };
    let Some(worker_bin) = worker_bin.filter(|p| p.exists()) else {
        eprintln!(
            "warren-chaos: the worker binary is missing (warren-test-step or warren-exec next to this binary: run `cargo build --release --bins` first)"
        );
        return ExitCode::from(2);
    };
    let opts = Options {
        worker_bin,
        step_args,
        max_concurrency,
        dir: args.dir,
        jobs: args.jobs,
        rounds: args.rounds,
        hostile: args.hostile,
        huge_body: args.huge_mb * 1024 * 1024,
    };
    let scenarios = if args.scenarios.is_empty() { Scenario::ALL.to_vec() } else { args.scenarios };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warren-chaos: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rows = Vec::new();
    let mut failed = false;
    for s in scenarios {
        eprintln!("== {}", s.name());
        match runtime.block_on(chaos::run(s, &opts)) {
            Ok(row) => {
                println!("{}\n{}", chaos::Row::header(), row.line());
                for d in &row.healthy_dead {
                    println!("  healthy dead letter: {d}");
                }
                for q in &row.left_in {
                    println!("  left in {q}");
                }
                failed |= !row.ok();
                rows.push(row);
            }
            Err(e) => {
                eprintln!("warren-chaos: {}: {e}", s.name());
                failed = true;
            }
        }
    }
    println!("\n{}", chaos::Row::header());
    for row in &rows {
        println!("{}", row.line());
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
