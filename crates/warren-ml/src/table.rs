//! A small columnar table: numeric columns (`f64`, missing allowed) and text columns, written
//! and read as an Arrow IPC file (Feather v2), which pandas, polars and DuckDB open directly.

use std::{io::Cursor, sync::Arc};

use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_ipc::{reader::FileReader, writer::FileWriter};
use arrow_schema::{DataType, Field, Schema};
use warren_schemas::Column;

use crate::{MlError, Result};

/// One column's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Numbers; `None` is a missing value.
    F64(Vec<Option<f64>>),
    /// Text; `None` is a missing value.
    Str(Vec<Option<String>>),
}

impl Values {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Values::F64(v) => v.len(),
            Values::Str(v) => v.len(),
        }
    }
    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Arrow's name of the type.
    pub fn dtype(&self) -> &'static str {
        match self {
            Values::F64(_) => "Float64",
            Values::Str(_) => "Utf8",
        }
    }
    /// The rows at `idx`, in that order.
    pub fn take(&self, idx: &[usize]) -> Values {
        match self {
            Values::F64(v) => Values::F64(idx.iter().map(|&i| v[i]).collect()),
            Values::Str(v) => Values::Str(idx.iter().map(|&i| v[i].clone()).collect()),
        }
    }
}

/// Named columns of equal length.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// Column names.
    pub names: Vec<String>,
    /// Column values, parallel to `names`.
    pub columns: Vec<Values>,
}

impl Table {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, Values::len)
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Values> {
        self.names.iter().position(|n| n == name).map(|i| &self.columns[i])
    }

    /// Column names and types, for payloads.
    pub fn schema(&self) -> Vec<Column> {
        self.names
            .iter()
            .zip(&self.columns)
            .map(|(n, c)| Column { name: n.clone(), dtype: c.dtype().to_owned(), kind: None, note: None })
            .collect()
    }

    /// The rows at `idx`.
    pub fn take(&self, idx: &[usize]) -> Table {
        Table { names: self.names.clone(), columns: self.columns.iter().map(|c| c.take(idx)).collect() }
    }

    /// Encodes as an Arrow IPC file. The same table always gives the same bytes.
    pub fn to_ipc(&self) -> Result<Vec<u8>> {
        let fields: Vec<Field> = self
            .names
            .iter()
            .zip(&self.columns)
            .map(|(n, c)| {
                let dt = match c {
                    Values::F64(_) => DataType::Float64,
                    Values::Str(_) => DataType::Utf8,
                };
                Field::new(n, dt, true)
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|c| -> ArrayRef {
                match c {
                    Values::F64(v) => Arc::new(Float64Array::from(v.clone())),
                    Values::Str(v) => Arc::new(StringArray::from(v.clone())),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(MlError::invalid)?;
        let mut writer = FileWriter::try_new(Vec::new(), &schema).map_err(MlError::invalid)?;
        writer.write(&batch).map_err(MlError::invalid)?;
        writer.finish().map_err(MlError::invalid)?;
        writer.into_inner().map_err(MlError::invalid)
    }

    /// Decodes an Arrow IPC file with Float64 and Utf8 columns.
    pub fn from_ipc(bytes: &[u8]) -> Result<Table> {
        let reader = FileReader::try_new(Cursor::new(bytes), None)
            .map_err(|e| MlError::invalid(format!("not an Arrow IPC file: {e}")))?;
        let schema = reader.schema();
        let mut table = Table {
            names: schema.fields().iter().map(|f| f.name().clone()).collect(),
            columns: schema
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Utf8 => Ok(Values::Str(Vec::new())),
                    DataType::Float64 => Ok(Values::F64(Vec::new())),
                    other => Err(MlError::invalid(format!("column {}: unsupported type {other}", f.name()))),
                })
                .collect::<Result<_>>()?,
        };
        for batch in reader {
            let batch = batch.map_err(|e| MlError::invalid(format!("bad Arrow batch: {e}")))?;
            for (i, col) in table.columns.iter_mut().enumerate() {
                let array = batch.column(i);
                match col {
                    Values::F64(v) => {
                        let a = array
                            .as_any()
                            .downcast_ref::<Float64Array>()
                            .ok_or_else(|| MlError::invalid("column type changed between batches"))?;
                        v.extend((0..a.len()).map(|r| a.is_valid(r).then(|| a.value(r))));
                    }
                    Values::Str(v) => {
                        let a = array
                            .as_any()
                            .downcast_ref::<StringArray>()
                            .ok_or_else(|| MlError::invalid("column type changed between batches"))?;
                        v.extend((0..a.len()).map(|r| a.is_valid(r).then(|| a.value(r).to_owned())));
                    }
                }
            }
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipc_round_trips_and_is_deterministic() {
        let t = Table {
            names: vec!["x".into(), "label".into()],
            columns: vec![
                Values::F64(vec![Some(1.5), None, Some(-2.0)]),
                Values::Str(vec![Some("a".into()), Some("b".into()), None]),
            ],
        };
        let bytes = t.to_ipc().unwrap();
        assert_eq!(Table::from_ipc(&bytes).unwrap(), t);
        assert_eq!(t.to_ipc().unwrap(), bytes);
    }
}
