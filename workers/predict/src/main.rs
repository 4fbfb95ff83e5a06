//! `warren-predict`: Serves predictions from a registered model over RPC, or batch-scores a dataset.

fn main() -> std::process::ExitCode {
    warren::cli::worker_main(
        env!("CARGO_PKG_NAME"),
        "predict",
        warren_steps::STEP_VERSION,
        "Serves predictions from a registered model over RPC, or batch-scores a dataset.",
        warren_steps::options("predict"),
        warren_steps::predict::handle,
    )
}
