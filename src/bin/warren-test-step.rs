//! A step for Warren's end-to-end tests: passes its probe on, or fails, stalls or aborts as its
//! parameters on the routing slip say.

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use warren::{Context, FanOut, StepError, Worker, cli::ConfigArgs};
use warren_e2e::{Behaviour, Probe};

/// Runs one test step against RabbitMQ.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The step this worker consumes.
    #[arg(long, env = "WARREN_STEP")]
    step: String,
    /// Behave as a worker of protocol 1.2, before the compact envelope: read only envelope
    /// version 1 (dead-letter others) and say so in the registry (a mixed fleet's old half).
    #[arg(long, env = "WARREN_TEST_PROTOCOL_1_2")]
    protocol_1_2: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

async fn handle(ctx: Context, mut probe: Probe) -> Result<FanOut<Probe>, StepError> {
    let behaviour: Behaviour = ctx.params()?;
    if behaviour.abort_on == Some(probe.seq) {
        eprintln!("aborting on probe {} as asked", probe.seq);
        std::process::abort();
    }
    if behaviour.permanent_on == Some(probe.seq) {
        return Err(StepError::permanent(format!("probe {} is refused on purpose", probe.seq)));
    }
    if ctx.attempt <= behaviour.fail_times {
        return Err(StepError::retryable(format!("transient failure {} of {}", ctx.attempt, behaviour.fail_times)));
    }
    if behaviour.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behaviour.sleep_ms)).await;
    }
    probe.hops += 1;
    Ok(FanOut(vec![probe; behaviour.fan_out.max(1) as usize]))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match args.config.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warren-test-step: {e}");
            return ExitCode::from(2);
        }
    };
    if args.config.print_config {
        print!("{}", config.render());
        return ExitCode::SUCCESS;
    }
    tracing_subscriber_init(&config.log_format);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warren-test-step: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The maximum duration of one message is the configuration's `max_duration_ms`. Health and
    // metrics as every worker serves them, when an address is configured (the recorder first:
    // the worker's metric handles are made when it is built).
    if config.health_addr.is_some() {
        warren::telemetry::metrics_recorder();
    }
    let mut builder = Worker::builder(&args.step, &config);
    if args.protocol_1_2 {
        builder = builder.reads_envelopes(&[warren::envelope::ENVELOPE_VERSION]);
    }
    let worker = builder.build();
    if let Some(addr) = config.health_addr.clone() {
        let health = worker.health();
        runtime.spawn(async move {
            if let Err(e) = warren::telemetry::serve(&addr, health).await {
                eprintln!("warren-test-step: cannot serve health on {addr}: {e}");
            }
        });
    }
    match runtime.block_on(worker.run(handle, warren::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren-test-step: {e}");
            ExitCode::FAILURE
        }
    }
}

fn tracing_subscriber_init(format: &str) {
    warren::telemetry::init_with(format);
}
