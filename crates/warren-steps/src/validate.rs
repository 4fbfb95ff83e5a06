//! `validate`: bad data is a permanent error naming column and row; warnings go to the report.

use warren::{Context, StepError};
use warren_ml::{table::Table, validate};
use warren_schemas::{Dataset, params::ValidateParams};

use crate::{fetch, ml};

/// Checks the dataset against the params and passes it on unchanged.
///
/// When a dataset read from a CSV file fails and the file has changed since it was read (it was
/// fixed), the file is read again and checked instead: replaying the dead letter after fixing
/// the file finishes the job, with a dataset of its own content hash.
pub async fn handle(ctx: Context, dataset: Dataset) -> Result<Dataset, StepError> {
    let p: ValidateParams = ctx.params()?;
    let table = Table::from_ipc(&fetch(&ctx, &dataset.artifact).await?).map_err(ml)?;
    let (dataset, warnings) = match validate::check(&table, &dataset.columns, &dataset.target, dataset.task, &p) {
        Ok(w) => (dataset, w),
        Err(first) => match crate::ingest::reread_if_changed(&ctx, &dataset).await? {
            Some((fresh, loaded)) => {
                let w = validate::check(&loaded.table, &loaded.columns, &fresh.target, fresh.task, &p)
                    .map_err(|e| StepError::permanent(format!("{} failed validation: {e}", fresh.source)))?;
                (fresh, w)
            }
            None => return Err(StepError::permanent(format!("{} failed validation: {first}", dataset.source))),
        },
    };
    if !warnings.is_empty() {
        ctx.report(rmpv::Value::Map(vec![(
            "warnings".into(),
            rmpv::Value::Array(warnings.into_iter().map(Into::into).collect()),
        )]));
    }
    Ok(dataset)
}
