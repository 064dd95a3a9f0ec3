//! A session's identity map: one Python object per row, and the column values and related
//! keys it was last read or written with, so that a flush can send just what changed.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyWeakrefMethods, PyWeakrefReference};

use super::model::ModelHandle;
use crate::rows::{FastMap, FastSet, Key};
use crate::value::Value;

/// What a relationship held when it was last loaded or written, as the values of the
/// related rows' linking column (the key of a child, the referenced column of a parent or
/// of a many-to-many target). Values, not objects: the map must not keep objects alive.
#[derive(Clone, Debug, PartialEq)]
pub enum RelSnap {
    Many(Vec<Value>),
    One(Value),
    /// Left empty by `noload()`: what the database holds is not known. For a collection,
    /// the address of the empty list it was given, to tell it from one the user assigned.
    Unknown(usize),
}

/// Relation snapshots by relation index.
pub type RelSnapshots = Vec<(usize, RelSnap)>;

/// A row's values as last read or written: `len` values from `start` in a result's values
/// (shared by every row of that result, so reading costs no copy per row), or values of its
/// own (`start` 0 and `len` all of them). Both kinds are shared, so that a flush can look at
/// every tracked row without copying. Offsets are 32-bit to keep the map's entries small.
#[derive(Clone, Debug)]
struct Snap {
    values: Arc<Vec<Value>>,
    start: u32,
    len: u32,
}

impl Snap {
    fn owned(values: Vec<Value>) -> Snap {
        match u32::try_from(values.len()) {
            Ok(len) => Snap { values: Arc::new(values), start: 0, len },
            Err(_) => unreachable!("a row has fewer than 2^32 columns"),
        }
    }

    /// A row inside a shared result; copied out if its place does not fit the offsets.
    #[inline]
    fn shared(values: &Arc<Vec<Value>>, start: usize, len: usize) -> Snap {
        match (u32::try_from(start), u32::try_from(len)) {
            (Ok(s), Ok(l)) => Snap { values: values.clone(), start: s, len: l },
            _ => Snap::owned(values[start..start + len].to_vec()),
        }
    }

    fn get(&self) -> &[Value] {
        let start = self.start as usize;
        &self.values[start..start + self.len as usize]
    }

    /// Whether it is a row of a larger result (not values of its own).
    fn is_shared(&self) -> bool {
        self.len as usize != self.values.len()
    }

    fn make_mut(&mut self) -> &mut Vec<Value> {
        if self.is_shared() {
            *self = Snap::owned(self.get().to_vec());
        }
        // Copied first if a flush still looks at it.
        Arc::make_mut(&mut self.values)
    }
}

/// A tracked row's values as `live()` hands them to a flush: shared with the map, not copied.
#[derive(Clone, Debug)]
pub struct SnapshotRef(Snap);

impl std::ops::Deref for SnapshotRef {
    type Target = [Value];

    fn deref(&self) -> &[Value] {
        self.0.get()
    }
}

struct Entry {
    obj: Py<PyWeakrefReference>,
    snapshot: Snap,
    rels: Rels,
}

/// A tracked row's relation snapshots. Most rows have none: boxed, so that an entry stays
/// small and more of the map's table fits in the cache.
#[derive(Default)]
struct Rels(Option<Box<RelSnapshots>>);

impl Rels {
    fn of(rels: RelSnapshots) -> Rels {
        Rels((!rels.is_empty()).then(|| Box::new(rels)))
    }

    fn get(&self) -> &[(usize, RelSnap)] {
        self.0.as_deref().map_or(&[], |v| v.as_slice())
    }

    fn set(&mut self, rel: usize, value: RelSnap) {
        let rels = self.0.get_or_insert_with(Default::default);
        match rels.iter_mut().find(|(i, _)| *i == rel) {
            Some(slot) => slot.1 = value,
            None => rels.push((rel, value)),
        }
    }

    fn remove(&mut self, rel: usize) {
        if let Some(rels) = self.0.as_mut() {
            rels.retain(|(i, _)| *i != rel);
        }
    }
}

