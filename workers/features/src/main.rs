//! `warren-features`: Seeded, stratified train/test split and standardisation fitted on the training rows.
use warren::cli::{StepOptions, worker_main};

fn main() -> std::process::ExitCode {
    worker_main(
        env!("CARGO_PKG_NAME"),
        "features",
        warren_steps::STEP_VERSION,
        "Seeded, stratified train/test split and standardisation fitted on the training rows.",
        StepOptions::default(),
        warren_steps::features::handle,
    )
}
