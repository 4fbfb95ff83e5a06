//! Loading sources into a [`Table`]: CSV text, or a dataset that ships with linfa.

use warren_schemas::{Column, ColumnKind, Task, csvfile, params::IngestParams};

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
    /// Each column's name, type and kind (inferred, or as the spec's `types` said), with why.
    pub columns: Vec<Column>,
}

/// The datasets that ship inside the workers.
pub const BUILTIN: &[&str] = &["iris", "winequality", "diabetes"];

/// A shipped dataset: numeric features, then its target.
fn shipped(table: Table, target: &str, task: Task) -> Loaded {
    let target_kind = if task == Task::Classification { ColumnKind::Categorical } else { ColumnKind::Numeric };
    let kinds =
        table.names.iter().map(|n| (if n == target { target_kind } else { ColumnKind::Numeric }, None)).collect();
    let columns = described(&table, kinds);
    Loaded { table, target: target.into(), task, task_reason: "shipped dataset".into(), columns }
}

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
            Ok(shipped(Table { names, columns }, "species", Task::Classification))
        }
        "winequality" => {
            let d = linfa_datasets::winequality();
            let (mut names, mut columns) = features(d.feature_names(), d.records());
            names.push("quality".into());
            columns.push(Values::Str(d.targets().iter().map(|c| Some(c.to_string())).collect()));
            Ok(shipped(Table { names, columns }, "quality", Task::Classification))
        }
        "diabetes" => {
            let d = linfa_datasets::diabetes();
            let (mut names, mut columns) = features(d.feature_names(), d.records());
            names.push("progression".into());
            columns.push(Values::F64(d.targets().iter().map(|v| Some(*v)).collect()));
            Ok(shipped(Table { names, columns }, "progression", Task::Regression))
        }
        other => Err(MlError::invalid(format!("unknown dataset `{other}` (shipped: {})", BUILTIN.join(", ")))),
    }
}

/// Parses a CSV file as `params` say: UTF-8 (or `encoding = "latin-1"`), the delimiter given or
/// sniffed, quotes closed, a header row (or `header = false`: `column_1`, …), column names
/// unique, every row as wide as the first; each refusal names the line, column or byte. Cells
/// in `missing` (pandas' `na_values` by default: empty, `NA`, `NaN`, …) are missing values.
/// Each column's kind is inferred ([`infer`]) unless `types` names it. The target is
/// `params.target` or the last column; a text target (or `task`) makes a classification task.
pub fn csv(bytes: &[u8], params: &IngestParams) -> Result<Loaded> {
    let text = csvfile::decode(bytes, params.encoding.as_deref()).map_err(MlError::invalid)?;
    let options = csvfile::Options {
        delimiter: params.delimiter.as_deref(),
        header: params.header,
        encoding: params.encoding.as_deref(),
    };
    let csvfile::Opened { mut reader, delimiter, columns: names } =
        csvfile::open(&text, options).map_err(MlError::invalid)?;
    let missing: Vec<&str> = match &params.missing {
        Some(m) => m.iter().map(String::as_str).collect(),
        None => warren_schemas::params::MISSING.to_vec(),
    };
    let mut cells: Vec<Vec<Option<String>>> = vec![Vec::new(); names.len()];
    for record in reader.records() {
        let record = record.map_err(|e| MlError::invalid(csvfile::describe(&e, names.len())))?;
        for (j, cell) in record.iter().enumerate() {
            cells[j].push((!missing.contains(&cell)).then(|| cell.to_owned()));
        }
    }
    if let Some(c) = params.types.keys().find(|c| !names.contains(c)) {
        return Err(MlError::invalid(format!(
            "types: `{c}` is not a column of the CSV (columns: {})",
            names.join(", ")
        )));
    }
    let target = params.target.clone().unwrap_or_else(|| names[names.len() - 1].clone());
    let Some(t) = names.iter().position(|n| *n == target) else {
        let sep =
            if delimiter == b',' { String::new() } else { format!(" (read with delimiter {:?})", delimiter as char) };
        return Err(MlError::invalid(format!(
            "target column `{target}` is not in the CSV (columns: {}){sep}",
            names.join(", ")
        )));
    };
    let max = params.max_categories.unwrap_or(warren_schemas::params::MAX_CATEGORIES) as usize;
    let mut columns = Vec::with_capacity(names.len());
    let mut kinds = Vec::with_capacity(names.len());
    for (j, (name, col)) in names.iter().zip(cells).enumerate() {
        if j == t {
            columns.push(numbers(&col).map(Values::F64).unwrap_or(Values::Str(col)));
            kinds.push((ColumnKind::Numeric, None));
            continue;
        }
        let (values, kind, note) = infer(name, col, params.types.get(name).copied(), max)?;
        columns.push(values);
        kinds.push((kind, note));
    }
    let mut table = Table { names, columns };
    let (task, task_reason) = target_task(&table.columns[t], params)?;
    if task == Task::Classification
        && let Values::F64(v) = &table.columns[t]
    {
        table.columns[t] = Values::Str(v.iter().map(|x| x.map(|x| format!("{x}"))).collect());
    }
    kinds[t] = (if task == Task::Classification { ColumnKind::Categorical } else { ColumnKind::Numeric }, None);
    let columns = described(&table, kinds);
    Ok(Loaded { table, target, task, task_reason, columns })
}