#[derive(Default)]
struct Entries {
    map: FastMap<(u32, Key), Entry>,
    /// Size at which dead entries are next swept, so a session that streams or reads many
    /// short-lived objects keeps a map the size of what is alive, at O(1) amortised cost.
    sweep_at: usize,
    /// Rows this session deleted since its last flush: a flush leaves them alone.
    deleted: FastSet<(u32, Key)>,
    /// Inside a transaction: the rows inserted and deleted in it, in order, so that rolling
    /// it (or a savepoint) back undoes exactly those.
    inserted: Option<Vec<TxEvent>>,
}

enum TxEvent {
    /// A row inserted in the transaction; whether its key was generated (a rollback takes a
    /// generated key back, and leaves one the user gave).
    Inserted((u32, Key), bool),
    /// A row the session first met through an upsert (which may have inserted it or changed
    /// it): the object, and the key attribute it had before the upsert filled it in.
    Upserted((u32, Key), Py<PyAny>, Py<PyAny>),
    /// A tracked object another object took the place of.
    Replaced((u32, Key), Entry),
    Removed((u32, Key), Entry),
    /// The snapshot a row had before the transaction changed it.
    Updated((u32, Key), Vec<Value>),
    /// The snapshot a row had before it was read again, changed, in the transaction. In a
    /// transaction that wrote nothing, the change was committed by others and stands after a
    /// rollback.
    Read((u32, Key), Vec<Value>),
    /// The transaction wrote to the database: a row read again afterwards may show that write
    /// or what the database did with it (ON DELETE SET NULL, a trigger, a bulk update), which
    /// a rollback undoes.
    Wrote,
    /// What the session recorded of one relationship of a row changed in the transaction (it
    /// was loaded or written in it), so after a rollback it says nothing of the database.
    Relation((u32, Key), usize),
}

fn log_update(log: &mut Option<Vec<TxEvent>>, key: &(u32, Key), old: &[Value]) {
    if let Some(l) = log.as_mut() {
        l.push(TxEvent::Updated(key.clone(), old.to_vec()));
    }
}

