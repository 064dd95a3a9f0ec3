//! A session's identity map: one Python object per row, and the column values and related
//! objects it was last read or written with, so that a flush can send just what changed.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyWeakrefMethods, PyWeakrefReference};

use super::model::ModelHandle;
use crate::rows::{FastMap, Key};
use crate::value::Value;

struct Entry {
    obj: Py<PyWeakrefReference>,
    snapshot: Vec<Value>,
    /// Loaded relationships as last read or written, by relation index: a tuple of the
    /// collection's objects, or the related object (or None) of a scalar relation.
    rels: RelSnapshots,
}

#[derive(Default)]
struct Entries {
    map: FastMap<(u32, Key), Entry>,
    /// Size at which dead entries are next swept, so a session that streams or reads many
    /// short-lived objects keeps a map the size of what is alive, at O(1) amortised cost.
    sweep_at: usize,
}

/// A weak reference to `obj`, left out of the cyclic collector's lists: without a callback
/// it holds no strong reference, so it can be part of no cycle, and a map of thousands of
/// them would otherwise make every collection walk them.
fn weak_ref(obj: &Bound<'_, PyAny>) -> PyResult<Py<PyWeakrefReference>> {
    let weak = PyWeakrefReference::new(obj)?;
    // SAFETY: `weak` is a live, GC-tracked weak reference without a callback; untracking
    // only removes it from the collector's lists (its dealloc untracks again, harmlessly).
    unsafe { pyo3::ffi::PyObject_GC_UnTrack(weak.as_ptr().cast()) };
    Ok(weak.unbind())
}

/// Removes and returns the entries matching `pred`, for the caller to drop after unlocking.
fn take_where(map: &mut FastMap<(u32, Key), Entry>, pred: impl Fn(&(u32, Key), &Entry) -> bool) -> Vec<Entry> {
    let keys: Vec<(u32, Key)> = map.iter().filter(|(k, e)| pred(k, e)).map(|(k, _)| k.clone()).collect();
    keys.iter().filter_map(|k| map.remove(k)).collect()
}

/// Relation snapshots by relation index (see `Entry::rels`).
pub type RelSnapshots = Vec<(usize, Py<PyAny>)>;

impl Entries {
    /// Drops the entries of dead objects once the map (with `adding` more) has outgrown
    /// twice what was alive at the last sweep; `usize::MAX` sweeps now. Relation snapshots
    /// can hold live objects, so they go to `rels` to be dropped after unlocking; the rest
    /// (dead weak references, values) runs no Python code when dropped.
    fn sweep(&mut self, py: Python<'_>, adding: usize, rels: &mut Vec<RelSnapshots>) {
        if adding != usize::MAX && self.map.len().saturating_add(adding) <= self.sweep_at {
            return;
        }
        self.map.retain(|_, e| {
            let alive = e.obj.bind(py).upgrade().is_some();
            if !alive && !e.rels.is_empty() {
                rels.push(std::mem::take(&mut e.rels));
            }
            alive
        });
        let room = if adding == usize::MAX { 0 } else { adding };
        self.sweep_at = (self.map.len().saturating_add(room) * 2).max(1024);
    }
}

/// Objects are held weakly: the map never keeps an instance alive on its own.
///
/// Python references are never dropped while the lock is held: a drop can run arbitrary
/// finalizers, which must not find the map locked.
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

/// One tracked object, as `live()` hands it to a flush.
pub struct Tracked<'py> {
    pub model: u32,
    pub obj: Bound<'py, PyAny>,
    pub snapshot: Vec<Value>,
    pub rels: Vec<(usize, Bound<'py, PyAny>)>,
}

