//! `textstats-report`: the `report` step of the textstats pipeline.

fn main() -> std::process::ExitCode {
    warren::cli::worker_main(
        env!("CARGO_BIN_NAME"),
        "report",
        textstats::VERSION,
        "Writes a Markdown report of the word counts to the artifact store.",
        warren::cli::StepOptions::default().params_of::<textstats::ReportParams>(),
        textstats::report,
    )
}