/// Logs the entry a transaction replaced at `key`: the whole entry while its object lives
/// (a rollback puts it back), else the snapshot it had.
fn log_replaced(py: Python<'_>, log: &mut Option<Vec<TxEvent>>, key: &(u32, Key), old: Entry) {
    match log.as_mut() {
        Some(l) if old.obj.bind(py).upgrade().is_some() => l.push(TxEvent::Replaced(key.clone(), old)),
        _ => log_update(log, key, old.snapshot.get()),
    }
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

impl Entries {
    /// Drops the entries of dead objects once the map (with `adding` more) has outgrown
    /// both its table and twice what was alive at the last sweep; `usize::MAX` sweeps now. Dropping an entry
    /// (a weak reference and plain values) runs no Python code, so it is done under the lock.
    fn sweep(&mut self, py: Python<'_>, adding: usize) {
        let need = self.map.len().saturating_add(adding);
        // Until the table would have to grow, dead entries wait to be taken over by the
        // rows read next (the same rows, read again, reuse their slots); sweeping earlier
        // would walk and rehash the table again at every chunk of a load.
        if adding != usize::MAX && (need <= self.sweep_at || need <= self.map.capacity()) {
            return;
        }
        self.map.retain(|_, e| e.obj.bind(py).upgrade().is_some());
        // Survivors of a result whose other rows are mostly gone get rows of their own, so
        // that the result is freed rather than kept for the few still alive. Rows of a result
        // still mostly alive (a load in progress, chunk by chunk) keep sharing it.
        for e in self.map.values_mut() {
            let snap = &e.snapshot;
            if !snap.is_shared()
                || Arc::strong_count(&snap.values).saturating_mul(2) > snap.values.len() / (snap.len as usize).max(1)
            {
                continue;
            }
            e.snapshot.make_mut();
        }
        let room = if adding == usize::MAX { 0 } else { adding };
        self.sweep_at = (self.map.len().saturating_add(room) * 2).max(1024);
    }
}

/// Objects are held weakly: the map never keeps an instance alive on its own.
#[pyclass(frozen, module = "ormkit._ormkit")]
pub struct IdentityMap {
    entries: Arc<Mutex<Entries>>,
}

impl Default for IdentityMap {
    fn default() -> Self {
        let entries = Arc::new(Mutex::new(Entries::default()));
        if let Ok(mut maps) = MAPS.lock() {
            maps.retain(|m| m.strong_count() > 0);
            maps.push(Arc::downgrade(&entries));
        }
        IdentityMap { entries }
    }
}

/// Every session's map, for [`after_collection`] to find the entries of rows whose objects the
/// collector just freed.
static MAPS: Mutex<Vec<std::sync::Weak<Mutex<Entries>>>> = Mutex::new(Vec::new());

/// Below this many objects freed by a collection, no map is looked at.
const SWEEP_AFTER_COLLECTED: i64 = 1024;

/// Called by Python's cyclic collector after each collection (`gc.callbacks`). Objects that
/// refer to one another (a parent and its loaded children) are freed by the collector, not
/// when the last reference goes; their rows' entries then free their values here, with them,
/// rather than at whatever the session does next (a load would pay for freeing the rows of
/// the one before). A map is only walked when the collection freed a good share of its size.
#[pyfunction]
pub fn after_collection(py: Python<'_>, phase: &str, info: &Bound<'_, pyo3::types::PyDict>) -> PyResult<()> {
    if phase != "stop" {
        return Ok(());
    }
    let collected: i64 = match info.get_item(pyo3::intern!(py, "collected"))? {
        Some(v) => v.extract()?,
        None => return Ok(()),
    };
    if collected < SWEEP_AFTER_COLLECTED {
        return Ok(());
    }
    let maps: Vec<Arc<Mutex<Entries>>> = match MAPS.lock() {
        Ok(maps) => maps.iter().filter_map(std::sync::Weak::upgrade).collect(),
        Err(_) => return Ok(()),
    };
    for map in maps {
        // A map in use (the collection ran inside one of its updates) is left for later.
        let Ok(mut entries) = map.try_lock() else { continue };
        if entries.map.len() as u64 <= collected as u64 * 8 {
            entries.sweep(py, usize::MAX);
        }
    }
    Ok(())
}

/// One tracked object, as `live()` hands it to a flush.
pub struct Tracked<'py> {
    pub model: u32,
    pub obj: Bound<'py, PyAny>,
    pub snapshot: SnapshotRef,
    pub rels: RelSnapshots,
}

