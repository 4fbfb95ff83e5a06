//! Preprocessing as scikit-learn's `Pipeline(ColumnTransformer(...))` does it: choose the
//! feature columns, fill gaps (mean, median, most frequent, constant), encode categories
//! (one-hot or ordinal, unknown categories ignored or refused), map true/false to 1/0, and scale
//! numbers (standard, min-max, none). [`fit`] learns every statistic from the training rows
//! only; [`transform`] applies the fitted [`Preprocessor`] to any table of raw columns (a test
//! split, a batch, the rows of a predict request), so a model takes rows as the user has them.

use std::collections::{BTreeMap, BTreeSet};

use ndarray::Array2;
use warren_schemas::{
    Cell, Column, ColumnKind, Encoding, Hyper, LeftOut, Preprocessor, Transform,
    params::{ColumnSpec, Encode, FeaturesParams, Impute, Scaling, Unknown},
};

use crate::{
    MlError, Result, ingest,
    table::{Table, Values},
};

/// The kind of column `name`: as the dataset describes it, else as its type implies.
fn kind_of(columns: &[Column], name: &str, values: &Values) -> ColumnKind {
    match columns.iter().find(|c| c.name == name) {
        Some(c) => c.kind(),
        None if matches!(values, Values::F64(_)) => ColumnKind::Numeric,
        None => ColumnKind::Categorical,
    }
}

/// Refuses a spec naming a column the table does not have.
fn check_named(table: &Table, p: &FeaturesParams) -> Result<()> {
    let lists = [
        ("include", p.include.clone().unwrap_or_default()),
        ("exclude", p.exclude.clone()),
        ("columns", p.columns.keys().cloned().collect()),
    ];
    for (param, names) in lists {
        if let Some(n) = names.iter().find(|n| !table.names.contains(n)) {
            return Err(MlError::invalid(format!(
                "{param}: `{n}` is not a column of the dataset (columns: {})",
                table.names.join(", ")
            )));
        }
    }
    Ok(())
}

/// Fits the preprocessing of `table`'s feature columns on the training rows `rows`.
/// `columns` describes the dataset's columns (their kinds, from ingest).
pub fn fit(
    table: &Table,
    columns: &[Column],
    target: &str,
    rows: &[usize],
    p: &FeaturesParams,
) -> Result<Preprocessor> {
    check_named(table, p)?;
    let mut inputs = Vec::new();
    let mut left_out = Vec::new();
    let mut leave = |column: &str, reason: String| left_out.push(LeftOut { column: column.to_owned(), reason });
    for (name, values) in table.names.iter().zip(&table.columns) {
        if name == target {
            continue;
        }
        let kind = kind_of(columns, name, values);
        let note = columns.iter().find(|c| &c.name == name).and_then(|c| c.note.clone());
        if let Some(include) = &p.include {
            if !include.contains(name) {
                leave(name, "not in include".into());
                continue;
            }
            if kind == ColumnKind::Text {
                return Err(MlError::invalid(format!(
                    "include: `{name}` is a text column ({}); give it a kind with ingest's types",
                    note.unwrap_or_else(|| "left out".into())
                )));
            }
        } else if kind == ColumnKind::Text {
            leave(name, note.unwrap_or_else(|| "text".into()));
            continue;
        }
        if p.exclude.contains(name) {
            leave(name, "in exclude".into());
            continue;
        }
        if let Some(kinds) = &p.kinds
            && !kinds.contains(&kind)
        {
            leave(name, format!("{kind}, not in kinds"));
            continue;
        }
        let spec = p.columns.get(name).cloned().unwrap_or_default();
        inputs.push(match kind {
            ColumnKind::Numeric => fit_numeric(name, values, rows, p, &spec)?,
            _ => fit_categorical(name, kind, values, rows, p, &spec)?,
        });
    }
    if inputs.is_empty() {
        return Err(MlError::invalid(format!(
            "no feature columns are left ({})",
            left_out.iter().map(|l| format!("{}: {}", l.column, l.reason)).collect::<Vec<_>>().join("; ")
        )));
    }
    Ok(Preprocessor { inputs, left_out, target: target.to_owned() })
}

/// Mean of `xs` (not empty).
fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// The most frequent value; the smallest of ties, as scikit-learn's `SimpleImputer` picks.
fn most_frequent<T: Ord + Clone>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut counts: BTreeMap<T, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let top = counts.values().copied().max()?;
    counts.into_iter().find(|(_, n)| *n == top).map(|(v, _)| v)
}

