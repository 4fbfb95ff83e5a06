//! The checks a dataset must pass before anything is fitted on it. A failure names the column
//! and, where one row is to blame, the row (data rows counted from 1, as below a CSV header).

use std::collections::BTreeMap;

use warren_schemas::{Column, ColumnKind, Task, params::ValidateParams};

use crate::{
    MlError, Result,
    table::{Table, Values},
};

/// Checks `table`; returns warnings (for the job's report) or the first problem found.
/// `columns` gives each column's kind (from ingest): gaps are warnings (features fills them),
/// text columns are left out, and a numeric cell must be finite.
pub fn check(table: &Table, columns: &[Column], target: &str, task: Task, p: &ValidateParams) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let rows = table.rows();
    if (rows as u64) < p.min_rows {
        return Err(MlError::invalid(format!("too few rows: {rows} (at least {} required)", p.min_rows)));
    }
    let Some(t) = table.column(target) else {
        return Err(MlError::invalid(format!("target column `{target}` is missing")));
    };
    for (name, col) in table.names.iter().zip(&table.columns) {
        let missing = match col {
            Values::F64(v) => v.iter().filter(|x| x.is_none()).count(),
            Values::Str(v) => v.iter().filter(|x| x.is_none()).count(),
        };
        let described = columns.iter().find(|c| &c.name == name);
        let kind = described.map_or(
            if matches!(col, Values::F64(_)) { ColumnKind::Numeric } else { ColumnKind::Categorical },
            Column::kind,
        );
        if name == target {
            if missing == rows {
                return Err(MlError::invalid(format!("target `{target}` has no values")));
            }
            if missing > 0 {
                warnings.push(format!("{missing} rows have no `{target}` (features drops them)"));
            }
            continue;
        }
        if let Values::Str(v) = col
            && kind != ColumnKind::Categorical
            && let Some(stray) = crate::ingest::Stray::find(v)
        {
            return Err(MlError::invalid(format!("column `{name}`, {stray}")));
        }
        if kind == ColumnKind::Text {
            let why = described.and_then(|c| c.note.clone()).unwrap_or_else(|| "text".into());
            warnings.push(format!("column `{name}` is left out: {why}"));
            continue;
        }
        if missing == rows {
            return Err(MlError::invalid(format!("column `{name}` has no values")));
        }
        if missing > 0 {
            warnings.push(format!("column `{name}`: {missing} missing values (features fills them)"));
        }
        if let Values::F64(v) = col
            && let Some(row) = v.iter().position(|x| x.is_some_and(|x| !x.is_finite()))
        {
            return Err(MlError::invalid(format!("column `{name}`, row {}: not a finite number", row + 1)));
        }
        let distinct = match col {
            Values::F64(v) => v.iter().flatten().map(|x| x.to_bits()).collect::<std::collections::BTreeSet<_>>().len(),
            Values::Str(v) => v.iter().flatten().collect::<std::collections::BTreeSet<_>>().len(),
        };
        if distinct <= 1 {
            let msg = format!("column `{name}` is constant");
            if p.allow_constant {
                warnings.push(msg);
            } else {
                return Err(MlError::invalid(format!("{msg} (set allow_constant = true to accept it)")));
            }
        }
    }
    if task == Task::Classification {
        let Values::Str(labels) = t else {
            return Err(MlError::invalid(format!("target `{target}` must hold class labels")));
        };
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for l in labels.iter().flatten() {
            *counts.entry(l).or_default() += 1;
        }
        if counts.len() < 2 {
            return Err(MlError::invalid(format!("target `{target}` has fewer than two classes")));
        }
        for (class, n) in &counts {
            if *n < p.min_class_count {
                return Err(MlError::invalid(format!(
                    "class {class:?} of `{target}` has {n} examples (at least {} required)",
                    p.min_class_count
                )));
            }
            if *n < 10 {
                warnings.push(format!("class {class:?} has only {n} examples"));
            }
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest;

    fn csv(text: &str) -> ingest::Loaded {
        ingest::csv(text.as_bytes(), &Default::default()).unwrap()
    }

    #[test]
    fn gaps_and_text_are_warnings_and_a_bad_number_is_named_by_column_and_row() {
        let l = csv("a,b,c,y\n1,2,p,p\n2,,q,q\n3,4,p,p\n4,5,q,\n");
        let p = ValidateParams { min_rows: 1, min_class_count: 1, allow_constant: false };
        let w = check(&l.table, &l.columns, &l.target, l.task, &p).unwrap();
        assert!(w.contains(&"column `b`: 1 missing values (features fills them)".to_owned()), "{w:?}");
        assert!(w.contains(&"1 rows have no `y` (features drops them)".to_owned()), "{w:?}");
        let mut l = csv("a,b,y\n1,2,p\n2,3,q\n3,inf,p\n4,5,q\n");
        let err = check(&l.table, &l.columns, &l.target, l.task, &p).unwrap_err().to_string();
        assert_eq!(err, "column `b`, row 3: not a finite number");
        l.columns[1].kind = Some(ColumnKind::Text);
        assert!(check(&l.table, &l.columns, &l.target, l.task, &p).unwrap()[0].starts_with("column `b` is left out"));
        let mut text = String::from("a,b,y\n");
        for i in 0..12 {
            text.push_str(&format!("{i},{},p\n", if i == 6 { "n/a?".to_owned() } else { i.to_string() }));
        }
        let l = csv(&text);
        let err = check(&l.table, &l.columns, &l.target, l.task, &p).unwrap_err().to_string();
        assert!(err.starts_with("column `b`, row 7: \"n/a?\" is not a number, though 11 of 12 values are"), "{err}");
    }

    #[test]
    fn rows_constants_and_classes_are_checked() {
        let l = csv("a,c,y\n1,5,p\n2,5,q\n3,5,p\n");
        let p = ValidateParams { min_rows: 10, ..Default::default() };
        let c = &l.columns;
        assert!(check(&l.table, c, &l.target, l.task, &p).unwrap_err().to_string().contains("too few rows"));
        let p = ValidateParams { min_rows: 1, min_class_count: 1, allow_constant: false };
        assert!(check(&l.table, c, &l.target, l.task, &p).unwrap_err().to_string().contains("`c` is constant"));
        let p = ValidateParams { min_rows: 1, min_class_count: 2, allow_constant: true };
        assert!(check(&l.table, c, &l.target, l.task, &p).unwrap_err().to_string().contains("class \"q\""));
    }
}
