//! `warren-features`: Seeded, stratified train/test split and standardisation fitted on the training rows.

fn main() -> std::process::ExitCode {
    warren::cli::worker_main(
        env!("CARGO_PKG_NAME"),
        "features",
        warren_steps::STEP_VERSION,
        "Seeded, stratified train/test split and standardisation fitted on the training rows.",
        warren_steps::options("features"),
        warren_steps::features::handle,
    )
}
