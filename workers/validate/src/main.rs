//! `warren-validate`: Checks a dataset: missing values, non-numeric features, constant columns, row and class counts.
use warren::cli::{StepOptions, worker_main};

fn main() -> std::process::ExitCode {
    worker_main(
        env!("CARGO_PKG_NAME"),
        "validate",
        warren_steps::STEP_VERSION,
        "Checks a dataset: missing values, non-numeric features, constant columns, row and class counts.",
        StepOptions::default(),
        warren_steps::validate::handle,
    )
}
