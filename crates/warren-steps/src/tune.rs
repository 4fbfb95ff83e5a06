//! `tune`: one train message per candidate (fan-out).

use warren::{Context, FanOut, StepError};
use warren_ml::tune;
use warren_schemas::{Features, TrainTask, params::TuneParams};

use crate::ml;

/// Expands the search spaces into trials.
pub async fn handle(ctx: Context, features: Features) -> Result<FanOut<TrainTask>, StepError> {
    let p: TuneParams = ctx.params()?;
    let candidates = tune::candidates(&p).map_err(ml)?;
    if let Some(c) = candidates.iter().find(|c| !c.algorithm.supports(features.task)) {
        return Err(StepError::permanent(format!("{:?} cannot do a {:?} task", c.algorithm, features.task)));
    }
    let trials = candidates.len() as u32;
    Ok(FanOut(
        candidates
            .into_iter()
            .enumerate()
            .map(|(i, candidate)| TrainTask {
                features: features.clone(),
                candidate,
                trial: i as u32,
                trials,
                metric: p.metric.clone(),
            })
            .collect(),
    ))
}