impl IdentityMap {
    /// Objects for rows of one model, each `width` values long and starting at one of
    /// `starts` in `values`: the session's object for a row it already holds, brought up to
    /// date by `refresh(obj, old, new)` when the row changed, else a new one from `make`,
    /// then tracked. One lock and one probe per row; snapshots share `values`.
    #[allow(clippy::too_many_arguments)]
    pub fn objects_for<'py>(
        &self,
        py: Python<'py>,
        model: u32,
        pk: usize,
        width: usize,
        values: &Arc<Vec<Value>>,
        starts: &[usize],
        make: impl Fn(&[Value]) -> PyResult<Bound<'py, PyAny>>,
        refresh: impl Fn(&Bound<'py, PyAny>, &[Value], &[Value]) -> PyResult<()>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let n = starts.len();
        let mut out = Vec::with_capacity(n);
        let mut stale: Vec<(Bound<'py, PyAny>, Vec<Value>, Vec<Value>)> = Vec::new();
        {
            let mut entries = self.guard()?;
            if entries.map.is_empty() {
                entries.map.reserve(n);
            }
            for (i, &start) in starts.iter().enumerate() {
                // Rows read again take over their dead entries' slots, so the table is only
                // swept (or grown) when a new key finds it full.
                if entries.map.len() >= entries.map.capacity() {
                    entries.sweep(py, n - i);
                }
                let Entries { map, inserted: log, .. } = &mut *entries;
                let row = &values[start..start + width];
                let Some(key) = Key::of(&row[pk]) else {
                    out.push(make(row)?);
                    continue;
                };
                let snap = || Snap::shared(values, start, width);
                match map.entry((model, key)) {
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        if let Some(obj) = o.get().obj.bind(py).upgrade() {
                            if o.get().snapshot.get() != row {
                                if let Some(l) = log.as_mut() {
                                    l.push(TxEvent::Read(o.key().clone(), o.get().snapshot.get().to_vec()));
                                }
                                let old = std::mem::replace(&mut o.get_mut().snapshot, snap());
                                stale.push((obj.clone(), old.get().to_vec(), row.to_vec()));
                            }
                            out.push(obj);
                            continue;
                        }
                        // The dead entry's values are freed here, on the thread that read them
                        // (PostgreSQL rows are decoded on the loop's thread): freed on another
                        // thread, the allocator would have to hand them back across threads.
                        let obj = make(row)?;
                        *o.get_mut() = Entry { obj: weak_ref(&obj)?, snapshot: snap(), rels: Rels::default() };
                        out.push(obj);
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let obj = make(row)?;
                        v.insert(Entry { obj: weak_ref(&obj)?, snapshot: snap(), rels: Rels::default() });
                        out.push(obj);
                    }
                }
            }
        }
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
        rels: RelSnapshots,
        generated: &[bool],
    ) -> PyResult<()> {
        let mut weak = Vec::with_capacity(items.len());
        for (obj, _) in &items {
            weak.push(weak_ref(obj)?);
        }
        let mut entries = self.guard()?;
        entries.sweep(py, items.len());
        entries.map.reserve(items.len());
        for (((_, snapshot), obj), &generated) in items.into_iter().zip(weak).zip(generated) {
            let Some(key) = Key::of(&snapshot[pk]) else { continue };
            let k = (model, key);
            let old = entries
                .map
                .insert(k.clone(), Entry { obj, snapshot: Snap::owned(snapshot), rels: Rels::of(rels.clone()) });
            // Logged before the insert: the log is replayed backwards, so a rollback undoes
            // this row before it puts back what the row displaced.
            if let Some(old) = old {
                log_replaced(py, &mut entries.inserted, &k, old);
            }
            if let Some(log) = entries.inserted.as_mut() {
                log.push(TxEvent::Inserted(k, generated));
            }
        }
        Ok(())
    }

