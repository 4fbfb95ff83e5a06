//! `warren-train`: Fits one candidate (logistic regression, decision tree, linear, elastic net) and stores the model.
use std::time::Duration;
use warren::cli::{StepOptions, worker_main};

fn main() -> std::process::ExitCode {
    worker_main(
        env!("CARGO_PKG_NAME"),
        "train",
        warren_steps::STEP_VERSION,
        "Fits one candidate (logistic regression, decision tree, linear, elastic net) and stores the model.",
        StepOptions { max_duration: Some(Duration::from_secs(2 * 3600)), concurrency: Some(1) },
        warren_steps::train::handle,
    )
}