/// A number's value as text: `2007` for 2007.0.
fn number_text(x: f64) -> String {
    format!("{x}")
}

/// A column's cells as text (numbers written out).
fn as_text(values: &Values) -> Vec<Option<String>> {
    match values {
        Values::Str(v) => v.clone(),
        Values::F64(v) => v.iter().map(|x| x.map(number_text)).collect(),
    }
}

fn fit_numeric(
    name: &str,
    values: &Values,
    rows: &[usize],
    p: &FeaturesParams,
    spec: &ColumnSpec,
) -> Result<Transform> {
    let Values::F64(v) = values else {
        return Err(MlError::invalid(format!("column `{name}` is numeric but holds text")));
    };
    let present: Vec<f64> = rows.iter().filter_map(|&i| v[i]).collect();
    if present.is_empty() {
        return Err(MlError::invalid(format!("column `{name}` has no values in the training rows")));
    }
    let impute = spec.impute.unwrap_or(p.numeric.impute);
    let fill = match impute {
        Impute::Mean => mean(&present),
        Impute::Median => {
            let mut sorted = present.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len();
            if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
        }
        Impute::MostFrequent => {
            // Sorted, the first longest run of equal values is the smallest of the most frequent.
            let mut sorted = present.clone();
            sorted.sort_by(f64::total_cmp);
            let runs = sorted.chunk_by(|a, b| a == b);
            runs.fold((0, sorted[0]), |best, run| if run.len() > best.0 { (run.len(), run[0]) } else { best }).1
        }
        Impute::Constant => match &spec.fill {
            None => p.numeric.fill,
            Some(Hyper::Number(n)) => *n,
            Some(Hyper::Text(t)) => {
                return Err(MlError::invalid(format!(
                    "columns.{name}.fill: `{name}` is numeric, {t:?} is not a number"
                )));
            }
        },
    };
    let filled: Vec<f64> = rows.iter().map(|&i| v[i].unwrap_or(fill)).collect();
    let (center, scale) = match spec.scale.unwrap_or(p.scale.scaling()) {
        Scaling::Standard => {
            let m = mean(&filled);
            let var = filled.iter().map(|x| (x - m).powi(2)).sum::<f64>() / filled.len() as f64;
            (m, if var > 0.0 { var.sqrt() } else { 1.0 })
        }
        Scaling::MinMax => {
            let lo = filled.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = filled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (lo, if hi > lo { hi - lo } else { 1.0 })
        }
        Scaling::None => (0.0, 1.0),
    };
    Ok(Transform {
        column: name.to_owned(),
        kind: ColumnKind::Numeric,
        fill: Hyper::Number(fill),
        impute: impute.as_str().to_owned(),
        encode: Encoding::Numeric { center, scale },
    })
}

fn fit_categorical(
    name: &str,
    kind: ColumnKind,
    values: &Values,
    rows: &[usize],
    p: &FeaturesParams,
    spec: &ColumnSpec,
) -> Result<Transform> {
    let text = as_text(values);
    let boolean = kind == ColumnKind::Boolean;
    // Booleans are compared as true/false, whatever word spelled them.
    let normal = |s: &str| -> String {
        if boolean { ingest::boolean(s).map_or_else(|| s.to_owned(), |b| b.to_string()) } else { s.to_owned() }
    };
    let present: Vec<String> = rows.iter().filter_map(|&i| text[i].as_deref().map(normal)).collect();
    let impute = spec.impute.unwrap_or(p.categorical.impute);
    let fill = match impute {
        Impute::MostFrequent => most_frequent(present.iter().cloned()).ok_or_else(|| {
            MlError::invalid(format!("column `{name}` has no values in the training rows to take the most frequent of"))
        })?,
        Impute::Constant => match &spec.fill {
            None => p.categorical.fill.clone(),
            Some(Hyper::Text(t)) => t.clone(),
            Some(Hyper::Number(n)) => number_text(*n),
        },
        other => {
            return Err(MlError::invalid(format!(
                "column `{name}` is {kind}: impute = \"{}\" needs numbers (use most_frequent or constant)",
                other.as_str()
            )));
        }
    };
    if boolean {
        let fill = ingest::boolean(&fill).ok_or_else(|| {
            MlError::invalid(format!("column `{name}` is boolean: its fill {fill:?} is not true or false"))
        })?;
        return Ok(Transform {
            column: name.to_owned(),
            kind,
            fill: Hyper::Text(fill.to_string()),
            impute: impute.as_str().to_owned(),
            encode: Encoding::Boolean,
        });
    }
    let categories = match &spec.categories {
        Some(c) => c.clone(),
        None => {
            let seen: BTreeSet<String> =
                rows.iter().map(|&i| text[i].clone().unwrap_or_else(|| fill.clone())).collect();
            seen.into_iter().collect()
        }
    };
    let unknown = spec.unknown.unwrap_or(p.categorical.unknown).as_str().to_owned();
    let encode = match spec.encode.unwrap_or(p.categorical.encode) {
        Encode::OneHot => Encoding::OneHot { categories, unknown },
        Encode::Ordinal => Encoding::Ordinal { categories, unknown },
    };
    Ok(Transform { column: name.to_owned(), kind, fill: Hyper::Text(fill), impute: impute.as_str().to_owned(), encode })
}

