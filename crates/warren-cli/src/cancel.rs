//! `warren cancel JOB`: every worker drops the job's queued and arriving messages.

use std::process::ExitCode;

use warren::Config;

use crate::{Fail, Outcome, connect, dlq::AuditArgs, print, print_json};

/// `warren cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The job id.
    job: String,
    #[command(flatten)]
    audit: AuditArgs,
}

/// `warren cancel JOB`: refused for a job the namespace never saw.
pub async fn run(config: &Config, args: CancelArgs, json: bool) -> Outcome {
    let job: uuid::Uuid =
        args.job.parse().map_err(|_| Fail::usage(format!("`{}` is not a job id (a UUID)", args.job)))?;
    let op = connect(config).await?;
    let done = op.cancel(job, &args.audit.audit()).await;
    op.close().await;
    done?;
    if json {
        print_json(&serde_json::json!({ "cancelled": job.to_string() }));
    } else {
        print(&format!("cancelled job {job}: workers drop its queued and arriving messages (`warren status {job}`)"));
    }
    Ok(ExitCode::SUCCESS)
}