    /// The lock; everything runs under the GIL on one thread, so finding it taken means a
    /// finalizer reached the map while it was being changed: an error, never a deadlock.
    fn guard(&self) -> PyResult<std::sync::MutexGuard<'_, Entries>> {
        self.entries.try_lock().map_err(|_| {
            crate::errors::Error::interface("the session's identity map was used while it was being updated").into()
        })
    }

    /// The session's live object for a row, if it has one.
    pub fn lookup<'py>(&self, py: Python<'py>, model: u32, key: &Key) -> Option<Bound<'py, PyAny>> {
        let entries = self.guard().ok()?;
        entries.map.get(&(model, key.clone())).and_then(|e| e.obj.bind(py).upgrade())
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
        entries.sweep(py, 1);
        let Entries { map, inserted: log, .. } = &mut *entries;
        if let (Some(l), Some(new)) = (log.as_mut(), &rels) {
            // Only the relationships whose record changes: the others' records still say what
            // the database held before the transaction.
            let k = (model, key.clone());
            let held = map.get(&k).filter(|e| e.obj.bind(py).upgrade().is_some_and(|w| w.is(obj)));
            let old = held.map_or(&[][..], |e| e.rels.get());
            let mut changed: Vec<usize> = new
                .iter()
                .filter(|(i, snap)| old.iter().find(|(j, _)| j == i).is_none_or(|(_, o)| o != snap))
                .map(|(i, _)| *i)
                .collect();
            changed.extend(old.iter().filter(|(i, _)| !new.iter().any(|(j, _)| j == i)).map(|(i, _)| *i));
            l.extend(changed.into_iter().map(|i| TxEvent::Relation(k.clone(), i)));
        }
        match map.entry((model, key)) {
            std::collections::hash_map::Entry::Occupied(mut o)
                if rels.is_none() && o.get().obj.bind(py).upgrade().is_some_and(|w| w.is(obj)) =>
            {
                log_update(log, o.key(), o.get().snapshot.get());
                o.get_mut().snapshot = Snap::owned(snapshot);
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let new =
                    Entry { obj: weak, snapshot: Snap::owned(snapshot), rels: Rels::of(rels.unwrap_or_default()) };
                let old = std::mem::replace(o.get_mut(), new);
                log_replaced(py, log, o.key(), old);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Entry {
                    obj: weak,
                    snapshot: Snap::owned(snapshot),
                    rels: Rels::of(rels.unwrap_or_default()),
                });
            }
        }
        Ok(())
    }

    /// Notes that the current transaction is about to write to the database.
    pub fn log_write(&self) {
        if let Ok(mut e) = self.guard() {
            if let Some(log) = e.inserted.as_mut() {
                if !matches!(log.last(), Some(TxEvent::Wrote)) {
                    log.push(TxEvent::Wrote);
                }
            }
        }
    }

    /// Notes a row inserted inside the current transaction.
    pub fn log_insert(&self, model: u32, key: Key, generated: bool) {
        if let Ok(mut e) = self.guard() {
            if let Some(log) = e.inserted.as_mut() {
                log.push(TxEvent::Inserted((model, key), generated));
            }
        }
    }

    /// Notes that an upsert inside the current transaction brought `obj` in for a row the
    /// session did not track it for; `key_before` is what its key attribute held before.
    pub fn log_upsert(&self, model: u32, key: Key, obj: Py<PyAny>, key_before: Py<PyAny>) {
        if let Ok(mut e) = self.guard() {
            if let Some(log) = e.inserted.as_mut() {
                log.push(TxEvent::Upserted((model, key), obj, key_before));
            }
        }
    }

    /// What relation `rel` of a tracked row was last loaded or written with.
    pub fn relation(&self, model: u32, key: &Key, rel: usize) -> Option<RelSnap> {
        let entries = self.guard().ok()?;
        let e = entries.map.get(&(model, key.clone()))?;
        e.rels.get().iter().find(|(i, _)| *i == rel).map(|(_, s)| s.clone())
    }

    /// Records what a relation of a tracked row was just loaded with.
    pub fn note_relation(&self, model: u32, key: Key, rel: usize, value: RelSnap) {
        let Ok(mut entries) = self.guard() else { return };
        let Entries { map, inserted: log, .. } = &mut *entries;
        let k = (model, key);
        if let Some(e) = map.get_mut(&k) {
            e.rels.set(rel, value);
            if let Some(l) = log.as_mut() {
                l.push(TxEvent::Relation(k, rel));
            }
        }
    }

    /// Runs `change` on what relation `rel` of `target`'s row was recorded with, when the
    /// session tracks `target` itself for that row and has such a record; logs the relation
    /// as written in the transaction when `change` says it changed it. None without a record.
    fn change_relation(
        &self,
        target: &Bound<'_, PyAny>,
        model: u32,
        key: Key,
        rel: usize,
        change: impl FnOnce(&mut RelSnap) -> bool,
    ) -> Option<()> {
        let mut entries = self.guard().ok()?;
        let Entries { map, inserted: log, .. } = &mut *entries;
        let k = (model, key);
        let e = map.get_mut(&k).filter(|e| e.obj.bind(target.py()).upgrade().is_some_and(|o| o.is(target)))?;
        let snap = e.rels.0.as_mut()?.iter_mut().find(|(i, _)| *i == rel).map(|(_, s)| s)?;
        if change(snap) {
            if let Some(l) = log.as_mut() {
                l.push(TxEvent::Relation(k, rel));
            }
        }
        Some(())
    }

    /// Adds `value` to what collection `rel` of `target`'s row was loaded with (a row just
    /// inserted joined it); false when the session has no such record (the collection was
    /// not loaded, or noload() left it unknown).
    pub fn add_to_relation(&self, target: &Bound<'_, PyAny>, model: u32, key: Key, rel: usize, value: Value) -> bool {
        let mut many = false;
        self.change_relation(target, model, key, rel, |snap| match snap {
            RelSnap::Many(values) => {
                many = true;
                let new = !values.contains(&value);
                if new {
                    values.push(value);
                }
                new
            }
            _ => false,
        });
        many
    }

    /// Records that one-to-one `rel` of `target`'s row now holds the row keyed `value` (just
    /// inserted for it); false when the session has no record of it (it was not loaded).
    pub fn set_relation_one(&self, target: &Bound<'_, PyAny>, model: u32, key: Key, rel: usize, value: Value) -> bool {
        self.change_relation(target, model, key, rel, |snap| {
            *snap = RelSnap::One(value);
            true
        })
        .is_some()
    }

    /// Takes `value` out of what collection `rel` of `target`'s row was loaded with (a row
    /// it held was moved elsewhere).
    pub fn remove_from_relation(&self, target: &Bound<'_, PyAny>, model: u32, key: Key, rel: usize, value: &Value) {
        self.change_relation(target, model, key, rel, |snap| match snap {
            RelSnap::Many(values) => match values.iter().position(|v| v == value) {
                Some(at) => {
                    values.remove(at);
                    true
                }
                None => false,
            },
            _ => false,
        });
    }

    /// Forgets what relation `rel` of a tracked row was loaded with (it is no longer held).
    pub fn forget_relation(&self, model: u32, key: &Key, rel: usize) {
        if let Ok(mut entries) = self.guard() {
            if let Some(e) = entries.map.get_mut(&(model, key.clone())) {
                e.rels.remove(rel);
            }
        }
    }

    /// Stops tracking a row the session deleted; a flush then leaves it alone.
    pub fn forget(&self, model: u32, key: &Key) {
        if let Ok(mut e) = self.guard() {
            let gone = e.map.remove(&(model, key.clone()));
            e.deleted.insert((model, key.clone()));
            if let (Some(log), Some(entry)) = (e.inserted.as_mut(), gone) {
                log.push(TxEvent::Removed((model, key.clone()), entry));
            }
        }
    }

    pub fn forget_model(&self, model: u32) {
        if let Ok(mut e) = self.guard() {
            e.map.retain(|(m, _), _| *m != model);
        }
    }

    pub fn is_deleted(&self, model: u32, key: &Key) -> bool {
        self.guard().map(|e| e.deleted.contains(&(model, key.clone()))).unwrap_or(false)
    }

    /// After a flush: what was deleted before it no longer needs leaving alone.
    pub fn clear_deleted(&self) {
        if let Ok(mut e) = self.guard() {
            e.deleted.clear();
        }
    }

    /// Takes the current values of columns `cols` of `obj` as what the database holds.
    pub fn settle_columns(&self, handle: &ModelHandle, obj: &Bound<'_, PyAny>, cols: &[usize]) -> PyResult<()> {
        let now = handle.snapshot(obj)?;
        let Some(key) = Key::of(&now[handle.schema.pk]) else { return Ok(()) };
        handle.expire_parents(obj, cols)?;
        let mut entries = self.guard()?;
        let Entries { map, inserted: log, .. } = &mut *entries;
        let k = (handle.schema.id, key.clone());
        let held = map.get(&k).and_then(|e| e.obj.bind(obj.py()).upgrade());
        match map.get_mut(&k).filter(|_| held.is_some()) {
            Some(e) => {
                log_update(log, &k, e.snapshot.get());
                // Another object of this session holds the row (`obj` came from elsewhere):
                // it follows the database as on a read, keeping changes of its own, which
                // would otherwise be taken for changes and write the old values back.
                let other = held.filter(|o| !o.is(obj));
                let old = other.as_ref().map(|_| e.snapshot.get().to_vec());
                let snap = e.snapshot.make_mut();
                for &i in cols {
                    snap[i] = now[i].clone();
                }
                let new = other.as_ref().map(|_| snap.clone());
                drop(entries);
                match (other, old, new) {
                    (Some(other), Some(old), Some(new)) => handle.refresh_unchanged(&other, &old, &new),
                    _ => Ok(()),
                }
            }
            None => {
                drop(entries);
                self.remember(obj, handle.schema.id, key, now, None)
            }
        }
    }

    /// Whether the session tracks this very object.
    pub fn holds_obj(&self, handle: &ModelHandle, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Some(key) = Key::of(&handle.column_value(obj, handle.schema.pk)?) else { return Ok(false) };
        Ok(self.lookup(obj.py(), handle.schema.id, &key).is_some_and(|o| o.is(obj)))
    }

    /// Every live object with its model and snapshots; dead entries are dropped.
    pub fn live<'py>(&self, py: Python<'py>) -> PyResult<Vec<Tracked<'py>>> {
        let mut entries = self.guard()?;
        entries.sweep(py, usize::MAX);
        Ok(entries
            .map
            .iter()
            .filter_map(|((m, _), e)| {
                e.obj.bind(py).upgrade().map(|obj| Tracked {
                    model: *m,
                    obj,
                    snapshot: SnapshotRef(e.snapshot.clone()),
                    rels: e.rels.get().to_vec(),
                })
            })
            .collect())
    }
}