/// The features a fitted preprocessing gives, in order: a numeric, boolean or ordinal column's
/// name, and `column=category` for each one-hot category.
pub fn feature_names(pre: &Preprocessor) -> Vec<String> {
    let mut names = Vec::new();
    for t in &pre.inputs {
        match &t.encode {
            Encoding::OneHot { categories, .. } => {
                names.extend(categories.iter().map(|c| format!("{}={c}", t.column)));
            }
            _ => names.push(t.column.clone()),
        }
    }
    names
}

/// Features of a table: the matrix, and the rows that could not be read (0-based, with why;
/// their features are zeros).
#[derive(Debug, Clone)]
pub struct Transformed {
    /// One row per table row, one column per feature.
    pub x: Array2<f64>,
    /// Rows refused: a cell that is not a number, an unknown category under `unknown = "error"`.
    pub refused: Vec<(usize, String)>,
}

/// Applies the fitted preprocessing to a table holding (at least) its input columns; a missing
/// input column is refused naming it.
pub fn transform(pre: &Preprocessor, table: &Table) -> Result<Transformed> {
    let width = feature_names(pre).len();
    let n = table.rows();
    let mut x = Array2::zeros((n, width));
    let mut refused: BTreeMap<usize, String> = BTreeMap::new();
    let mut j = 0;
    for t in &pre.inputs {
        let Some(values) = table.column(&t.column) else {
            return Err(MlError::invalid(format!(
                "column `{}` is missing; the model takes {}",
                t.column,
                pre.inputs.iter().map(|t| t.column.as_str()).collect::<Vec<_>>().join(", ")
            )));
        };
        let used = encode_column(t, values, &mut x, j, &mut refused);
        j += used;
    }
    Ok(Transformed { x, refused: refused.into_iter().collect() })
}

/// Writes column `t`'s features from `j` on; returns how many it wrote.
fn encode_column(
    t: &Transform,
    values: &Values,
    x: &mut Array2<f64>,
    j: usize,
    refused: &mut BTreeMap<usize, String>,
) -> usize {
    let mut refuse = |i: usize, why: String| {
        refused.entry(i).or_insert(why);
    };
    match (&t.encode, &t.fill) {
        (Encoding::Numeric { center, scale }, fill) => {
            let fill = fill.as_f64().unwrap_or(0.0);
            for i in 0..x.nrows() {
                let v = match values {
                    Values::F64(v) => Ok(v[i]),
                    Values::Str(v) => v[i].as_deref().map(str::parse::<f64>).transpose(),
                };
                match v {
                    Ok(v) => x[[i, j]] = (v.unwrap_or(fill) - center) / scale,
                    Err(_) => refuse(i, format!("`{}` is not a number", t.column)),
                }
            }
            1
        }
        (encode, fill) => {
            let text = as_text(values);
            let fill = fill.to_string();
            for (i, cell) in text.iter().enumerate() {
                let value = cell.as_deref().unwrap_or(&fill);
                if let Err(why) = encode_category(t, encode, value, x, i, j) {
                    refuse(i, why);
                }
            }
            match encode {
                Encoding::OneHot { categories, .. } => categories.len(),
                _ => 1,
            }
        }
    }
}

fn encode_category(
    t: &Transform,
    encode: &Encoding,
    value: &str,
    x: &mut Array2<f64>,
    i: usize,
    j: usize,
) -> std::result::Result<(), String> {
    let unknown = |categories: &[String], policy: &str| -> std::result::Result<(), String> {
        if policy == Unknown::Error.as_str() {
            Err(format!("`{}`: {value:?} is not a category the model knows ({})", t.column, categories.join(", ")))
        } else {
            Ok(())
        }
    };
    match encode {
        Encoding::Boolean => match ingest::boolean(value) {
            Some(b) => x[[i, j]] = f64::from(u8::from(b)),
            None => return Err(format!("`{}`: {value:?} is not true or false", t.column)),
        },
        Encoding::OneHot { categories, unknown: policy } => match categories.iter().position(|c| c == value) {
            Some(k) => x[[i, j + k]] = 1.0,
            None => unknown(categories, policy)?,
        },
        Encoding::Ordinal { categories, unknown: policy } => match categories.iter().position(|c| c == value) {
            Some(k) => x[[i, j]] = k as f64,
            None => {
                unknown(categories, policy)?;
                x[[i, j]] = -1.0;
            }
        },
        Encoding::Numeric { .. } => {}
    }
    Ok(())
}

