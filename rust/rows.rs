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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Int(i64),
    // Boxed rather than growable: a key never changes, and the identity map keeps one per
    // tracked row, so a smaller key keeps more of its table in the cache.
    Text(Box<str>),
    Bytes(Box<[u8]>),
    Other(Box<str>),
}

impl Key {
    /// `None` for NULL: a NULL key matches nothing.
    pub fn of(v: &Value) -> Option<Key> {
        Some(match v {
            Value::Null => return None,
            Value::Int(i) => Key::Int(*i),
            Value::Bool(b) => Key::Int(*b as i64),
            Value::Text(s) => Key::Text(s.as_str().into()),
            Value::Bytes(b) => Key::Bytes(b.as_slice().into()),
            other => Key::Other(format!("{other:?}").into()),
        })
    }
}

impl std::hash::Hash for Key {
    /// An integer key hashes as the integer alone: it is by far the most common key, and the
    /// variant tag would cost the hasher another round for every row. Keys of other kinds
    /// hash with a tag of their own; equal hashes across kinds are told apart by `Eq`.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Key::Int(i) => state.write_i64(*i),
            Key::Text(s) => {
                state.write_u8(1);
                s.hash(state);
            }
            Key::Bytes(b) => {
                state.write_u8(2);
                b.hash(state);
            }
            Key::Other(s) => {
                state.write_u8(3);
                s.hash(state);
            }
        }
    }
}

/// A fast non-cryptographic hasher for grouping rows by key (keys come from the database,
/// not from an adversary choosing collisions against this process's tables).
///
/// Integer keys (`Key::Int`, hashed through `write_i64`) keep their order in the low four
/// bits of the hash: each run of 16 neighbouring keys fills one group of 16 buckets, so rows
/// read in key order (the usual `ORDER BY id`, or ids handed out by a sequence) miss the
/// cache once per 16 rows instead of once per row. Runs start at groups mixed from the rest
/// of the key: longer runs of neighbouring buckets would overlap and make lookups probe
/// past one another. The top seven bits, which the table compares to tell slots apart, are
/// mixed from the whole key.
#[derive(Default, Clone, Copy)]
pub struct FastHasher {
    mixed: u64,
    local: u64,
    has_local: bool,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
const TOP7: u64 = !0 << 57;

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
        self.mixed = (self.mixed.rotate_left(5) ^ v).wrapping_mul(SEED);
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
        if self.has_local {
            // Only the last integer keeps its order; any before it are mixed like the rest.
            self.write_u64(self.local);
        }
        // Keys far apart (strides of 2^k included) spread: the run's group is mixed from
        // all the bits above the low four.
        let v = v as u64;
        let mut run = v >> 4;
        run = (run ^ (run >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        run ^= run >> 33;
        self.local = (v & 15) | (run & !15);
        self.has_local = true;
    }

    fn finish(&self) -> u64 {
        if !self.has_local {
            // A product's low bits depend only on the input's low bits, which are zero for
            // aligned addresses: fold the high half down, where the table takes its index.
            return self.mixed ^ (self.mixed >> 32);
        }
        // What came before the integer (a model number, an enum tag) moves its run of
        // buckets elsewhere in the table.
        let low = (self.mixed.rotate_left(26) & !15).wrapping_add(self.local);
        let top = (low ^ (low >> 29)).wrapping_mul(SEED) & TOP7;
        (low & !TOP7) | top
    }
}

pub type FastMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;
pub type FastSet<K> = std::collections::HashSet<K, std::hash::BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::{FastHasher, Key};

    fn hash<T: std::hash::Hash>(v: &T) -> u64 {
        BuildHasherDefault::<FastHasher>::default().hash_one(v)
    }

    #[test]
    fn integer_keys_keep_their_order_in_the_low_bits() {
        let low = |h: u64| h & ((1 << 57) - 1);
        let base = hash(&(7u32, Key::Int(2048)));
        for i in 0..16i64 {
            let h = hash(&(7u32, Key::Int(2048 + i)));
            assert_eq!(low(h), low(base).wrapping_add(i as u64) & ((1 << 57) - 1));
        }
        // Runs of 16 spread over the table's groups (about 625 runs in 65,536 groups).
        let groups: std::collections::HashSet<u64> =
            (1..=10_000i64).map(|i| (hash(&(7u32, Key::Int(i))) >> 4) & 0xffff).collect();
        assert!(groups.len() > 600, "{} groups", groups.len());
        // The seven tag bits are spread over all their values.
        let tags: std::collections::HashSet<u64> = (0..1024i64).map(|i| hash(&Key::Int(i)) >> 57).collect();
        assert_eq!(tags.len(), 128);
        // Another model's rows go elsewhere in the table.
        assert_ne!(low(hash(&(8u32, Key::Int(2048)))), low(base));
    }

    #[test]
    fn strides_of_powers_of_two_stay_apart_and_pairs_do_not_cancel() {
        for shift in [4, 10, 20, 30, 40, 50] {
            let buckets: std::collections::HashSet<u64> =
                (1..=1000i64).map(|i| hash(&Key::Int(i << shift)) & 0xf_ffff).collect();
            assert!(buckets.len() > 950, "shift {shift}: {} buckets", buckets.len());
        }
        assert_ne!(hash(&(Key::Int(1), Key::Int(2))), hash(&(Key::Int(2), Key::Int(1))));
        assert_ne!(hash(&(Key::Int(1), Key::Int(2))), hash(&(Key::Int(2), Key::Int(1 + 1))));
    }

    #[test]
    fn aligned_object_addresses_spread() {
        // Sets of pointers: aligned, at a fixed stride.
        for stride in [16usize, 48, 64, 128, 4096] {
            let buckets: std::collections::HashSet<u64> =
                (1..=10_000usize).map(|i| hash(&(0x7f00_0000_0000 + i * stride)) & 0x3fff).collect();
            assert!(buckets.len() > 5_000, "stride {stride}: {} buckets", buckets.len());
        }
    }
}
