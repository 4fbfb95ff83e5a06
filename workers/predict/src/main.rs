//! `warren-predict`: Serves predictions from a registered model over RPC, or batch-scores a dataset.
use warren::cli::{StepOptions, worker_main};

fn main() -> std::process::ExitCode {
    worker_main(
        env!("CARGO_PKG_NAME"),
        "predict",
        warren_steps::STEP_VERSION,
        "Serves predictions from a registered model over RPC, or batch-scores a dataset.",
        StepOptions::default(),
        warren_steps::predict::handle,
    )
}