/// The rows of a predict request as a table of the model's input columns: `columns` names the
/// row's values (the inputs in order when absent). A missing input column, a name the table
/// never had, a row of the wrong width, or text in a numeric column is refused naming it; a
/// missing value (`None`) is left for the fill.
pub fn rows_table(pre: &Preprocessor, columns: Option<&[String]>, rows: &[Vec<Option<Cell>>]) -> Result<Table> {
    let inputs: Vec<&str> = pre.inputs.iter().map(|t| t.column.as_str()).collect();
    let names: Vec<String> = match columns {
        Some(c) => c.to_vec(),
        None => inputs.iter().map(|s| (*s).to_owned()).collect(),
    };
    let known = |n: &str| inputs.contains(&n) || n == pre.target || pre.left_out.iter().any(|l| l.column == n);
    if let Some(c) = names.iter().find(|c| !known(c)) {
        return Err(MlError::invalid(format!("column `{c}` is not a column the model was trained on")));
    }
    if let Some((r, row)) = rows.iter().enumerate().find(|(_, row)| row.len() != names.len()) {
        return Err(MlError::invalid(format!("row {} has {} values, not {}", r + 1, row.len(), names.len())));
    }
    let mut table = Table::default();
    for t in &pre.inputs {
        let Some(at) = names.iter().position(|n| *n == t.column) else {
            return Err(MlError::invalid(format!("column `{}` is missing", t.column)));
        };
        let mut values = if t.kind == ColumnKind::Numeric { Values::F64(Vec::new()) } else { Values::Str(Vec::new()) };
        for (r, row) in rows.iter().enumerate() {
            let cell = &row[at];
            match (&mut values, cell) {
                (Values::F64(v), None) => v.push(None),
                (Values::F64(v), Some(Cell::Number(x))) if x.is_finite() => v.push(Some(*x)),
                (Values::F64(v), Some(Cell::Text(s))) if s.parse::<f64>().is_ok_and(f64::is_finite) => {
                    v.push(s.parse().ok());
                }
                (Values::F64(_), Some(other)) => {
                    return Err(MlError::invalid(format!(
                        "row {}, `{}`: {} is not a finite number",
                        r + 1,
                        t.column,
                        cell_text(other)
                    )));
                }
                (Values::Str(v), cell) => v.push(cell.as_ref().map(cell_text)),
            }
        }
        table.names.push(t.column.clone());
        table.columns.push(values);
    }
    Ok(table)
}

/// A cell as text: `2007` for the number 2007, `true` for true.
pub fn cell_text(cell: &Cell) -> String {
    match cell {
        Cell::Number(x) => number_text(*x),
        Cell::Flag(b) => b.to_string(),
        Cell::Text(s) => s.clone(),
    }
}

