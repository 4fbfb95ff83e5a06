//! `warren-register`: Registers a model version with lineage, behind a promotion gate.

fn main() -> std::process::ExitCode {
    warren::cli::worker_main(
        env!("CARGO_PKG_NAME"),
        "register",
        warren_steps::STEP_VERSION,
        "Registers a model version with lineage, behind a promotion gate.",
        warren_steps::options("register"),
        warren_steps::register::handle,
    )
}
