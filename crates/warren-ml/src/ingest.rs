//! Loading sources into a [`Table`]: CSV text, or a dataset that ships with linfa.

use warren_schemas::{Task, csvfile, params::IngestParams};

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
    /// Why that task: the override, or what the target column looks like.
    pub task_reason: String,
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
            Ok(Loaded {
                table: Table { names, columns },
                target: "species".into(),
                task: Task::Classification,
                task_reason: "shipped dataset".into(),
            })
        }
        "winequality" => {
            let d = linfa_datasets::winequality();
            let (mut names, mut columns) = features(d.feature_names(), d.records());
            names.push("quality".into());
            columns.push(Values::Str(d.targets().iter().map(|c| Some(c.to_string())).collect()));
            Ok(Loaded {
                table: Table { names, columns },
                target: "quality".into(),
                task: Task::Classification,
                task_reason: "shipped dataset".into(),
            })
        }
        "diabetes" => {
            let d = linfa_datasets::diabetes();
            let (mut names, mut columns) = features(d.feature_names(), d.records());
            names.push("progression".into());
            columns.push(Values::F64(d.targets().iter().map(|v| Some(*v)).collect()));
            Ok(Loaded {
                table: Table { names, columns },
                target: "progression".into(),
                task: Task::Regression,
                task_reason: "shipped dataset".into(),
            })
        }
        other => Err(MlError::invalid(format!("unknown dataset `{other}` (shipped: {})", BUILTIN.join(", ")))),
    }
}

/// Parses CSV text with a header row: UTF-8, the delimiter given or sniffed, quotes closed,
/// column names unique, every row as wide as the header; each refusal names the line. A column
/// is numeric when every non-empty cell parses as a number, else text; empty cells are missing
/// values. The target is `params.target` or the last column; a text target (or `classification
/// = true`) makes a classification task.
pub fn csv(bytes: &[u8], params: &IngestParams) -> Result<Loaded> {
    let text = csvfile::utf8(bytes).map_err(MlError::invalid)?;
    let delimiter = csvfile::delimiter(text, params.delimiter.as_deref()).map_err(MlError::invalid)?;
    csvfile::check_quotes(text, delimiter).map_err(MlError::invalid)?;
    let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).trim(csv::Trim::All).from_reader(text.as_bytes());
    let names: Vec<String> =
        reader.headers().map_err(|e| MlError::invalid(csvfile::describe(&e, 0)))?.iter().map(str::to_owned).collect();
    csvfile::check_names(&names).map_err(MlError::invalid)?;
    let mut cells: Vec<Vec<Option<String>>> = vec![Vec::new(); names.len()];
    for record in reader.records() {
        let record = record.map_err(|e| MlError::invalid(csvfile::describe(&e, names.len())))?;
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
        let sep =
            if delimiter == b',' { String::new() } else { format!(" (read with delimiter {:?})", delimiter as char) };
        return Err(MlError::invalid(format!(
            "target column `{target}` is not in the CSV (columns: {}){sep}",
            names.join(", ")
        )));
    };
    let mut table = Table { names, columns };
    let (task, task_reason) = target_task(&table.columns[t], params)?;
    if task == Task::Classification
        && let Values::F64(v) = &table.columns[t]
    {
        table.columns[t] = Values::Str(v.iter().map(|x| x.map(|x| format!("{x}"))).collect());
    }
    Ok(Loaded { table, target, task, task_reason })
}

/// Most distinct values an integer target may have and still be read as classes.
pub const MAX_CLASSES: usize = 20;

