//! `warren-register`: Registers a model version with lineage, behind a promotion gate.
use warren::cli::{StepOptions, worker_main};

fn main() -> std::process::ExitCode {
    worker_main(
        env!("CARGO_PKG_NAME"),
        "register",
        warren_steps::STEP_VERSION,
        "Registers a model version with lineage, behind a promotion gate.",
        StepOptions::default(),
        warren_steps::register::handle,
    )
}