/// Every cell as a number, if every present one is.
fn numbers(col: &[Option<String>]) -> Option<Vec<Option<f64>>> {
    col.iter().map(|c| c.as_deref().map_or(Some(None), |s| s.parse::<f64>().ok().map(Some))).collect()
}

/// Whether `s` reads as true or false (`true`/`false`, `yes`/`no`, `t`/`f`, `y`/`n`, any case).
pub fn boolean(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "t" | "y" => Some(true),
        "false" | "no" | "f" | "n" => Some(false),
        _ => None,
    }
}

/// A feature column's kind, as a person would read it: numbers are numeric; true/false words
/// boolean; text with at most `max` distinct values, some value repeated, is categorical;
/// other text (free text, identifiers) is left out, saying why. `given` (the spec's
/// `types`) overrides, refusing a cell that does not fit it.
pub fn infer(
    name: &str,
    col: Vec<Option<String>>,
    given: Option<ColumnKind>,
    max: usize,
) -> Result<(Values, ColumnKind, Option<String>)> {
    let misfit = |what: &str| {
        let (row, cell) = col
            .iter()
            .enumerate()
            .find_map(|(i, c)| {
                c.as_deref()
                    .filter(|s| if what == "a number" { s.parse::<f64>().is_err() } else { boolean(s).is_none() })
                    .map(|s| (i, s))
            })
            .unwrap_or((0, ""));
        MlError::invalid(format!("types: `{name}` is not {what}: row {} holds {cell:?}", row + 1))
    };
    let present = col.iter().flatten().count();
    match given {
        Some(ColumnKind::Numeric) => {
            let v = numbers(&col).ok_or_else(|| misfit("a number"))?;
            return Ok((Values::F64(v), ColumnKind::Numeric, Some("types in the spec".into())));
        }
        Some(ColumnKind::Boolean) => {
            if col.iter().flatten().any(|s| boolean(s).is_none()) {
                return Err(misfit("true/false"));
            }
            return Ok((Values::Str(col), ColumnKind::Boolean, Some("types in the spec".into())));
        }
        Some(kind) => return Ok((Values::Str(col), kind, Some("types in the spec".into()))),
        None => {}
    }
    if let Some(v) = numbers(&col) {
        return Ok((Values::F64(v), ColumnKind::Numeric, None));
    }
    if col.iter().flatten().all(|s| boolean(s).is_some()) {
        return Ok((Values::Str(col), ColumnKind::Boolean, None));
    }
    if let Some(stray) = Stray::find(&col) {
        let note = format!("{stray}: left out; validate refuses it");
        return Ok((Values::Str(col), ColumnKind::Text, Some(note)));
    }
    let distinct = col.iter().flatten().collect::<std::collections::BTreeSet<_>>().len();
    if distinct <= max && distinct < present {
        return Ok((Values::Str(col), ColumnKind::Categorical, None));
    }
    let note = format!(
        "text with {distinct} distinct values in {present} rows (free text or an identifier): left out; set types.{name} = \"categorical\" to use it"
    );
    Ok((Values::Str(col), ColumnKind::Text, Some(note)))
}

/// A column of numbers with a few cells of text in it: a typo or an unlisted missing-value
/// token, not a text column.
#[derive(Debug, Clone, PartialEq)]
pub struct Stray {
    /// The first text cell's row (from 1).
    pub row: usize,
    /// Its value.
    pub value: String,
    /// Cells that are numbers.
    pub numbers: usize,
    /// Cells present.
    pub present: usize,
}