impl IdentityMap {
    /// Objects for the rows of one model (`values`, `width` per row): the session's object
    /// for a row it already holds, brought up to date by `refresh(obj, old, new)` when the row
    /// changed, else a new one from `make`, then tracked. One lock and one probe per row, and
    /// each row's values move into its snapshot instead of being copied.
    #[allow(clippy::too_many_arguments)]
    pub fn objects_for<'py>(
        &self,
        py: Python<'py>,
        model: u32,
        pk: usize,
        width: usize,
        values: Vec<Value>,
        make: impl Fn(&[Value]) -> PyResult<Bound<'py, PyAny>>,
        refresh: impl Fn(&Bound<'py, PyAny>, &[Value], &[Value]) -> PyResult<()>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let n = values.len().checked_div(width).unwrap_or(0);
        let mut out = Vec::with_capacity(n);
        let mut stale: Vec<(Bound<'py, PyAny>, Vec<Value>, Vec<Value>)> = Vec::new();
        let mut dropped: Vec<Entry> = Vec::new();
        let mut dropped_rels: Vec<RelSnapshots> = Vec::new();
        {
            let mut entries = self.guard()?;
            entries.sweep(py, n, &mut dropped_rels);
            entries.map.reserve(n);
            let mut it = values.into_iter();
            for _ in 0..n {
                let row: Vec<Value> = it.by_ref().take(width).collect();
                let Some(key) = Key::of(&row[pk]) else {
                    out.push(make(&row)?);
                    continue;
                };
                match entries.map.entry((model, key)) {
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        if let Some(obj) = o.get().obj.bind(py).upgrade() {
                            if o.get().snapshot != row {
                                let old = std::mem::replace(&mut o.get_mut().snapshot, row.clone());
                                stale.push((obj.clone(), old, row));
                            }
                            out.push(obj);
                            continue;
                        }
                        let obj = make(&row)?;
                        let weak = weak_ref(&obj)?;
                        dropped.push(std::mem::replace(o.get_mut(), Entry { obj: weak, snapshot: row, rels: vec![] }));
                        out.push(obj);
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let obj = make(&row)?;
                        let weak = weak_ref(&obj)?;
                        v.insert(Entry { obj: weak, snapshot: row, rels: vec![] });
                        out.push(obj);
                    }
                }
            }
        }
        drop(dropped);
        drop(dropped_rels);
        for (obj, old, new) in &stale {
            refresh(obj, old, new)?;
        }
        Ok(out)
    }

    /// Tracks many objects of one model with their snapshots (and relation snapshots, the
    /// same for all) under one lock.
    pub fn remember_batch(
        &self,
        py: Python<'_>,
        model: u32,
        pk: usize,
        items: Vec<(Bound<'_, PyAny>, Vec<Value>)>,
        rels: Option<RelSnapshots>,
    ) -> PyResult<()> {
        let mut weak = Vec::with_capacity(items.len());
        for (obj, _) in &items {
            weak.push(weak_ref(obj)?);
        }
        let rels_for = |py: Python<'_>| -> RelSnapshots {
            rels.as_ref().map(|r| r.iter().map(|(i, v)| (*i, v.clone_ref(py))).collect()).unwrap_or_default()
        };
        let mut dropped: Vec<Entry> = Vec::new();
        let mut dropped_rels: Vec<RelSnapshots> = Vec::new();
        {
            let mut entries = self.guard()?;
            entries.sweep(py, items.len(), &mut dropped_rels);
            entries.map.reserve(items.len());
            for ((_, snapshot), obj) in items.into_iter().zip(weak) {
                let Some(key) = Key::of(&snapshot[pk]) else { continue };
                let entry = Entry { obj, snapshot, rels: rels_for(py) };
                if let Some(old) = entries.map.insert((model, key), entry) {
                    dropped.push(old);
                }
            }
        }
        drop(dropped);
        drop(dropped_rels);
        drop(rels);
        Ok(())
    }

