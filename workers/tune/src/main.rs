//! `warren-tune`: Fans out one train message per hyperparameter candidate (grid or random search).
use warren::cli::{StepOptions, worker_main};

fn main() -> std::process::ExitCode {
    worker_main(
        env!("CARGO_PKG_NAME"),
        "tune",
        warren_steps::STEP_VERSION,
        "Fans out one train message per hyperparameter candidate (grid or random search).",
        StepOptions::default(),
        warren_steps::tune::handle,
    )
}
