//! `features`: the seeded split and the scaling, stored as `train.arrow` and `test.arrow`.

use warren::{Context, StepError};
use warren_ml::{features, table::Table};
use warren_schemas::{Dataset, Features, params::FeaturesParams};

use crate::{blocking, fetch, put};

/// Splits and scales the dataset.
pub async fn handle(ctx: Context, dataset: Dataset) -> Result<Features, StepError> {
    let p: FeaturesParams = ctx.params()?;
    let bytes = fetch(&ctx, &dataset.artifact).await?;
    let (target, task, params) = (dataset.target.clone(), dataset.task, p.clone());
    let (split, train, test) = blocking(move || {
        let table = Table::from_ipc(&bytes)?;
        let split = features::split_and_scale(&table, &target, task, &params)?;
        let (train, test) = (split.train.to_ipc()?, split.test.to_ipc()?);
        Ok((split, train, test))
    })
    .await?;
    Ok(Features {
        dataset_hash: dataset.artifact.hash,
        train: put(&ctx, "train.arrow", train).await?,
        test: put(&ctx, "test.arrow", test).await?,
        feature_names: split.feature_names,
        target: dataset.target,
        task: dataset.task,
        classes: split.classes,
        scaler: split.scaler,
        seed: p.seed,
    })
}
