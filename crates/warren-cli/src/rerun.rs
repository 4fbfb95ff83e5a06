//! `warren rerun JOB --from STEP`: a new job that starts at STEP from what the old job handed to
//! it, so everything upstream (datasets, features, trained models) is reused, not recomputed.

use std::process::ExitCode;

use uuid::Uuid;
use warren::Config;
use warren_ops::rerun::parse_changes;

use crate::{Fail, Outcome, connect, dlq::AuditArgs, print, print_json};

/// `warren rerun` arguments.
#[derive(Debug, clap::Args)]
pub struct RerunArgs {
    /// The finished (or dead) job to start from.
    job: String,
    /// The step to start at; the old job's inputs to it are reused.
    #[arg(long, value_name = "STEP")]
    from: String,
    /// Change a parameter of this or a later step, e.g. `--set register.model=iris-b` (repeatable;
    /// values as in a spec file).
    #[arg(long = "set", value_name = "STEP.PARAM=VALUE")]
    set: Vec<String>,
    #[command(flatten)]
    audit: AuditArgs,
}

/// `warren rerun`.
pub async fn run(config: &Config, args: RerunArgs, json: bool) -> Outcome {
    let old: Uuid = args.job.parse().map_err(|_| Fail::usage(format!("`{}` is not a job id (a UUID)", args.job)))?;
    let changes = parse_changes(&args.set)?;
    let op = connect(config).await?;
    let result = op.rerun(old, &args.from, &changes, &args.audit.audit()).await;
    op.close().await;
    let (new_job, messages) = result?;
    if json {
        let out = serde_json::json!({ "job": new_job.to_string(), "rerun_of": old.to_string(), "from": args.from, "messages": messages });
        print_json(&out);
    } else {
        print(&new_job.to_string());
        eprintln!(
            "rerun of {old} from {}: new job {new_job} ({messages} message(s)); follow it with `warren status {new_job}`",
            args.from
        );
    }
    Ok(ExitCode::SUCCESS)
}
