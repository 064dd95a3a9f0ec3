//! Result sets held in Rust until Python asks for them, in the shape Python asks for.

use crate::compile::Columns;
use crate::value::Value;

/// Rows of one result, row-major in a single vector.
#[derive(Clone, Debug, Default)]
pub struct RowSet {
    pub columns: Columns,
    pub values: Vec<Value>,
    /// Rows changed by a write statement.
    pub affected: u64,
}

impl RowSet {
    pub fn width(&self) -> usize {
        self.columns.names.len()
    }

    pub fn len(&self) -> usize {
        self.values.len().checked_div(self.width()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn row(&self, i: usize) -> &[Value] {
        let w = self.width();
        &self.values[i * w..(i + 1) * w]
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.names.iter().position(|c| c == name)
    }
}

/// A hashable form of a key value, for grouping rows by key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
    Other(String),
}

impl Key {
    /// `None` for NULL: a NULL key matches nothing.
    pub fn of(v: &Value) -> Option<Key> {
        Some(match v {
            Value::Null => return None,
            Value::Int(i) => Key::Int(*i),
            Value::Bool(b) => Key::Int(*b as i64),
            Value::Text(s) => Key::Text(s.clone()),
            Value::Bytes(b) => Key::Bytes(b.clone()),
            other => Key::Other(format!("{other:?}")),
        })
    }
}

/// The distinct non-NULL values of column `col`, in first-seen order.
pub fn distinct_keys(rows: &RowSet, col: usize) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let w = rows.width();
    if w == 0 {
        return out;
    }
    for row in rows.values.chunks(w) {
        let v = &row[col];
        if let Some(k) = Key::of(v) {
            if seen.insert(k) {
                out.push(v.clone());
            }
        }
    }
    out
}
