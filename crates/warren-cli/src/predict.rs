//! `warren predict`: asks the `predict` step for predictions over RPC, as a client would — the
//! quickest way to see a registered model answer (after `docker compose up`, say).

use std::{process::ExitCode, time::Duration};

use clap::Args;
use warren::{CallError, Config};
use warren_schemas::{Cell, PredictRequest, Predictions};

use crate::{Fail, Outcome};

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Registered model name.
    model: String,
    /// A row of raw values, comma-separated, in the model's order (or `--columns`'s): numbers,
    /// categories as text, and empty or `NA` for a gap; repeat for several rows.
    #[arg(long = "row", value_name = "V,V,...", required = true)]
    rows: Vec<String>,
    /// The columns the row values are, comma-separated, when not in the model's order.
    #[arg(long, value_name = "NAME,NAME,...")]
    columns: Option<String>,
    /// A version number or alias (`latest` when absent).
    #[arg(long = "model-version", value_name = "VERSION")]
    model_version: Option<String>,
    /// How long to wait for the answer, e.g. `30s`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Parses `Torgersen,39.1,,181`: a number, a missing value (empty, `NA`, …: ingest's missing
/// cells), or text (a category); the predict step checks each against the model's columns.
fn parse_row(text: &str) -> Vec<Option<Cell>> {
    text.split(',')
        .map(|v| {
            let v = v.trim();
            if warren_schemas::params::MISSING.contains(&v) {
                None
            } else {
                Some(v.parse::<f64>().map_or_else(|_| Cell::Text(v.to_owned()), Cell::Number))
            }
        })
        .collect()
}

pub async fn run(config: &Config, a: PredictArgs, json: bool) -> Outcome {
    let rows: Vec<Vec<Option<Cell>>> = a.rows.iter().map(|r| parse_row(r)).collect();
    let columns = a.columns.as_deref().map(|c| c.split(',').map(|s| s.trim().to_owned()).collect());
    let request =
        PredictRequest { model: a.model.clone(), version: a.model_version, rows: rows.clone(), columns, dataset: None };
    let client = crate::connect(config).await?.into_client();
    let answer: Result<Predictions, CallError> = client.call("predict", rmpv::Value::Nil, request, a.timeout).await;
    client.broker().close().await;
    let p = match answer {
        Ok(p) => p,
        Err(CallError::Remote(e)) => return Err(Fail::from(format!("the predict step refused: {}", e.message))),
        Err(CallError::Timeout(t)) => {
            return Err(Fail::from(format!(
                "no answer within {t:?}: is a predict worker running? (`warren steps predict` lists them)"
            )));
        }
        Err(e) => return Err(Fail::from(e)),
    };
    if json {
        outln!("{}", serde_json::to_string(&p)?);
    } else {
        let answers: Vec<String> = if p.labels.is_empty() {
            p.values.iter().map(f64::to_string).collect()
        } else {
            // With the label's probability, when the model gives them.
            p.labels
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let k = p.classes.iter().position(|c| c == l);
                    match k.and_then(|k| p.probabilities.get(i)?.get(k)) {
                        Some(prob) => format!("{l} ({prob:.3})"),
                        None => l.clone(),
                    }
                })
                .collect()
        };
        for (row, answer) in a.rows.iter().zip(&answers) {
            outln!("{row} → {answer}");
        }
        outln!("model {} version {}", p.model, p.version);
    }
    Ok(ExitCode::SUCCESS)
}
