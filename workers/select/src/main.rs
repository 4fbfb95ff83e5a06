//! `warren-select`: Collects a job's trials and picks the best model exactly once.

fn main() -> std::process::ExitCode {
    warren::cli::worker_main(
        env!("CARGO_PKG_NAME"),
        "select",
        warren_steps::STEP_VERSION,
        "Collects a job's trials and picks the best model exactly once.",
        warren_steps::options("select"),
        warren_steps::select::Select,
    )
}
