//! `textstats-count`: the `count` step of the textstats pipeline.

fn main() -> std::process::ExitCode {
    warren::cli::worker_main(
        env!("CARGO_BIN_NAME"),
        "count",
        textstats::VERSION,
        "Counts the words of a document and keeps the most frequent.",
        warren::cli::StepOptions::default().params_of::<textstats::CountParams>(),
        textstats::count,
    )
}
