//! Parity with scikit-learn: every algorithm on each data set of `warren_ml::parity::DATA` over
//! 10 seeds, the whole chain (preprocessing fitted on the training rows, then the model): Warren's
//! held-out accuracy / R² next to scikit-learn's `Pipeline(ColumnTransformer(...), estimator)` on
//! the same splits, and the time of one fit beside it.
//!
//! ```text
//! cargo bench -p warren-ml --bench parity                 # the table
//! cargo bench -p warren-ml --bench parity -- --export DIR # the splits, for parity/sklearn_parity.py
//! ```
//!
//! scikit-learn's figures are read from `parity/sklearn.json`, written once by
//! `parity/sklearn_parity.py` (see its header) from the splits this benchmark exports.

use std::{fmt::Write as _, time::Instant};

use warren_ml::parity::{self, Run};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--export") {
        let dir = args.get(i + 1).ok_or("--export takes a folder")?;
        let n = parity::export(std::path::Path::new(dir))?;
        println!("wrote {n} splits to {dir}");
        return Ok(());
    }
    let reference = parity::Reference::load()?;
    let started = Instant::now();
    let mut out = String::new();
    writeln!(
        out,
        "| data set | algorithm | metric | Warren mean | scikit-learn mean | difference | Warren min | scikit-learn min | Warren fit ms | scikit-learn fit ms | time ratio |"
    )?;
    writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")?;
    for run in parity::RUNS {
        let Run { dataset, algorithm, .. } = *run;
        let measured = parity::measure(run)?;
        let ours = &measured.scores;
        let theirs = reference
            .scores(dataset, algorithm)
            .ok_or_else(|| format!("no scikit-learn figures for {dataset}/{algorithm}"))?;
        let (m, tm) = (parity::mean(ours), parity::mean(theirs));
        let (lo, tlo) = (parity::min(ours), parity::min(theirs));
        let ms = 1000.0 * measured.fit.as_secs_f64();
        let (their_ms, ratio) = match reference.fit(dataset, algorithm) {
            Some(t) => (
                format!("{:.2}", 1000.0 * t.as_secs_f64()),
                format!("{:.2}", measured.fit.as_secs_f64() / t.as_secs_f64()),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        writeln!(
            out,
            "| {dataset} | {algorithm} | {} | {:.2} | {:.2} | {:+.2} | {:.2} | {:.2} | {ms:.2} | {their_ms} | {ratio} |",
            run.metric(),
            100.0 * m,
            100.0 * tm,
            100.0 * (m - tm),
            100.0 * lo,
            100.0 * tlo
        )?;
    }
    print!("{out}");
    println!(
        "scores ×100 on the held-out rows, mean and minimum over splits 0..{} (each the mean of {} model seeds); fit ms: the mean of one fit on a split's training rows, preprocessing included (time ratio: Warren's ÷ scikit-learn's, below 1 is faster); scikit-learn {} ({:.1} s)",
        parity::SEEDS,
        parity::REPEATS,
        reference.version,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
