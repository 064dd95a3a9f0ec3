//! Result sets held in Rust until Python asks for them, in the shape Python asks for.

use crate::compile::Columns;
use crate::value::Value;

/// Rows of one result, row-major in a single vector.
#[derive(Debug, Default)]
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
