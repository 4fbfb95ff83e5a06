//! Loading sources into a [`Table`]: CSV text, or a dataset that ships with linfa.

use warren_schemas::{Task, params::IngestParams};

use crate::{
    MlError, Result,
    table::{Table, Values},
};

/// A loaded source: the table, its target column and what kind of task it poses.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The data, target column included.
    pub table: Table,
    /// The target column's name.
    pub target: String,
    /// Classification or regression.
    pub task: Task,
}

/// The datasets that ship inside the workers.
pub const BUILTIN: &[&str] = &["iris", "winequality", "diabetes"];

/// Loads a dataset shipped with linfa-datasets.
pub fn builtin(name: &str) -> Result<Loaded> {
    fn features(names: &[String], records: &ndarray::Array2<f64>) -> (Vec<String>, Vec<Values>) {
        let cols = (0..records.ncols()).map(|j| Values::F64(records.column(j).iter().map(|v| Some(*v)).collect()));
        (names.iter().map(|n| n.replace(' ', "_")).collect(), cols.collect())
    }
    match name {
        "iris" => {
            let d = linfa_datasets::iris();
            let (mut names, mut columns) = features(d.feature_names(), d.records());
            let labels = ["setosa", "versicolor", "virginica"];
            names.push("species".into());
            columns.push(Values::Str(d.targets().iter().map(|&c| labels.get(c).map(|s| (*s).to_owned())).collect()));
            Ok(Loaded { table: Table { names, columns }, target: "species".into(), task: Task::Classification })
        }
        "winequality" => {
            let d = linfa_datasets::winequality();
            let (mut names, mut columns) = features(d.feature_names(), d.records());
            names.push("quality".into());
            columns.push(Values::Str(d.targets().iter().map(|c| Some(c.to_string())).collect()));
            Ok(Loaded { table: Table { names, columns }, target: "quality".into(), task: Task::Classification })
        }
        "diabetes" => {
            let d = linfa_datasets::diabetes();
            let (mut names, mut columns) = features(d.feature_names(), d.records());
            names.push("progression".into());
            columns.push(Values::F64(d.targets().iter().map(|v| Some(*v)).collect()));
            Ok(Loaded { table: Table { names, columns }, target: "progression".into(), task: Task::Regression })
        }
        other => Err(MlError::invalid(format!("unknown dataset `{other}` (shipped: {})", BUILTIN.join(", ")))),
    }
}

/// Parses CSV text with a header row. A column is numeric when every non-empty cell parses as a
/// number, else text; empty cells are missing values. The target is `params.target` or the last
/// column; a text target (or `classification = true`) makes a classification task.
pub fn csv(text: &[u8], params: &IngestParams) -> Result<Loaded> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text);
    let names: Vec<String> =
        reader.headers().map_err(|e| MlError::invalid(format!("CSV header: {e}")))?.iter().map(str::to_owned).collect();
    if names.is_empty() {
        return Err(MlError::invalid("CSV has no columns"));
    }
    let mut cells: Vec<Vec<Option<String>>> = vec![Vec::new(); names.len()];
    for (i, record) in reader.records().enumerate() {
        // Row numbers count data rows from 1, as a spreadsheet shows them below the header.
        let record = record.map_err(|e| MlError::invalid(format!("CSV row {}: {e}", i + 1)))?;
        for (j, cell) in record.iter().enumerate() {
            cells[j].push((!cell.is_empty()).then(|| cell.to_owned()));
        }
    }
    let columns: Vec<Values> = cells
        .into_iter()
        .map(|col| {
            let parsed: Option<Vec<Option<f64>>> =
                col.iter().map(|c| c.as_deref().map_or(Some(None), |s| s.parse::<f64>().ok().map(Some))).collect();
            parsed.map(Values::F64).unwrap_or(Values::Str(col))
        })
        .collect();
    let target = params.target.clone().unwrap_or_else(|| names[names.len() - 1].clone());
    let Some(t) = names.iter().position(|n| *n == target) else {
        return Err(MlError::invalid(format!(
            "target column `{target}` is not in the CSV (columns: {})",
            names.join(", ")
        )));
    };
    let mut table = Table { names, columns };
    let task = match (&table.columns[t], params.classification) {
        (Values::Str(_), _) | (_, Some(true)) => Task::Classification,
        _ => Task::Regression,
    };
    if task == Task::Classification
        && let Values::F64(v) = &table.columns[t]
    {
        table.columns[t] = Values::Str(v.iter().map(|x| x.map(|x| format!("{x}"))).collect());
    }
    Ok(Loaded { table, target, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_load() {
        let iris = builtin("iris").unwrap();
        assert_eq!((iris.table.rows(), iris.table.names.len()), (150, 5));
        assert_eq!(iris.task, Task::Classification);
        assert_eq!(builtin("diabetes").unwrap().task, Task::Regression);
        assert!(builtin("mnist").is_err());
    }

    #[test]
    fn csv_types_columns_and_keeps_bad_cells_as_text() {
        let text = b"a,b,label\n1,2,x\n3,oops,y\n,4,x\n";
        let l = csv(text, &IngestParams::default()).unwrap();
        assert_eq!(l.target, "label");
        assert_eq!(l.task, Task::Classification);
        assert_eq!(l.table.columns[0], Values::F64(vec![Some(1.0), Some(3.0), None]));
        assert!(matches!(l.table.columns[1], Values::Str(_)));
    }
}