/// The task a target asks for, as scikit-learn's `type_of_target` reads it: text is classes;
/// whole numbers with few distinct values (at most [`MAX_CLASSES`], and at most half the rows) are
/// classes; other numbers are a regression. `task` (or the older `classification`) overrides.
pub fn target_task(column: &Values, params: &IngestParams) -> Result<(Task, String)> {
    match params.task.as_deref() {
        Some("classification") => return Ok((Task::Classification, "task = \"classification\" in the spec".into())),
        Some("regression") => {
            if matches!(column, Values::Str(_)) {
                return Err(MlError::invalid("task = \"regression\" but the target column is text"));
            }
            return Ok((Task::Regression, "task = \"regression\" in the spec".into()));
        }
        Some(other) => return Err(MlError::invalid(format!("task `{other}`: expected classification or regression"))),
        None => {}
    }
    if params.classification == Some(true) {
        return Ok((Task::Classification, "classification = true in the spec".into()));
    }
    match column {
        Values::Str(_) => Ok((Task::Classification, "the target is text".into())),
        Values::F64(v) => {
            let present: Vec<f64> = v.iter().flatten().copied().collect();
            let whole = present.iter().all(|x| x.fract() == 0.0);
            let mut distinct: Vec<i64> = present.iter().map(|x| *x as i64).collect();
            distinct.sort_unstable();
            distinct.dedup();
            let few = distinct.len() <= MAX_CLASSES.min((present.len() / 2).max(2));
            if params.classification == Some(false) {
                Ok((Task::Regression, "classification = false in the spec".into()))
            } else if whole && few {
                Ok((Task::Classification, format!("whole numbers with {} distinct values", distinct.len())))
            } else if whole {
                Ok((
                    Task::Regression,
                    format!("whole numbers with {} distinct values (more than classes)", distinct.len()),
                ))
            } else {
                Ok((Task::Regression, "the target has fractional numbers".into()))
            }
        }
    }
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
    fn the_task_follows_the_target_as_scikit_learn_reads_it() {
        let ints = b"x,y\n1,0\n2,1\n3,2\n4,0\n5,1\n6,2\n";
        let l = csv(ints, &IngestParams::default()).unwrap();
        assert_eq!(l.task, Task::Classification, "{}", l.task_reason);
        assert_eq!(
            l.table.columns[1],
            Values::Str(vec![
                Some("0".into()),
                Some("1".into()),
                Some("2".into()),
                Some("0".into()),
                Some("1".into()),
                Some("2".into())
            ])
        );
        let many: String =
            std::iter::once("x,y\n".to_owned()).chain((0..100).map(|i| format!("{i},{}\n", i * 3))).collect();
        assert_eq!(csv(many.as_bytes(), &IngestParams::default()).unwrap().task, Task::Regression);
        let floats = b"x,y\n1,0.5\n2,1.5\n3,0.5\n4,1.5\n";
        assert_eq!(csv(floats, &IngestParams::default()).unwrap().task, Task::Regression);
        let forced = IngestParams { task: Some("regression".into()), ..Default::default() };
        assert_eq!(csv(ints, &forced).unwrap().task, Task::Regression);
        let bad = IngestParams { task: Some("clustering".into()), ..Default::default() };
        assert!(csv(ints, &bad).is_err());
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

    fn refusal(text: &[u8]) -> String {
        csv(text, &IngestParams::default()).expect_err("refused").to_string()
    }

    #[test]
    fn bad_csvs_are_refused_naming_the_line_column_or_byte() {
        assert_eq!(
            refusal(b"a,b,y\n1,2,x\n3,4\n"),
            "CSV line 3: 2 field(s) where the header has 3 (a missing or extra delimiter, or a quote left open on an earlier line?)"
        );
        assert_eq!(
            refusal(b"a,b,y\n1,\"two,x\n3,4,z\n"),
            "an unterminated quote: the field opened at line 2, column 3 never closes"
        );
        assert!(refusal(b"a,b,y\n1,caf\xE9,x\n").starts_with("the CSV is not UTF-8: byte 0xE9 at line 2, column 6"));
        assert_eq!(refusal(b"a,b,a\n1,2,3\n"), "CSV header: columns 1 and 3 are both named `a`");
        assert_eq!(refusal(b"a,,y\n1,2,3\n"), "CSV header: column 2 has no name");
    }

    #[test]
    fn semicolons_and_tabs_are_sniffed_and_quotes_may_hold_delimiters() {
        let l = csv(b"x;label\n1,5;a\n2,5;b\n", &IngestParams::default()).unwrap();
        assert_eq!(l.table.names, ["x", "label"]);
        assert_eq!(
            l.table.columns[0],
            Values::Str(vec![Some("1,5".into()), Some("2,5".into())]),
            "a decimal comma is text"
        );
        let l = csv(b"x\ty\n1\t2\n", &IngestParams::default()).unwrap();
        assert_eq!(l.table.names, ["x", "y"]);
        let quoted = csv(b"name,y\n\"Smith, \"\"J\"\"\",1\n", &IngestParams::default()).unwrap();
        assert_eq!(quoted.table.columns[0], Values::Str(vec![Some("Smith, \"J\"".into())]));
        let given = IngestParams { delimiter: Some("|".into()), ..Default::default() };
        assert_eq!(csv(b"a|y\n1|2\n", &given).unwrap().table.names, ["a", "y"]);
        let bad = IngestParams { delimiter: Some("::".into()), ..Default::default() };
        assert!(csv(b"a::y\n", &bad).unwrap_err().to_string().contains("expected one character"));
        assert_eq!(
            csv(b"\xEF\xBB\xBFa,y\n1,2\n", &IngestParams::default()).unwrap().table.names[0],
            "a",
            "a BOM is dropped"
        );
    }
}