    /// The lock; everything runs under the GIL on one thread, so finding it taken means a
    /// finalizer reached the map while it was being changed: an error, never a deadlock.
    fn guard(&self) -> PyResult<std::sync::MutexGuard<'_, Entries>> {
        self.entries.try_lock().map_err(|_| {
            crate::errors::Error::interface("the session's identity map was used while it was being updated").into()
        })
    }

    /// The session's object for a row just read; the row becomes its snapshot.
    pub fn hit<'py>(&self, py: Python<'py>, model: u32, key: &Key, row: &[Value]) -> Option<Hit<'py>> {
        let mut entries = self.guard().ok()?;
        let e = entries.map.get_mut(&(model, key.clone()))?;
        let obj = e.obj.bind(py).upgrade()?;
        let stale = (e.snapshot.as_slice() != row).then(|| std::mem::replace(&mut e.snapshot, row.to_vec()));
        Some(Hit { obj, stale })
    }

    /// Tracks `obj` with the given column values; `rels` replaces its relation snapshots
    /// when given, else the ones it had are kept.
    pub fn remember(
        &self,
        obj: &Bound<'_, PyAny>,
        model: u32,
        key: Key,
        snapshot: Vec<Value>,
        rels: Option<RelSnapshots>,
    ) -> PyResult<()> {
        let py = obj.py();
        let weak = weak_ref(obj)?;
        let mut entries = self.guard()?;
        let mut dropped: Vec<Entry> = Vec::new();
        let mut dropped_rels: Vec<RelSnapshots> = Vec::new();
        entries.sweep(py, 1, &mut dropped_rels);
        let slot = entries.map.entry((model, key));
        match slot {
            std::collections::hash_map::Entry::Occupied(mut o) if rels.is_none() && o.get().obj.bind(py).is(obj) => {
                o.get_mut().snapshot = snapshot;
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let old = std::mem::replace(o.get_mut(), Entry { obj: weak, snapshot, rels: rels.unwrap_or_default() });
                dropped.push(old);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Entry { obj: weak, snapshot, rels: rels.unwrap_or_default() });
            }
        }
        drop(entries);
        drop(dropped);
        drop(dropped_rels);
        Ok(())
    }

    /// Records what a relation of a tracked object was just loaded with.
    pub fn note_relation(&self, model: u32, key: Key, rel: usize, value: Py<PyAny>) {
        let Ok(mut entries) = self.guard() else { return };
        let old = match entries.map.get_mut(&(model, key)) {
            Some(e) => match e.rels.iter_mut().find(|(i, _)| *i == rel) {
                Some(slot) => Some(std::mem::replace(&mut slot.1, value)),
                None => {
                    e.rels.push((rel, value));
                    None
                }
            },
            None => Some(value),
        };
        drop(entries);
        drop(old);
    }

    pub fn forget(&self, model: u32, key: &Key) {
        let old = self.guard().ok().and_then(|mut e| e.map.remove(&(model, key.clone())));
        drop(old);
    }

    pub fn forget_model(&self, model: u32) {
        let old: Vec<Entry> = take_where(&mut self.entries.lock().unwrap().map, |(m, _), _| *m == model);
        drop(old);
    }

    /// Every live object with its model and snapshots; dead entries are dropped.
    pub fn live<'py>(&self, py: Python<'py>) -> PyResult<Vec<Tracked<'py>>> {
        let mut entries = self.guard()?;
        let mut dead: Vec<RelSnapshots> = Vec::new();
        entries.sweep(py, usize::MAX, &mut dead);
        let live = entries
            .map
            .iter()
            .filter_map(|((m, _), e)| {
                e.obj.bind(py).upgrade().map(|obj| Tracked {
                    model: *m,
                    obj,
                    snapshot: e.snapshot.clone(),
                    rels: e.rels.iter().map(|(i, v)| (*i, v.bind(py).clone())).collect(),
                })
            })
            .collect();
        drop(entries);
        drop(dead);
        Ok(live)
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
        let mut entries = self.guard()?;
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
                self.remember(obj, handle.schema.id, key, now, None)
            }
        }
    }

    /// Forgets every object (after a rollback their state may not match the database).
    fn clear(&self) -> PyResult<()> {
        let old = std::mem::take(&mut self.guard()?.map);
        drop(old);
        Ok(())
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.guard()?.map.len())
    }
}
