//! Starts a three-step pipeline (three workers in this process, each with its own connection),
//! submits one job and prints its history from the events stream.
//!
//! ```sh
//! cargo run -p warren --example quickstart
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use warren::{Client, Config, Context, EventKind, Hop, JobSpec, Names, Payload, StepError, Worker};

/// The payload: a sentence that each step works on.
#[derive(Debug, Serialize, Deserialize)]
struct Text {
    text: String,
}

impl Payload for Text {
    const SCHEMA: &'static str = "example.Text/1";
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Suffix {
    suffix: String,
}

async fn upper(_: Context, t: Text) -> Result<Text, StepError> {
    Ok(Text { text: t.text.to_uppercase() })
}

async fn append(ctx: Context, t: Text) -> Result<Text, StepError> {
    let p: Suffix = ctx.params()?;
    Ok(Text { text: format!("{}{}", t.text, p.suffix) })
}

async fn print(ctx: Context, t: Text) -> Result<Text, StepError> {
    println!("job {} done: {:?}", ctx.job_id, t.text);
    Ok(t)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let mut config = Config::load(None, &[])?;
    if std::env::var("WARREN_NAMESPACE").is_err() {
        config.namespace = "quickstart".into();
    }
    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let (mut workers, mut health) = (Vec::new(), Vec::new());
    let w = Worker::builder("upper", &config).build();
    health.push(w.health());
    workers.push(tokio::spawn(w.run(upper, until_stopped(stopped.clone()))));
    let w = Worker::builder("append", &config).build();
    health.push(w.health());
    workers.push(tokio::spawn(w.run(append, until_stopped(stopped.clone()))));
    let w = Worker::builder("print", &config).build();
    health.push(w.health());
    workers.push(tokio::spawn(w.run(print, until_stopped(stopped.clone()))));

    let client = Client::connect(&config).await?;
    let mut events = warren::events::subscribe(client.broker(), &Names::new(&config.namespace)).await?;
    // Each worker declares its own queue; wait until all three consume.
    while !health.iter().all(|h| h.is_ready()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let suffix: std::collections::BTreeMap<&str, &str> = [("suffix", "!")].into();
    let slip = vec![Hop::new("upper"), Hop::with_params("append", &suffix)?, Hop::new("print")];
    let job = client.submit(&JobSpec::new("quickstart", slip, Text { text: "hello warren".into() })).await?;
    println!("submitted job {job}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if e.job_id != job {
            continue;
        }
        println!("  {:<9} {:<7} attempt {} by {}", e.kind, e.step, e.attempt, e.worker);
        if e.kind == EventKind::Succeeded && e.last_step {
            break;
        }
    }
    let _ = stop.send(true);
    for w in workers {
        w.await??;
    }
    Ok(())
}
