//! `warren-features`: Seeded, stratified train/test split and the preprocessing (columns, gaps, categories, scaling) fitted on its training rows.

fn main() -> std::process::ExitCode {
    warren::cli::worker_main(
        env!("CARGO_PKG_NAME"),
        "features",
        warren_steps::STEP_VERSION,
        "Seeded, stratified train/test split and the preprocessing (columns, gaps, categories, scaling) fitted on its training rows.",
        warren_steps::options("features"),
        warren_steps::features::handle,
    )
}
