//! `warren-evaluate`: Held-out metrics and a JSON report.

fn main() -> std::process::ExitCode {
    warren::cli::worker_main(
        env!("CARGO_PKG_NAME"),
        "evaluate",
        warren_steps::STEP_VERSION,
        "Held-out metrics and a JSON report.",
        warren_steps::options("evaluate"),
        warren_steps::evaluate::handle,
    )
}
