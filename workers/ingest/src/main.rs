//! `warren-ingest`: Loads a CSV file or a shipped dataset into an Arrow IPC dataset artifact.
use warren::cli::{StepOptions, worker_main};

fn main() -> std::process::ExitCode {
    worker_main(
        env!("CARGO_PKG_NAME"),
        "ingest",
        warren_steps::STEP_VERSION,
        "Loads a CSV file or a shipped dataset into an Arrow IPC dataset artifact.",
        StepOptions::default(),
        warren_steps::ingest::handle,
    )
}
