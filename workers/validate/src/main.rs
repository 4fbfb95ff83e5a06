//! `warren-validate`: Checks a dataset: missing values, non-numeric features, constant columns, row and class counts.

fn main() -> std::process::ExitCode {
    warren::cli::worker_main(
        env!("CARGO_PKG_NAME"),
        "validate",
        warren_steps::STEP_VERSION,
        "Checks a dataset: missing values, non-numeric features, constant columns, row and class counts.",
        warren_steps::options("validate"),
        warren_steps::validate::handle,
    )
}
