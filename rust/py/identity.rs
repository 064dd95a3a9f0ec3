//! A session's identity map: one Python object per row, and the column values it was last
//! read or written with, so that a flush can send just the columns that changed.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyWeakrefMethods, PyWeakrefReference};

use super::model::ModelHandle;
use crate::rows::{FastMap, Key};
use crate::value::Value;

struct Entry {
    obj: Py<PyWeakrefReference>,
    snapshot: Vec<Value>,
}

#[derive(Default)]
struct Entries {
    map: FastMap<(u32, Key), Entry>,
    /// Size at which dead entries are next swept, so a session that streams or reads many
    /// short-lived objects keeps a map the size of what is alive, at O(1) amortised cost.
    sweep_at: usize,
}

/// Objects are held weakly: the map never keeps an instance alive on its own.
#[pyclass(frozen, module = "ormkit._ormkit")]
#[derive(Default)]
pub struct IdentityMap {
    entries: Mutex<Entries>,
}

/// A row read again for an object the session already holds.
pub struct Hit<'py> {
    pub obj: Bound<'py, PyAny>,
    /// What the object was last read with, when the row now differs from it; the row
    /// becomes the new snapshot.
    pub stale: Option<Vec<Value>>,
}

impl IdentityMap {
    /// The session's object for a row just read; the row becomes its snapshot.
    pub fn hit<'py>(&self, py: Python<'py>, model: u32, key: &Key, row: &[Value]) -> Option<Hit<'py>> {
        let mut entries = self.entries.lock().unwrap();
        let e = entries.map.get_mut(&(model, key.clone()))?;
        let obj = e.obj.bind(py).upgrade()?;
        let stale = (e.snapshot.as_slice() != row).then(|| std::mem::replace(&mut e.snapshot, row.to_vec()));
        Some(Hit { obj, stale })
    }

    pub fn remember(&self, obj: &Bound<'_, PyAny>, model: u32, key: Key, snapshot: Vec<Value>) -> PyResult<()> {
        let py = obj.py();
        let weak = PyWeakrefReference::new(obj)?.unbind();
        let mut entries = self.entries.lock().unwrap();
        if entries.map.len() >= entries.sweep_at {
            entries.map.retain(|_, e| e.obj.bind(py).upgrade().is_some());
            entries.sweep_at = (entries.map.len() * 2).max(1024);
        }
        entries.map.insert((model, key), Entry { obj: weak, snapshot });
        Ok(())
    }

    pub fn forget(&self, model: u32, key: &Key) {
        self.entries.lock().unwrap().map.remove(&(model, key.clone()));
    }

    pub fn forget_model(&self, model: u32) {
        self.entries.lock().unwrap().map.retain(|(m, _), _| *m != model);
    }

    /// Every live object with its model and snapshot; dead entries are dropped.
    pub fn live<'py>(&self, py: Python<'py>) -> Vec<(u32, Key, Bound<'py, PyAny>, Vec<Value>)> {
        let mut entries = self.entries.lock().unwrap();
        entries.map.retain(|_, e| e.obj.bind(py).upgrade().is_some());
        entries
            .map
            .iter()
            .filter_map(|((m, k), e)| e.obj.bind(py).upgrade().map(|o| (*m, k.clone(), o, e.snapshot.clone())))
            .collect()
    }
}

#[pymethods]
impl IdentityMap {
    #[new]
    fn new() -> Self {
        IdentityMap::default()
    }

    /// Takes the current values of `columns` (names) of `obj` as what the database holds,
    /// after `refresh()` has copied them from a fresh read: they are no longer changes.
    fn settle(&self, handle: &ModelHandle, obj: &Bound<'_, PyAny>, columns: Vec<String>) -> PyResult<()> {
        let now = handle.snapshot(obj)?;
        let Some(key) = Key::of(&now[handle.schema.pk]) else { return Ok(()) };
        let mut entries = self.entries.lock().unwrap();
        match entries.map.get_mut(&(handle.schema.id, key.clone())) {
            Some(e) => {
                for (i, c) in handle.schema.columns.iter().enumerate() {
                    if columns.contains(&c.name) {
                        e.snapshot[i] = now[i].clone();
                    }
                }
                Ok(())
            }
            None => {
                drop(entries);
                self.remember(obj, handle.schema.id, key, now)
            }
        }
    }

    /// Forgets every object (after a rollback their state may not match the database).
    fn clear(&self) {
        self.entries.lock().unwrap().map.clear();
    }

    fn __len__(&self) -> usize {
        self.entries.lock().unwrap().map.len()
    }
}
