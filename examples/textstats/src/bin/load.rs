//! `textstats-load`: the `load` step of the textstats pipeline.

fn main() -> std::process::ExitCode {
    warren::cli::worker_main(
        env!("CARGO_BIN_NAME"),
        "load",
        textstats::VERSION,
        "Reads a text file (uploaded, or in the data root) and stores it normalised.",
        warren::cli::StepOptions { file_params: vec!["file".into()], ..Default::default() }
            .params_of::<textstats::LoadParams>(),
        textstats::load,
    )
}
