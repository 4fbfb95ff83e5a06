//! `warren-tune`: Fans out one train message per hyperparameter candidate (grid or random search).

fn main() -> std::process::ExitCode {
    warren::cli::worker_main(
        env!("CARGO_PKG_NAME"),
        "tune",
        warren_steps::STEP_VERSION,
        "Fans out one train message per hyperparameter candidate (grid or random search).",
        warren_steps::options("tune"),
        warren_steps::tune::handle,
    )
}
