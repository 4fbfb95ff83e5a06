//! `warren rerun JOB --from STEP`: a new job that starts at STEP from what the old job handed to
//! it, so everything upstream (datasets, features, trained models) is reused, not recomputed.

use std::process::ExitCode;

use uuid::Uuid;
use warren::{
    Config, Envelope, Names,
    artifacts::ArtifactStore,
    envelope::{self, EnvelopeMeta},
    worker::inputs_prefix,
};

use crate::{Fail, Outcome, connect, dlq::Audit};

/// A recorded step input (see `warren::worker::RecordedInput`).
#[derive(serde::Deserialize)]
struct Recorded {
    schema: String,
    slip: Vec<warren::Hop>,
    payload: rmpv::Value,
}

/// `warren rerun` arguments.
#[derive(Debug, clap::Args)]
pub struct RerunArgs {
    /// The finished (or dead) job to start from.
    job: String,
    /// The step to start at; the old job's inputs to it are reused.
    #[arg(long, value_name = "STEP")]
    from: String,
    /// Change a parameter of this or a later step, e.g. `--set register.model=iris-b` (repeatable).
    #[arg(long = "set", value_name = "STEP.PARAM=VALUE")]
    set: Vec<String>,
    #[command(flatten)]
    audit: Audit,
}

/// `warren rerun`.
pub async fn run(config: &Config, args: RerunArgs, json: bool) -> Outcome {
    let old: Uuid = args.job.parse().map_err(|_| Fail::usage(format!("`{}` is not a job id (a UUID)", args.job)))?;
    let (new_job, messages) =
        rerun(config, old, &args.from, &args.set, args.audit.actor(), args.audit.reason.clone()).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "job": new_job.to_string(), "rerun_of": old.to_string(), "from": args.from, "messages": messages })
        );
    } else {
        println!("{new_job}");
        eprintln!(
            "rerun of {old} from {}: new job {new_job} ({messages} message(s)); follow it with `warren status {new_job}`",
            args.from
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A new job that starts at `from` from what job `old` handed to it, with `set`
/// (`step.param=value`) applied and checked; recorded with `actor` and `reason`. Returns the new
/// job's id and how many messages it started with.
pub async fn rerun(
    config: &Config,
    old: Uuid,
    from: &str,
    set: &[String],
    actor: String,
    reason: Option<String>,
) -> Result<(Uuid, usize), Fail> {
    let mut sets = Vec::new();
    for item in set {
        let (path, v) =
            item.split_once('=').ok_or_else(|| Fail::usage(format!("--set {item}: expected STEP.PARAM=VALUE")))?;
        let (step, param) =
            path.split_once('.').ok_or_else(|| Fail::usage(format!("--set {item}: expected STEP.PARAM=VALUE")))?;
        let value = crate::dlq::parse_value(v).map_err(|e| Fail::usage(format!("--set {path}: {e}")))?;
        sets.push((step.to_owned(), param.to_owned(), value));
    }
    // The job's pipeline, from its events (its UUIDv7 says when to read from).
    let made_ms = old.get_timestamp().map(|t| t.to_unix()).map_or(0, |(s, n)| s * 1000 + u64::from(n) / 1_000_000);
    let events = crate::jobs::read_all(config, warren::events::From::Time(made_ms.saturating_sub(60_000))).await?;
    let pipeline = events
        .iter()
        .find(|e| e.job_id == old && !e.pipeline.is_empty())
        .map(|e| e.pipeline.to_string())
        .ok_or_else(|| Fail::from(format!("no events for job {old} in namespace {}", config.namespace)))?;
    let store = ArtifactStore::open(&config.artifacts).map_err(|e| Fail::usage(format!("--artifacts: {e}")))?;
    let keys = store.list(&inputs_prefix(&pipeline, old, from)).await?;
    if keys.is_empty() {
        let ran: std::collections::BTreeSet<&str> =
            events.iter().filter(|e| e.job_id == old).map(|e| &*e.step).collect();
        return Err(Fail::usage(format!(
            "job {old} recorded no input for step {} in {} (its steps: {}; the first step has none: submit its spec again)",
            from,
            config.artifacts,
            ran.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }

    let registry = {
        let client = connect(config).await?;
        crate::steps::registry(&client, config).await?
    };
    let new_job = Uuid::now_v7();
    let mut bodies = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let bytes = store.get(key).await?;
        let record: Recorded = rmp_serde::from_slice(&bytes).map_err(|e| Fail::from(format!("{key}: {e}")))?;
        let mut env = Envelope {
            v: envelope::ENVELOPE_VERSION,
            job_id: old,
            message_id: envelope::derive_message_id(old, key, 0),
            causation_id: None,
            pipeline: pipeline.clone(),
            slip: record.slip,
            schema: record.schema,
            payload: record.payload,
        };
        for (step, param, value) in &sets {
            let hop = env.slip.iter_mut().find(|h| &h.step == step).ok_or_else(|| {
                Fail::usage(format!("--set {step}.{param}: step {step} does not come at or after {}", from))
            })?;
            let mut map = match std::mem::replace(&mut hop.params, rmpv::Value::Nil) {
                rmpv::Value::Map(m) => m,
                _ => Vec::new(),
            };
            map.retain(|(k, _)| k.as_str() != Some(param.as_str()));
            map.push((param.as_str().into(), value.clone()));
            if let Some(d) = registry.descriptor(step) {
                let json = serde_json::to_value(rmpv::Value::Map(map.clone()))?;
                if let Err(e) = warren::spec::check_params(d, &json) {
                    return Err(Fail::usage(format!("--set {step}.{param}: {e}")));
                }
            }
            hop.params = rmpv::Value::Map(map);
        }
        env.job_id = new_job;
        env.message_id = envelope::derive_message_id(new_job, "rerun", i);
        let body = env.encode().map_err(|e| Fail::from(format!("cannot encode: {e}")))?;
        let meta = EnvelopeMeta { job_id: new_job, message_id: env.message_id, step: from, schema: &env.schema };
        bodies.push((body, envelope::properties(&meta, 1)));
    }

    let client = connect(config).await?;
    let names = Names::new(&config.namespace);
    let publisher = client.broker().publisher().await?;
    for (body, props) in bodies {
        publisher.publish(&names.steps_exchange(), from, &body, props).await?;
    }
    drop(publisher);
    client.broker().close().await;
    let action = warren::events::OperatorAction {
        action: "rerun".into(),
        actor,
        reason,
        step: from.to_owned(),
        job: Some(new_job),
        filter: format!("rerun of {old} from {}", from),
        count: keys.len(),
        ids: vec![old.to_string()],
        changes: set.to_vec(),
    };
    crate::dlq::record(config, action).await?;
    Ok((new_job, keys.len()))
}
