//! A session's identity map: one Python object per row, and the column values it was last
//! read or written with, so that a flush can send just the columns that changed.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyWeakrefMethods, PyWeakrefReference};

use crate::rows::{FastMap, Key};
use crate::value::Value;

struct Entry {
    obj: Py<PyWeakrefReference>,
    snapshot: Vec<Value>,
}

/// Objects are held weakly: the map never keeps an instance alive on its own.
#[pyclass(frozen, module = "ormkit._ormkit")]
#[derive(Default)]
pub struct IdentityMap {
    entries: Mutex<FastMap<(u32, Key), Entry>>,
}

impl IdentityMap {
    pub fn lookup<'py>(&self, py: Python<'py>, model: u32, key: &Key) -> Option<Bound<'py, PyAny>> {
        let entries = self.entries.lock().unwrap();
        entries.get(&(model, key.clone())).and_then(|e| e.obj.bind(py).upgrade())
    }

    pub fn remember(&self, obj: &Bound<'_, PyAny>, model: u32, key: Key, snapshot: Vec<Value>) -> PyResult<()> {
        let weak = PyWeakrefReference::new(obj)?.unbind();
        self.entries.lock().unwrap().insert((model, key), Entry { obj: weak, snapshot });
        Ok(())
    }

    pub fn forget(&self, model: u32, key: &Key) {
        self.entries.lock().unwrap().remove(&(model, key.clone()));
    }

    pub fn forget_model(&self, model: u32) {
        self.entries.lock().unwrap().retain(|(m, _), _| *m != model);
    }

    /// Every live object with its model and snapshot; dead entries are dropped.
    pub fn live<'py>(&self, py: Python<'py>) -> Vec<(u32, Key, Bound<'py, PyAny>, Vec<Value>)> {
        let mut entries = self.entries.lock().unwrap();
        entries.retain(|_, e| e.obj.bind(py).upgrade().is_some());
        entries
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

    /// Forgets every object (after a rollback their state may not match the database).
    fn clear(&self) {
        self.entries.lock().unwrap().clear();
    }

    fn __len__(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}
