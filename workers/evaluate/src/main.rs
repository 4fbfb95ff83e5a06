//! `warren-evaluate`: Held-out metrics and a JSON report.
use warren::cli::{StepOptions, worker_main};

fn main() -> std::process::ExitCode {
    worker_main(
        env!("CARGO_PKG_NAME"),
        "evaluate",
        warren_steps::STEP_VERSION,
        "Held-out metrics and a JSON report.",
        StepOptions::default(),
        warren_steps::evaluate::handle,
    )
}
