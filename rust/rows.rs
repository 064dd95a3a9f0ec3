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

/// A fast non-cryptographic hasher for grouping rows by key (keys come from the database,
/// not from an adversary choosing collisions against this process's tables).
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        for b in chunks.remainder() {
            self.write_u64(*b as u64);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(SEED);
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }

    fn write_u8(&mut self, v: u8) {
        self.write_u64(v as u64);
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    fn write_i64(&mut self, v: i64) {
        self.write_u64(v as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FastMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;
pub type FastSet<K> = std::collections::HashSet<K, std::hash::BuildHasherDefault<FastHasher>>;
