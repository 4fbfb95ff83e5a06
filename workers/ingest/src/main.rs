//! `warren-ingest`: Loads a CSV file or a shipped dataset into an Arrow IPC dataset artifact.

fn main() -> std::process::ExitCode {
    warren::cli::worker_main(
        env!("CARGO_PKG_NAME"),
        "ingest",
        warren_steps::STEP_VERSION,
        "Loads a CSV file or a shipped dataset into an Arrow IPC dataset artifact.",
        warren_steps::options("ingest"),
        warren_steps::ingest::handle,
    )
}
