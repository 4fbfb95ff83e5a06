//! `warren-select`: Collects a job's trials and picks the best model exactly once.
use warren::cli::{StepOptions, worker_main};

fn main() -> std::process::ExitCode {
    worker_main(
        env!("CARGO_PKG_NAME"),
        "select",
        warren_steps::STEP_VERSION,
        "Collects a job's trials and picks the best model exactly once.",
        StepOptions::default(),
        warren_steps::select::handle,
    )
}
