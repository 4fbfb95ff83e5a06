//! `select`: where the trials of a job meet. Picks the best model exactly once per job, however
//! many select workers run and however often a message is redelivered.
//!
//! Each trial is recorded in the store under a deterministic key; the worker that records the
//! last one finds all of them, and the decision is written with create-if-absent, naming the
//! message that made it. Only that message emits the winner, and a redelivery of it emits the
//! same winner again (with the same derived message id, which the next step drops).

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use warren::{Context, FanOut, StepError};
use warren_schemas::Model;

use crate::art;

#[derive(Debug, Serialize, Deserialize)]
struct Decision {
    /// The message whose arrival completed the set.
    owner: Uuid,
    /// The winning trial.
    best: u32,
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StepError> {
    rmp_serde::to_vec_named(v).map_err(|e| StepError::permanent(format!("cannot encode: {e}")))
}

/// Records a trial; emits the best model once all trials are in.
pub async fn handle(ctx: Context, model: Model) -> Result<FanOut<Model>, StepError> {
    let store = ctx.store()?;
    let dir = format!("{}/{}/select", ctx.pipeline, ctx.job_id);
    store.put(&format!("{dir}/trials/{:05}.msgpack", model.trial), encode(&model)?).await.map_err(art)?;
    let keys = store.list(&format!("{dir}/trials")).await.map_err(art)?;
    if (keys.len() as u32) < model.trials {
        return Ok(FanOut(vec![]));
    }
    let mut trials = Vec::with_capacity(keys.len());
    for k in &keys {
        let bytes = store.get(k).await.map_err(art)?;
        let m: Model =
            rmp_serde::from_slice(&bytes).map_err(|e| StepError::permanent(format!("bad trial {k}: {e}")))?;
        trials.push(m);
    }
    // Highest validation score; ties go to the lowest trial number, so the choice is the same
    // whoever makes it.
    let Some(best) =
        trials.into_iter().max_by(|a, b| a.validation_score.total_cmp(&b.validation_score).then(b.trial.cmp(&a.trial)))
    else {
        return Ok(FanOut(vec![]));
    };
    let decision_key = format!("{dir}/decision.msgpack");
    let mine = Decision { owner: ctx.message_id, best: best.trial };
    let decided_here = store.create(&decision_key, encode(&mine)?).await.map_err(art)?;
    let decision: Decision = if decided_here {
        mine
    } else {
        let bytes = store.get(&decision_key).await.map_err(art)?;
        rmp_serde::from_slice(&bytes).map_err(|e| StepError::permanent(format!("bad decision: {e}")))?
    };
    if decision.owner != ctx.message_id {
        return Ok(FanOut(vec![]));
    }
    ctx.report(rmpv::Value::Map(vec![
        ("selected_trial".into(), best.trial.into()),
        ("validation_score".into(), best.validation_score.into()),
        ("algorithm".into(), format!("{:?}", best.candidate.algorithm).into()),
    ]));
    Ok(FanOut(vec![best]))
}
