//! `features`: the seeded split and the preprocessing fitted on its training rows (column
//! choice, gaps, categories, scaling), stored as `train.arrow` and `test.arrow`; the fitted
//! preprocessing rides in the payload on to the model, and is reported in the job's events.

use warren::{Context, StepError};
use warren_ml::{features, preprocess, table::Table};
use warren_schemas::{Dataset, Features, params::FeaturesParams};

use crate::{blocking, fetch, put};

/// Splits and scales the dataset.
pub async fn handle(ctx: Context, dataset: Dataset) -> Result<Features, StepError> {
    let p: FeaturesParams = ctx.params()?;
    let bytes = fetch(&ctx, &dataset.artifact).await?;
    let (target, task, params, columns) = (dataset.target.clone(), dataset.task, p.clone(), dataset.columns.clone());
    let (split, train, test) = blocking(move || {
        let table = Table::from_ipc(&bytes)?;
        let split = features::prepare(&table, &columns, &target, task, &params)?;
        let (train, test) = (split.train.to_ipc()?, split.test.to_ipc()?);
        Ok((split, train, test))
    })
    .await?;
    let pre = &split.preprocessor;
    let report = serde_json::json!({
        "preprocessing": preprocess::describe(pre),
        "left_out": pre.left_out.iter().map(|l| (l.column.clone(), l.reason.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        "features": split.feature_names.len(),
        "dropped_rows": split.dropped,
        "train_rows": split.train.rows(),
        "test_rows": split.test.rows(),
    });
    if let Ok(detail) = warren::envelope::to_msgpack_value(&report) {
        ctx.report(detail);
    }
    Ok(Features {
        dataset_hash: dataset.artifact.hash,
        train: put(&ctx, "train.arrow", train).await?,
        test: put(&ctx, "test.arrow", test).await?,
        feature_names: split.feature_names,
        target: dataset.target,
        task: dataset.task,
        classes: split.classes,
        scaler: None,
        seed: p.seed,
        preprocessor: Some(split.preprocessor),
    })
}
