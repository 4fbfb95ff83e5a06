//! A 100-tree random forest (the penguins' species, with its preprocessing) served natively and
//! as ONNX (exported by Warren, run by tract): predictions per second for one row at a time, as
//! an RPC asks, and for batches of 1,000 rows, as a batch request scores a dataset.
//!
//! ```text
//! cargo bench -p warren-ml --bench onnx      # with RUST_BACKTRACE unset, as workers run
//! ```

use std::time::{Duration, Instant};

use warren_ml::{
    onnx::{ImportOptions, OnnxModel, export},
    table::{Table, Values},
};
use warren_schemas::Cell;

/// Runs `f` (which predicts `rows` rows) for about two seconds; rows per second.
fn rate(rows: usize, mut f: impl FnMut()) -> f64 {
    f();
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        f();
        calls += 1;
    }
    (calls as f64 * rows as f64) / started.elapsed().as_secs_f64()
}

/// `table`'s rows repeated to `n`.
fn repeat(table: &Table, n: usize) -> Table {
    let idx: Vec<usize> = (0..n).map(|i| i % table.rows().max(1)).collect();
    table.take(&idx)
}

/// Row `i` of `table`'s `columns`, as a request gives it.
fn cells(table: &Table, columns: &[String], i: usize) -> Vec<Option<Cell>> {
    columns
        .iter()
        .map(|c| match table.column(c) {
            Some(Values::F64(v)) => v[i].map(Cell::Number),
            Some(Values::Str(v)) => v[i].clone().map(Cell::Text),
            None => None,
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sample =
        export::samples(100)?.into_iter().find(|s| s.name == "penguins/random_forest").ok_or("no forest sample")?;
    let native = sample.model;
    let bytes = export::export(&native)?;
    let onnx = OnnxModel::import(&bytes, &ImportOptions::default())?;
    let columns = native.inputs();
    let row = vec![cells(&sample.test, &columns, 0)];
    let batch = repeat(&sample.test, 1000);
    let mut sink = 0usize;
    let figures = [
        ("native", "1 row", rate(1, || sink += native.predict_cells(None, &row).map_or(0, |_| 1))),
        ("ONNX (tract)", "1 row", rate(1, || sink += onnx.predict_cells(None, &row).map_or(0, |_| 1))),
        ("native", "1,000 rows", rate(1000, || sink += native.predict_table(&batch).map_or(0, |(_, r)| r.len()))),
        ("ONNX (tract)", "1,000 rows", rate(1000, || sink += onnx.predict_table(&batch).map_or(0, |(_, r)| r.len()))),
    ];
    println!("A 100-tree random forest with its preprocessing (penguins: 7 columns, 12 features), one core:\n");
    println!("| served as | request | predictions/s | µs per request |");
    println!("| --- | --- | --- | --- |");
    for (served, request, per_second) in figures {
        let rows = if request == "1 row" { 1.0 } else { 1000.0 };
        println!("| {served} | {request} | {per_second:.0} | {:.1} |", rows / per_second * 1e6);
    }
    println!("\n(ONNX file: {} bytes; {sink} checks)", bytes.len());
    if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
        println!(
            "RUST_BACKTRACE is set: errors tract makes and discards inside a run capture backtraces, which cuts \
             its figures by about 4x; workers run without it (unset it to measure what they do)"
        );
    }
    Ok(())
}
