//! `warren-train`: Fits one candidate (logistic regression, decision tree, linear, elastic net) and stores the model.

fn main() -> std::process::ExitCode {
    warren::cli::worker_main(
        env!("CARGO_PKG_NAME"),
        "train",
        warren_steps::STEP_VERSION,
        "Fits one candidate (logistic regression, decision tree, linear, elastic net) and stores the model.",
        warren_steps::options("train"),
        warren_steps::train::handle,
    )
}