/// What the fitted preprocessing does, one line a column, for the job's report.
pub fn describe(pre: &Preprocessor) -> Vec<String> {
    pre.inputs
        .iter()
        .map(|t| {
            let how = match &t.encode {
                Encoding::Numeric { center, scale } if *center == 0.0 && *scale == 1.0 => "unscaled".to_owned(),
                Encoding::Numeric { center, scale } => format!("scaled (x - {center:.4}) / {scale:.4}"),
                Encoding::OneHot { categories, unknown } => {
                    format!("one-hot over {} (unknown: {unknown})", categories.join(", "))
                }
                Encoding::Ordinal { categories, unknown } => {
                    format!("ordinal over {} (unknown: {unknown})", categories.join(", "))
                }
                Encoding::Boolean => "1 for true, 0 for false".to_owned(),
            };
            let fill = match &t.fill {
                Hyper::Number(x) => format!("{}", (x * 1e4).round() / 1e4),
                Hyper::Text(s) => s.clone(),
            };
            format!("{} ({}): gaps ← {} {fill}, {how}", t.column, t.kind, t.impute)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_schemas::params::{CategoricalSpec, NumericSpec, ScaleSpec};

    fn table() -> (Table, Vec<Column>) {
        let l = ingest::csv(
            b"x,colour,wet,id,y\n1,red,yes,a,p\n2,blue,no,b,q\n,red,,c,p\n6,,yes,d,q\n4,red,no,e,p\n",
            &warren_schemas::params::IngestParams { max_categories: Some(2), ..Default::default() },
        )
        .expect("csv");
        (l.table, l.columns)
    }

    #[test]
    fn statistics_come_from_the_training_rows_and_gaps_are_filled() {
        let (t, c) = table();
        let train = [0, 1, 2, 3];
        let pre = fit(&t, &c, "y", &train, &FeaturesParams::default()).unwrap();
        assert_eq!(pre.left_out, [LeftOut { column: "id".into(), reason: c[3].note.clone().unwrap() }]);
        assert_eq!(pre.inputs[0].fill, Hyper::Number(3.0), "mean of 1, 2, 6 (row 5 is not a training row)");
        assert_eq!(pre.inputs[1].fill, Hyper::Text("red".into()), "most frequent");
        assert_eq!(feature_names(&pre), ["x", "colour=blue", "colour=red", "wet"]);
        let out = transform(&pre, &t).unwrap();
        let std = (((1.0f64 - 3.0).powi(2) + 1.0 + 0.0 + 9.0) / 4.0).sqrt();
        assert!((out.x[[2, 0]]).abs() < 1e-12, "a gap becomes the mean, scaled: 0");
        assert!((out.x[[0, 0]] - (1.0 - 3.0) / std).abs() < 1e-12);
        assert_eq!(out.x.row(3).to_vec()[1..], [0.0, 1.0, 1.0], "gap → red; yes → 1");
        assert!(out.refused.is_empty());
    }

    #[test]
    fn median_constant_min_max_ordinal_and_unknown_categories() {
        let (t, c) = table();
        let p = FeaturesParams {
            scale: ScaleSpec::Named(Scaling::MinMax),
            numeric: NumericSpec { impute: Impute::Median, fill: 0.0 },
            categorical: CategoricalSpec { impute: Impute::Constant, unknown: Unknown::Error, ..Default::default() },
            columns: [(
                "colour".to_owned(),
                ColumnSpec {
                    encode: Some(Encode::Ordinal),
                    categories: Some(vec!["red".into(), "blue".into()]),
                    ..Default::default()
                },
            )]
            .into(),
            exclude: vec!["wet".into()],
            ..FeaturesParams::default()
        };
        let pre = fit(&t, &c, "y", &[0, 1, 2, 3, 4], &p).unwrap();
        assert_eq!(pre.inputs[0].fill, Hyper::Number(3.0), "median of 1, 2, 4, 6");
        assert_eq!(pre.inputs[0].encode, Encoding::Numeric { center: 1.0, scale: 5.0 });
        assert_eq!(feature_names(&pre), ["x", "colour"]);
        let out = transform(&pre, &t).unwrap();
        assert_eq!(out.x.column(1).to_vec(), [0.0, 1.0, 0.0, 0.0, 0.0]);
        assert_eq!(
            out.refused,
            [(3, "`colour`: \"missing\" is not a category the model knows (red, blue)".to_owned())]
        );
        let rows = vec![vec![Some(Cell::from("green")), Some(Cell::Number(2.0))]];
        let cols = ["colour".to_owned(), "x".to_owned()];
        let raw = rows_table(&pre, Some(&cols), &rows).unwrap();
        assert_eq!(transform(&pre, &raw).unwrap().refused.len(), 1, "unknown = error refuses green");
        let text = vec![vec![Some(Cell::from("red")), Some(Cell::from("two"))]];
        assert_eq!(
            rows_table(&pre, Some(&cols), &text).unwrap_err().to_string(),
            "row 1, `x`: two is not a finite number"
        );
        let typo = ["colour".to_owned(), "xx".to_owned()];
        assert!(rows_table(&pre, Some(&typo), &rows).unwrap_err().to_string().contains("`xx` is not a column"));
        let bad = FeaturesParams { categorical: CategoricalSpec { impute: Impute::Mean, ..Default::default() }, ..p };
        assert!(fit(&t, &c, "y", &[0, 1], &bad).unwrap_err().to_string().contains("needs numbers"));
        let named = FeaturesParams { exclude: vec!["nope".into()], ..FeaturesParams::default() };
        assert!(
            fit(&t, &c, "y", &[0, 1], &named).unwrap_err().to_string().starts_with("exclude: `nope` is not a column")
        );
    }
}