impl Stray {
    /// The stray text in `col`, if at least 90% of its present cells are numbers and some are not.
    pub fn find(col: &[Option<String>]) -> Option<Stray> {
        let present = col.iter().flatten().count();
        let numbers = col.iter().flatten().filter(|s| s.parse::<f64>().is_ok()).count();
        if numbers == present || numbers * 10 < present * 9 {
            return None;
        }
        let (row, value) = col
            .iter()
            .enumerate()
            .find_map(|(i, c)| c.as_deref().filter(|s| s.parse::<f64>().is_err()).map(|s| (i + 1, s.to_owned())))?;
        Some(Stray { row, value, numbers, present })
    }
}

impl std::fmt::Display for Stray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "row {}: {:?} is not a number, though {} of {} values are (fix the cell, list it in ingest's `missing`, or \
             give the column a kind with ingest's `types`)",
            self.row, self.value, self.numbers, self.present
        )
    }
}

/// The columns' payload description: name, type, kind and why.
fn described(table: &Table, kinds: Vec<(ColumnKind, Option<String>)>) -> Vec<Column> {
    table.schema().into_iter().zip(kinds).map(|(c, (kind, note))| Column { kind: Some(kind), note, ..c }).collect()
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

    #[test]
    fn kinds_are_inferred_overridable_and_csv_options_read_real_files() {
        let text = b"year,island,flag,name,y\n2007,Dream,yes,ann,1.5\n2008,NA,no,bob,2.5\n2007,Dream,,cid,?\n2009,Biscoe,yes,dee,3.5\n";
        let l = csv(text, &IngestParams::default()).unwrap();
        let kinds: Vec<ColumnKind> = l.columns.iter().map(Column::kind).collect();
        use ColumnKind::*;
        assert_eq!(kinds, [Numeric, Categorical, Boolean, Text, Numeric]);
        assert!(l.columns[3].note.as_deref().unwrap_or_default().contains("4 distinct values in 4 rows"));
        assert_eq!(
            l.table.columns[1],
            Values::Str(vec![Some("Dream".into()), None, Some("Dream".into()), Some("Biscoe".into())])
        );
        assert_eq!(l.table.columns[4], Values::F64(vec![Some(1.5), Some(2.5), None, Some(3.5)]), "`?` is missing");
        let typed = IngestParams {
            types: [("year".to_owned(), Categorical), ("name".to_owned(), Categorical)].into(),
            ..Default::default()
        };
        let l = csv(text, &typed).unwrap();
        assert_eq!((l.columns[0].kind(), l.columns[3].kind()), (Categorical, Categorical));
        assert_eq!(
            l.table.columns[0],
            Values::Str(["2007", "2008", "2007", "2009"].map(|s| Some(s.to_owned())).to_vec())
        );
        let wrong = IngestParams { types: [("island".to_owned(), Numeric)].into(), ..Default::default() };
        assert_eq!(
            csv(text, &wrong).unwrap_err().to_string(),
            "types: `island` is not a number: row 1 holds \"Dream\""
        );
        let typo = IngestParams { types: [("yaer".to_owned(), Numeric)].into(), ..Default::default() };
        assert!(csv(text, &typo).unwrap_err().to_string().starts_with("types: `yaer` is not a column"));
        let headless = IngestParams { header: Some(false), encoding: Some("latin-1".into()), ..Default::default() };
        let l = csv(b"1,caf\xE9,x\n2,th\xE9,y\n3,caf\xE9,x\n4,th\xE9,y\n", &headless).unwrap();
        assert_eq!(
            (l.table.names.clone(), l.target.as_str()),
            (vec!["column_1".to_owned(), "column_2".into(), "column_3".into()], "column_3")
        );
        assert_eq!(
            l.table.columns[1],
            Values::Str(["caf\u{e9}", "th\u{e9}", "caf\u{e9}", "th\u{e9}"].map(|s| Some(s.to_owned())).to_vec())
        );
        let none = IngestParams { missing: Some(vec![]), ..Default::default() };
        assert!(
            matches!(csv(b"a,y\nNA,1\n2,2\n", &none).unwrap().table.columns[0], Values::Str(_)),
            "NA is text when told"
        );
    }
}
