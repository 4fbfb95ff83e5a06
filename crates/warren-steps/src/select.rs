//! `select`: where the trials of a job meet. Picks the best model exactly once per job, however
//! many select workers run and however often a message is redelivered.
//!
//! Each trial is recorded in the store under a deterministic key; a trial that died at train is
//! recorded as failed when select is told (a `DeadNotice`). The worker that completes the set
//! (every trial in or dead) decides, with create-if-absent, naming the message that made the
//! decision. Only that message emits the winner, and a redelivery of it emits the same winner
//! again (with the same derived message id, which the next step drops). A dead trial replayed
//! later and trained then completes the set again; the decision already made (or made now, if the
//! job had died at select) still stands alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use warren::{Context, DeadNotice, FanOut, Handler, StepError};
use warren_schemas::{
    Model, TrainTask,
    params::{FailedTrials, SelectParams},
};

use crate::art;

#[derive(Debug, Serialize, Deserialize)]
struct Decision {
    /// The message whose arrival completed the set.
    owner: Uuid,
    /// The winning trial.
    best: u32,
}

/// A trial that died at train.
#[derive(Debug, Serialize, Deserialize)]
struct Failed {
    trial: u32,
    trials: u32,
    reason: String,
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StepError> {
    rmp_serde::to_vec_named(v).map_err(|e| StepError::permanent(format!("cannot encode: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StepError> {
    rmp_serde::from_slice(bytes).map_err(|e| StepError::permanent(format!("bad {what}: {e}")))
}

/// The `select` step: a [`Handler`] for trials and for news of dead ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct Select;

impl Handler<Model, FanOut<Model>> for Select {
    async fn call(&self, ctx: Context, model: Model) -> Result<FanOut<Model>, StepError> {
        let store = ctx.store()?;
        let dir = dir(&ctx);
        store.put(&format!("{dir}/trials/{:05}.msgpack", model.trial), encode(&model)?).await.map_err(art)?;
        decide(&ctx, model.trials).await
    }

    async fn dead_upstream(&self, ctx: Context, notice: DeadNotice) -> Result<Option<FanOut<Model>>, StepError> {
        let task: TrainTask = warren::envelope::from_msgpack_value(&notice.payload)
            .map_err(|e| StepError::permanent(format!("a dead message that is not a trial: {e}")))?;
        let failed = Failed { trial: task.trial, trials: task.trials, reason: notice.reason.clone() };
        let store = ctx.store()?;
        store.put(&format!("{}/failed/{:05}.msgpack", dir(&ctx), task.trial), encode(&failed)?).await.map_err(art)?;
        decide(&ctx, task.trials).await.map(Some)
    }
}

fn dir(ctx: &Context) -> String {
    format!("{}/{}/select", ctx.pipeline, ctx.job_id)
}

/// Once every trial is in or dead, decides once per job by the policy.
async fn decide(ctx: &Context, total: u32) -> Result<FanOut<Model>, StepError> {
    let params: SelectParams = ctx.params()?;
    let store = ctx.store()?;
    let dir = dir(ctx);
    let mut trials = Vec::new();
    for k in store.list(&format!("{dir}/trials")).await.map_err(art)? {
        trials.push(decode::<Model>(&store.get(&k).await.map_err(art)?, &k)?);
    }
    // A trial that died and was later replayed and trained counts as trained.
    let mut failed: BTreeMap<u32, Failed> = BTreeMap::new();
    for k in store.list(&format!("{dir}/failed")).await.map_err(art)? {
        let f: Failed = decode(&store.get(&k).await.map_err(art)?, &k)?;
        if !trials.iter().any(|t| t.trial == f.trial) {
            failed.insert(f.trial, f);
        }
    }
    if ((trials.len() + failed.len()) as u32) < total {
        return Ok(FanOut(vec![]));
    }
    let decision_key = format!("{dir}/decision.msgpack");
    let decided = store.get_opt(&decision_key).await.map_err(art)?;
    if decided.is_none() && !failed.is_empty() {
        let named = failed.values().map(|f| format!("trial {} ({})", f.trial, f.reason)).collect::<Vec<_>>().join("; ");
        match params.on_failed_trial {
            FailedTrials::Fail => {
                return Err(StepError::permanent(format!(
                    "{} of {total} trials died: {named}; replay them at train and select decides then",
                    failed.len()
                )));
            }
            FailedTrials::Continue if (trials.len() as u32) < params.min_trials.max(1) => {
                return Err(StepError::permanent(format!(
                    "only {} of {total} trials succeeded, min_trials is {}: {named}",
                    trials.len(),
                    params.min_trials
                )));
            }
            FailedTrials::Continue => {
                ctx.report(rmpv::Value::Map(vec![
                    ("failed_trials".into(), failed.len().into()),
                    ("going_on_with".into(), trials.len().into()),
                ]));
            }
        }
    }
    // Highest validation score; ties go to the lowest trial number, so the choice is the same
    // whoever makes it.
    let Some(best) = trials
        .iter()
        .max_by(|a, b| a.validation_score.total_cmp(&b.validation_score).then(b.trial.cmp(&a.trial)))
        .map(|m| m.trial)
    else {
        return Ok(FanOut(vec![]));
    };
    let mine = Decision { owner: ctx.message_id, best };
    let decided_here = decided.is_none() && store.create(&decision_key, encode(&mine)?).await.map_err(art)?;
    let decision: Decision =
        if decided_here { mine } else { decode(&store.get(&decision_key).await.map_err(art)?, "decision")? };
    if decision.owner != ctx.message_id {
        return Ok(FanOut(vec![]));
    }
    // The decision's own trial: a redelivery re-emits what was decided, whatever came in since.
    let Some(best) = trials.into_iter().find(|t| t.trial == decision.best) else {
        return Err(StepError::retryable(format!("the selected trial {} is not recorded yet", decision.best)));
    };
    ctx.report(rmpv::Value::Map(vec![
        ("selected_trial".into(), best.trial.into()),
        ("validation_score".into(), best.validation_score.into()),
        ("algorithm".into(), format!("{:?}", best.candidate.algorithm).into()),
    ]));
    Ok(FanOut(vec![best]))
}
