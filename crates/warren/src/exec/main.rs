//! `warren-exec`'s whole `main`: flags, the first child's descriptor, the worker.

use std::process::ExitCode;

use super::{Exec, ExecCommand};
use crate::cli::{ConfigArgs, StepOptions};

#[derive(Debug, clap::Parser)]
#[command(
    name = "warren-exec",
    about = "Runs a step written in any language as child processes speaking Warren's exec protocol",
    after_help = "Example:\n  warren-exec -- python3 -m wordcount\n  warren-exec --concurrency 4 -- ./my-step --model big"
)]
struct ExecArgs {
    /// Print the step's descriptor (as its program describes it) and exit.
    #[arg(long)]
    describe: bool,
    /// The step the program must say it is (a fleet file's `step`); unset: whatever it says.
    #[arg(long, value_name = "STEP")]
    step: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
    /// The step's program and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// The `main` of `warren-exec`: runs the program after `--` as the step's children. Bad flags,
/// a program that cannot start or a descriptor that is not one print one line and exit 2.
pub fn exec_main() -> ExitCode {
    use clap::Parser;
    let args = ExecArgs::parse();
    let bin = "warren-exec";
    let fail = |message: String, code: u8| {
        eprintln!("{bin}: {message}");
        ExitCode::from(code)
    };
    let Some((program, rest)) = args.command.split_first() else {
        return fail("give the step's program after `--`".into(), 2);
    };
    let env = args.step.iter().map(|s| ("WARREN_STEP".to_owned(), s.clone())).collect();
    let command = ExecCommand { program: program.clone(), args: rest.to_vec(), env };
    let early = match args.config.load() {
        Ok(c) => c,
        Err(e) => return fail(e.to_string(), 2),
    };
    if !args.describe && !args.config.print_config {
        crate::telemetry::init_with(&early.log_format);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}"), 1),
    };
    let exec = match runtime.block_on(Exec::start(command)) {
        Ok(exec) => exec,
        Err(e) => return fail(e.to_string(), if e.is_usage() { 2 } else { 1 }),
    };
    let mut descriptor = exec.descriptor().clone();
    if let Some(step) = &args.step
        && step != &descriptor.step
    {
        runtime.block_on(exec.close());
        return fail(format!("the program describes step `{}`, not `{step}`", descriptor.step), 2);
    }
    let options = StepOptions {
        max_duration: descriptor.max_duration_ms.map(std::time::Duration::from_millis),
        // One child per unit of concurrency: unless the step or the configuration says, one per core.
        concurrency: descriptor
            .concurrency
            .or_else(|| std::thread::available_parallelism().ok().map(std::num::NonZeroUsize::get)),
        ..StepOptions::default()
    };
    let config = match crate::cli::configure(bin, &descriptor.step, &args.config, args.describe, &options) {
        Ok(c) => c,
        Err(code) => {
            runtime.block_on(exec.close());
            return code;
        }
    };
    descriptor.concurrency = Some(config.concurrency);
    if args.describe || args.config.print_config {
        runtime.block_on(exec.close());
        let text = if args.describe { serde_json::to_string_pretty(&descriptor).ok() } else { Some(config.render()) };
        return match text {
            Some(t) => {
                println!("{}", t.trim_end());
                ExitCode::SUCCESS
            }
            None => fail("cannot encode the descriptor".into(), 1),
        };
    }
    let (step, version) = (descriptor.step.clone(), descriptor.version.clone());
    runtime.spawn({
        let exec = exec.clone();
        let children = config.concurrency;
        async move { exec.warm(children).await }
    });
    let fan_out = descriptor.fan_out;
    let closer = exec.clone();
    let ran = if fan_out {
        crate::cli::run_worker::<rmpv::Value, crate::FanOut<rmpv::Value>, _>(
            &runtime, bin, &step, &version, &options, descriptor, &config, exec,
        )
    } else {
        crate::cli::run_worker::<rmpv::Value, rmpv::Value, _>(
            &runtime, bin, &step, &version, &options, descriptor, &config, exec,
        )
    };
    runtime.block_on(closer.close());
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