#[pymethods]
impl IdentityMap {
    #[new]
    fn new() -> Self {
        IdentityMap::default()
    }

    /// Whether the session tracks this very object (it is persistent, not new).
    fn holds(&self, handle: &ModelHandle, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.holds_obj(handle, obj)
    }

    /// Takes the current values of `columns` (names) of `obj` as what the database holds,
    /// after `refresh()` has copied them from a fresh read: they are no longer changes.
    fn settle(&self, handle: &ModelHandle, obj: &Bound<'_, PyAny>, columns: Vec<String>) -> PyResult<()> {
        let cols: Vec<usize> = handle
            .schema
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| columns.contains(&c.name))
            .map(|(i, _)| i)
            .collect();
        self.settle_columns(handle, obj, &cols)
    }

    /// A transaction begins: inserts are logged from here on.
    fn tx_begin(&self) -> PyResult<()> {
        self.guard()?.inserted = Some(vec![]);
        Ok(())
    }

    /// Where a savepoint begins in the insert log.
    fn tx_mark(&self) -> PyResult<usize> {
        Ok(self.guard()?.inserted.as_ref().map_or(0, |l| l.len()))
    }

    /// The transaction committed.
    fn tx_end(&self) -> PyResult<()> {
        self.guard()?.inserted = None;
        Ok(())
    }

    /// The transaction (or the savepoint that began at `mark`) rolled back. Rows inserted in
    /// it are forgotten (their objects are new again to this session), rows deleted in it
    /// are tracked again, and every object goes back to the values the session last saw in
    /// the database: nothing is pending afterwards.
    fn tx_rollback(&self, py: Python<'_>, mark: usize) -> PyResult<()> {
        let live = {
            let mut e = self.guard()?;
            let mut reset = Vec::new();
            let mut unkeyed = Vec::new();
            let mut touched: FastSet<(u32, Key, usize)> = FastSet::default();
            // Objects of rows deleted in it, which are back.
            let mut back = Vec::new();
            if let Some(log) = e.inserted.as_mut() {
                let undone: Vec<TxEvent> = log.drain(mark.min(log.len())..).collect();
                let blind = undone.iter().any(|ev| matches!(ev, TxEvent::Wrote));
                for ev in undone.into_iter().rev() {
                    match ev {
                        TxEvent::Wrote => {}
                        TxEvent::Read(k, old) => {
                            if blind {
                                if let Some(en) = e.map.get_mut(&k) {
                                    en.snapshot = Snap::owned(old);
                                }
                            }
                        }
                        TxEvent::Inserted(k, generated) => {
                            let gone = e.map.remove(&k).and_then(|en| en.obj.bind(py).upgrade());
                            // Only a generated key is taken back; one the user gave stays.
                            if let Some(o) = gone.filter(|_| generated) {
                                reset.push((k, o));
                            }
                        }
                        // Whether the upsert inserted the row or changed one, the session had
                        // not seen it before: the object is new to it again, with the key it
                        // had before (a key given by the user stays, one filled in goes).
                        TxEvent::Upserted(k, obj, before) => {
                            if e.map.get(&k).and_then(|en| en.obj.bind(py).upgrade()).is_some_and(|o| o.is(&obj)) {
                                e.map.remove(&k);
                            }
                            unkeyed.push((k.0, obj.into_bound(py), before));
                        }
                        TxEvent::Replaced(k, entry) => {
                            if entry.obj.bind(py).upgrade().is_some() {
                                e.map.insert(k, entry);
                            }
                        }
                        // A row deleted in it is back: so is its object.
                        TxEvent::Removed(k, entry) => {
                            if let Some(o) = entry.obj.bind(py).upgrade() {
                                back.push(o);
                                e.map.entry(k).or_insert(entry);
                            }
                        }
                        TxEvent::Updated(k, old) => {
                            if let Some(en) = e.map.get_mut(&k) {
                                en.snapshot = Snap::owned(old);
                            }
                        }
                        TxEvent::Relation((m, k), rel) => {
                            touched.insert((m, k, rel));
                        }
                    }
                }
            }
            // An object whose row was back in the map by the end of the replay (tracked
            // before the transaction inserted it again) keeps its key.
            reset.retain(|(k, o)| !e.map.get(k).and_then(|en| en.obj.bind(py).upgrade()).is_some_and(|t| t.is(o)));
            e.deleted.clear();
            e.sweep(py, usize::MAX);
            let live = e
                .map
                .iter()
                .filter_map(|((m, k), en)| en.obj.bind(py).upgrade().map(|o| (*m, k.clone(), o)))
                .collect::<Vec<_>>();
            (live, reset, unkeyed, touched, back)
        };
        let (live, reset, unkeyed, touched, back) = live;
        for o in &back {
            super::write::unmark_removed(o)?;
        }
        for (model, obj, before) in unkeyed {
            let h = super::model::handle_for(py, model)?;
            obj.setattr(h.get().keys[h.get().schema.pk].bind(py), before)?;
        }
        // A generated key of a row that no longer exists is taken back, so that adding the
        // object again inserts it afresh instead of claiming a key the database may reuse.
        for ((model, _), obj) in reset {
            let h = super::model::handle_for(py, model)?;
            let h = h.get();
            let pk = h.schema.pk_column();
            if pk.autoincrement && matches!(pk.ty, crate::value::ColType::Integer | crate::value::ColType::BigInteger) {
                obj.setattr(h.keys[h.schema.pk].bind(py), py.None())?;
            }
        }
        for (model, key, obj) in live {
            let h = super::model::handle_for(py, model)?;
            let h = h.get();
            // The object goes back to what the database holds (as far as this session saw).
            let saw = self.guard()?.map.get(&(model, key.clone())).map(|en| en.snapshot.get().to_vec());
            if let Some(saw) = saw {
                h.revert_to(&obj, &saw)?;
            }
            // So do its relationships, as far as it can tell without a query (the others
            // are dropped, to be loaded again).
            h.forget_changed_relations(&obj, self, &key, |rel| touched.contains(&(model, key.clone(), rel)))?;
            h.drop_unsaved_related(&obj)?;
            let snapshot = h.snapshot(&obj)?;
            let rels = h.relation_snapshots_after(&obj, Some((self, &key)), true)?;
            let mut e = self.guard()?;
            if let Some(en) = e.map.get_mut(&(model, key)) {
                en.snapshot = Snap::owned(snapshot);
                if let Some(r) = rels {
                    en.rels = Rels::of(r);
                }
            }
        }
        Ok(())
    }

    /// Forgets every object.
    fn clear(&self) -> PyResult<()> {
        let mut e = self.guard()?;
        e.map.clear();
        e.deleted.clear();
        e.inserted = None;
        Ok(())
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.guard()?.map.len())
    }
}
