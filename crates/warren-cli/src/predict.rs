//! `warren predict`: asks the `predict` step for predictions over RPC, as a client would — the
//! quickest way to see a registered model answer (after `docker compose up`, say).

use std::{process::ExitCode, time::Duration};

use clap::Args;
use warren::{CallError, Config};
use warren_schemas::{PredictRequest, Predictions};

use crate::{Fail, Outcome};

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Registered model name.
    model: String,
    /// A row of feature values, comma-separated, in the model's order (or `--columns`'s);
    /// repeat for several rows.
    #[arg(long = "row", value_name = "V,V,...", required = true)]
    rows: Vec<String>,
    /// The features the row values are, comma-separated, when not in the model's order.
    #[arg(long, value_name = "NAME,NAME,...")]
    columns: Option<String>,
    /// A version number or alias (`latest` when absent).
    #[arg(long = "model-version", value_name = "VERSION")]
    model_version: Option<String>,
    /// How long to wait for the answer, e.g. `30s`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Parses `5.1,3.5,1.4,0.2`; a value that is not a number is a usage error naming it.
fn parse_row(text: &str) -> Result<Vec<f64>, Fail> {
    text.split(',')
        .map(|v| {
            let v = v.trim();
            v.parse::<f64>().map_err(|_| Fail::usage(format!("--row {text:?}: {v:?} is not a number")))
        })
        .collect()
}

pub async fn run(config: &Config, a: PredictArgs, json: bool) -> Outcome {
    let rows = a.rows.iter().map(|r| parse_row(r)).collect::<Result<Vec<_>, _>>()?;
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
        let answers: Vec<String> =
            if p.labels.is_empty() { p.values.iter().map(f64::to_string).collect() } else { p.labels.clone() };
        for (row, answer) in rows.iter().zip(&answers) {
            outln!("{row:?} → {answer}");
        }
        outln!("model {} version {}", p.model, p.version);
    }
    Ok(ExitCode::SUCCESS)
}
