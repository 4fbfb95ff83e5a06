//! `warren-train`: Fits one candidate (logistic or linear regression, elastic net, decision tree, random forest, gradient boosting) and stores the model.

fn main() -> std::process::ExitCode {
    warren::cli::worker_main(
        env!("CARGO_PKG_NAME"),
        "train",
        warren_steps::STEP_VERSION,
        "Fits one candidate (logistic or linear regression, elastic net, decision tree, random forest, gradient boosting) and stores the model.",
        warren_steps::options("train"),
        warren_steps::train::handle,
    )
}
