//! The checks a dataset must pass before anything is fitted on it. A failure names the column
//! and, where one row is to blame, the row (data rows counted from 1, as below a CSV header).

use std::collections::BTreeMap;

use warren_schemas::{Task, params::ValidateParams};

use crate::{
    MlError, Result,
    table::{Table, Values},
};

/// Checks `table`; returns warnings (for the job's report) or the first problem found.
pub fn check(table: &Table, target: &str, task: Task, p: &ValidateParams) -> Result<Vec<String>> {
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
            Values::F64(v) => v.iter().position(Option::is_none),
            Values::Str(v) => v.iter().position(Option::is_none),
        };
        if let Some(row) = missing {
            return Err(MlError::invalid(format!("column `{name}`, row {}: missing value", row + 1)));
        }
        if name == target {
            continue;
        }
        match col {
            Values::Str(v) => {
                let (row, value) = v
                    .iter()
                    .enumerate()
                    .find_map(|(i, s)| s.as_deref().filter(|s| s.parse::<f64>().is_err()).map(|s| (i, s)))
                    .unwrap_or((0, ""));
                return Err(MlError::invalid(format!(
                    "column `{name}`, row {}: {value:?} is not a number (features must be numeric)",
                    row + 1
                )));
            }
            Values::F64(v) => {
                if let Some(row) = v.iter().position(|x| x.is_some_and(|x| !x.is_finite())) {
                    return Err(MlError::invalid(format!("column `{name}`, row {}: not a finite number", row + 1)));
                }
                let first = v.first().copied().flatten();
                if v.iter().all(|x| *x == first) {
                    let msg = format!("column `{name}` is constant");
                    if p.allow_constant {
                        warnings.push(msg);
                    } else {
                        return Err(MlError::invalid(format!("{msg} (set allow_constant = true to accept it)")));
                    }
                }
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
    fn a_bad_cell_is_named_by_column_and_row() {
        let l = csv("a,b,y\n1,2,p\n2,3,q\n3,x7,p\n4,5,q\n");
        let p = ValidateParams { min_rows: 1, min_class_count: 1, allow_constant: false };
        let err = check(&l.table, &l.target, l.task, &p).unwrap_err().to_string();
        assert!(err.contains("column `b`, row 3") && err.contains("x7"), "{err}");
    }

    #[test]
    fn rows_constants_and_classes_are_checked() {
        let l = csv("a,c,y\n1,5,p\n2,5,q\n3,5,p\n");
        let p = ValidateParams { min_rows: 10, ..Default::default() };
        assert!(check(&l.table, &l.target, l.task, &p).unwrap_err().to_string().contains("too few rows"));
        let p = ValidateParams { min_rows: 1, min_class_count: 1, allow_constant: false };
        assert!(check(&l.table, &l.target, l.task, &p).unwrap_err().to_string().contains("`c` is constant"));
        let p = ValidateParams { min_rows: 1, min_class_count: 2, allow_constant: true };
        assert!(check(&l.table, &l.target, l.task, &p).unwrap_err().to_string().contains("class \"q\""));
    }
}
