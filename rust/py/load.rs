//! Model queries with relation loading: running the units of a compiled load and attaching
//! the related instances to their parents, in one pass over the rows.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyList;

use super::engine::EngineCore;
use super::identity::{IdentityMap, RelSnap};
use super::model::{handle_for, relation_snap};
use super::write::dict_of;
use crate::bridge::Pending;
use crate::compile::load::{compile_load, CompiledLoad, Edge, EdgeKind};
use crate::compile::{self, Compiled};
use crate::driver::{LoadUnit, Request};
use crate::errors::Error;
use crate::plan::Statement;
use crate::plan::{Params, SelectShape};
use crate::rows::{FastMap, FastSet, Key, RowSet};
use crate::schema::RelKind;
use crate::value::Value;

pub type Finish = Box<dyn FnOnce(Python<'_>, Bound<'_, PyList>) -> PyResult<Py<PyAny>> + Send>;

/// Runs a model select (with its loads) and hands the root instances to `finish`.
/// `plain` is the select already compiled for queries without loads.
pub fn run_models(
    py: Python<'_>,
    engine: &EngineCore,
    shape: &SelectShape,
    params: &Params,
    plain: Option<Arc<Compiled>>,
    finish: Finish,
) -> PyResult<Pending> {
    let py_model = handle_for(py, shape.model)?;
    let identity = engine.identity(py);
    if shape.loads.is_empty() {
        let compiled = match plain {
            Some(c) => c,
            None => compile::compile(engine.dialect(), &Statement::Select(shape.clone()))?,
        };
        let Some(map) = identity else {
            return engine.run_compiled(&compiled, &params.values, move |py, rows| {
                let list = py_model.get().instances_in(py, rows, None)?;
                finish(py, list)
            });
        };
        // In a session, rows become objects chunk by chunk while the rest are read.
        let unit = LoadUnit {
            sql: compiled.sql.clone(),
            params: compiled.params(&params.values),
            columns: compiled.out.clone(),
            source: None,
            given: None,
        };
        let (h, m) = (py_model.clone_ref(py), map.clone_ref(py));
        let add = move |py: Python<'_>, objs: &mut Vec<Py<PyAny>>, _unit: usize, rows: RowSet| -> PyResult<()> {
            objs.extend(h.get().instances_for(py, rows, m.get())?.into_iter().map(Bound::unbind));
            Ok(())
        };
        return stream_load(engine, vec![unit], Vec::new(), add, move |py, objs| finish(py, PyList::new(py, objs)?));
    }
    let load = Arc::new(compile_load(engine.dialect(), shape)?);
    let units = units_for(&load, Some(&params.values), None);
    let Some(map) = identity else {
        return engine.submit_response(Request::Load { units, progress: None }, move |py, response| {
            let list = assemble(py, &load, response.units(), None, None)?;
            finish(py, list)
        });
    };
    let (l, m) = (load.clone(), map.clone_ref(py));
    let add = move |py: Python<'_>, built: &mut Built, unit: usize, rows: RowSet| -> PyResult<()> {
        let _gc = super::GcPause::new(py, rows.len());
        built.add_direct(py, &l, m.get(), unit, rows)
    };
    stream_load(engine, units, Built::new(&load), add, move |py, built| {
        let _gc = super::GcPause::new(py, built.rows());
        let list = link(py, &load, built, Some(map.get()))?;
        finish(py, list)
    })
}

/// Runs a load whose rows reach `add` (with `acc`) on the loop's thread chunk by chunk as
/// they are read, and those that came whole with the response after them; `done` then
/// makes the result from `acc`.
fn stream_load<A, Add, Done>(
    engine: &EngineCore,
    units: Vec<LoadUnit>,
    acc: A,
    add: Add,
    done: Done,
) -> PyResult<Pending>
where
    A: Send + 'static,
    Add: Fn(Python<'_>, &mut A, usize, RowSet) -> PyResult<()> + Send + Sync + 'static,
    Done: FnOnce(Python<'_>, A) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let acc = Arc::new(Mutex::new(Some(acc)));
    let add = Arc::new(add);
    let (a, f) = (acc.clone(), add.clone());
    let chunk = move |py: Python<'_>, unit: usize, rows: RowSet| -> PyResult<()> {
        match lock(&a)?.as_mut() {
            Some(acc) => f(py, acc, unit, rows),
            None => Ok(()),
        }
    };
    engine.submit_streamed(units, chunk, move |py, response| {
        let mut acc = lock(&acc)?.take().ok_or_else(|| Error::internal("a load was finished twice"))?;
        for (u, rows) in response.units().into_iter().enumerate().filter(|(_, r)| !r.is_empty()) {
            add(py, &mut acc, u, rows)?;
        }
        done(py, acc)
    })
}

fn lock<T>(m: &Mutex<T>) -> PyResult<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| Error::internal("a load's rows were left half-built by an earlier failure").into())
}

/// Loads relations of instances already at hand: the root unit is their own rows.
pub fn run_for_instances(
    engine: &EngineCore,
    shape: &SelectShape,
    instances: Vec<Py<PyAny>>,
    given: RowSet,
) -> PyResult<Pending> {
    // The instances' own rows are at hand, so there is no query to join into: their
    // direct relations load with IN queries instead.
    let mut shape = shape.clone();
    for node in &mut shape.loads {
        if node.strategy == crate::plan::load::Strategy::Joined {
            node.strategy = crate::plan::load::Strategy::Selectin;
        }
    }
    let load = compile_load(engine.dialect(), &shape)?;
    let units = units_for(&load, None, Some(given));
    let identity = Python::attach(|py| engine.identity(py));
    engine.submit_response(Request::Load { units, progress: None }, move |py, response| {
        let list = assemble(py, &load, response.units(), Some(&instances), identity.as_ref().map(|m| m.get()))?;
        Ok(list.into_any().unbind())
    })
}

fn units_for(load: &CompiledLoad, root_values: Option<&[Value]>, given: Option<RowSet>) -> Vec<LoadUnit> {
    let mut given = given;
    load.units
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let params = match (i, root_values) {
                (0, Some(values)) => Compiled::params_of(&u.binds, values),
                (0, None) => vec![],
                // Keyed units bind the key list as their only parameter (filled in by the driver).
                _ => u.binds.iter().map(|_| Value::Null).collect(),
            };
            LoadUnit {
                sql: u.sql.clone(),
                params,
                columns: u.columns.clone(),
                source: u.source,
                given: if i == 0 { given.take() } else { None },
            }
        })
        .collect()
}

/// Sets an instance attribute the way `object.__setattr__` does: into the instance's inline
/// values while it has no `__dict__` yet (relationships are non-data descriptors on the
/// class, so the value lands on the instance).
fn set_attr(obj: &Bound<'_, PyAny>, name: &Bound<'_, pyo3::types::PyString>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: three live objects; `name` is an exact str.
    if unsafe { pyo3::ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), value.as_ptr()) } < 0 {
        return Err(PyErr::fetch(obj.py()));
    }
    Ok(())
}

/// Leaves relation `name` of `obj` unset (unless `keep_set` and it holds a value) and marks
/// it as left out by noload() (`model::mark_noload`; `only` is the set of just `name`).
fn mark_noload(
    obj: &Bound<'_, PyAny>,
    name: &Bound<'_, pyo3::types::PyString>,
    only: &Bound<'_, pyo3::types::PyFrozenSet>,
    keep_set: bool,
) -> PyResult<()> {
    let d = dict_of(obj)?;
    if d.contains(name)? {
        if keep_set {
            return Ok(());
        }
        d.del_item(name)?;
    }
    super::model::mark_noload(&d, name, only)
}

/// The order of two key values: numbers by value, text and bytes bytewise; keys of other
/// kinds compare equal, so a stable sort keeps them as the database sent them.
fn key_order(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Text(x), Value::Text(y)) => x.cmp(y),
        (Value::Bytes(x), Value::Bytes(y)) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    }
}

/// A unit's rows, their values shared so that the session's snapshots can point into them.
struct SharedRows {
    values: Arc<Vec<Value>>,
    width: usize,
    len: usize,
}

impl SharedRows {
    fn new(rows: RowSet) -> SharedRows {
        SharedRows { width: rows.width(), len: rows.len(), values: Arc::new(rows.values) }
    }

    fn row(&self, r: usize) -> &[Value] {
        &self.values[r * self.width..(r + 1) * self.width]
    }

    fn len(&self) -> usize {
        self.len
    }

    fn width(&self) -> usize {
        self.width
    }
}

/// A unit's rows in the chunks they arrived in, numbered across chunks.
#[derive(Default)]
struct UnitRows {
    chunks: Vec<SharedRows>,
    len: usize,
}

impl UnitRows {
    fn push(&mut self, rows: SharedRows) {
        self.len += rows.len();
        self.chunks.push(rows);
    }

    /// The rows in order.
    fn iter(&self) -> impl Iterator<Item = &[Value]> {
        self.chunks.iter().flat_map(|c| (0..c.len()).map(move |r| c.row(r)))
    }
}

/// Every unit's rows and objects so far: `objects[unit][seg][row]`, `None` where a row has
/// no object of that seg (the missing side of an outer join).
struct Built {
    units: Vec<UnitRows>,
    objects: Vec<Vec<Vec<Option<Py<PyAny>>>>>,
    /// By edge: the parents whose children were pointed back at them as they were read.
    early: Vec<Option<EarlyBack>>,
}

/// A select-in edge's parents by the key their children match, for pointing each child back
/// at its parent while the child is fresh in the cache (its chunk was just read) instead of
/// in a second pass over every child once all are read. Only parents whose relation the
/// session has no record of are here: for the others, `link` decides what to attach.
struct EarlyBack {
    back: Py<pyo3::types::PyString>,
    parents: FastMap<Key, Py<PyAny>>,
    /// The parents above (by address), for `link` to leave their children's back reference.
    done: FastSet<usize>,
}

impl EarlyBack {
    /// For edge `e` whose parents are all read (a select-in unit runs after its parent's).
    fn new(py: Python<'_>, load: &CompiledLoad, e: &Edge, built: &Built, map: &IdentityMap) -> PyResult<EarlyBack> {
        let back = e.back.as_deref().ok_or_else(|| Error::internal("an early back reference without a name"))?;
        let parent_seg = &load.units[e.parent.0].segs[e.parent.1];
        let ph = handle_for(py, parent_seg.model)?;
        let h = ph.get();
        let rels = h.schema.resolved_relations()?;
        let rel = rels.iter().position(|r| r.name == e.name);
        let pk_at = parent_seg.offset + h.schema.pk;
        let back = pyo3::types::PyString::intern(py, back).clone().unbind();
        let mut early = EarlyBack { back, parents: FastMap::default(), done: FastSet::default() };
        // Only a one-to-many: each child then has one parent, and its back reference is a
        // many-to-one, whose foreign key says all a flush needs even if the load stops before
        // `link`. A back reference that is a one-to-one seen from the other side is recorded
        // by `link`, and shared by several parents it must be the one `link` records.
        if !rel.is_some_and(|i| rels[i].kind == RelKind::OneToMany) {
            return Ok(early);
        }
        let objs = &built.objects[e.parent.0][e.parent.1];
        early.parents.reserve(objs.len());
        early.done.reserve(objs.len());
        for (row, obj) in built.units[e.parent.0].iter().zip(objs) {
            let (Some(obj), Some(k)) = (obj, Key::of(&row[e.parent_key])) else { continue };
            // What `link` would compare with: a relation the session recorded is attached
            // there, or kept as the user changed it.
            let recorded = match (rel, Key::of(&row[pk_at])) {
                (Some(i), Some(pk)) => map.relation(h.schema.id, &pk, i).is_some(),
                _ => false,
            };
            if !recorded {
                early.done.insert(obj.as_ptr() as usize);
                early.parents.insert(k, obj.clone_ref(py));
            }
        }
        Ok(early)
    }
}

impl Built {
    fn new(load: &CompiledLoad) -> Built {
        Built {
            units: load.units.iter().map(|_| UnitRows::default()).collect(),
            objects: load.units.iter().map(|u| u.segs.iter().map(|_| Vec::new()).collect()).collect(),
            early: load.edges.iter().map(|_| None).collect(),
        }
    }

    fn rows(&self) -> usize {
        self.units.iter().map(|u| u.len).sum()
    }

    /// Adds rows of `unit`, with their objects from the session's map.
    fn add_direct(
        &mut self,
        py: Python<'_>,
        load: &CompiledLoad,
        map: &IdentityMap,
        unit: usize,
        rows: RowSet,
    ) -> PyResult<()> {
        let rows = SharedRows::new(rows);
        for (s, seg) in load.units[unit].segs.iter().enumerate() {
            let handle = handle_for(py, seg.model)?;
            let col = seg_objects_direct(py, handle.get(), map, &rows, seg.offset)?;
            let objs = &mut self.objects[unit][s];
            if objs.is_empty() {
                *objs = col.into_iter().map(|o| o.map(Bound::unbind)).collect();
            } else {
                objs.extend(col.into_iter().map(|o| o.map(Bound::unbind)));
            }
        }
        for (i, e) in load.edges.iter().enumerate() {
            if e.kind != EdgeKind::Selectin || e.back.is_none() || e.child.0 != unit {
                continue;
            }
            if self.early[i].is_none() {
                self.early[i] = Some(EarlyBack::new(py, load, e, self, map)?);
            }
            // None to point at: not a one-to-many, or the parents came after this chunk (a
            // small parent unit comes whole with the response), so `link` does it all.
            let Some(early) = self.early[i].as_ref().filter(|b| !b.parents.is_empty()) else { continue };
            let back = early.back.bind(py);
            let objs = &self.objects[unit][e.child.1];
            let first = objs.len() - rows.len();
            for (r, obj) in objs[first..].iter().enumerate() {
                let (Some(c), Some(k)) = (obj, Key::of(&rows.row(r)[e.child_match])) else { continue };
                if let Some(p) = early.parents.get(&k) {
                    set_attr(c.bind(py), back, p.bind(py))?;
                }
            }
        }
        self.units[unit].push(rows);
        Ok(())
    }
}

/// One seg's objects through the session's map: rows with a key get the session's object
/// for it (built when it has none); rows without one (an outer join's missing side) none.
fn seg_objects_direct<'py>(
    py: Python<'py>,
    h: &super::model::ModelHandle,
    map: &IdentityMap,
    rows: &SharedRows,
    offset: usize,
) -> PyResult<Vec<Option<Bound<'py, PyAny>>>> {
    let pk = h.schema.pk;
    let unit_width = rows.width();
    let mut starts = Vec::with_capacity(rows.len());
    let mut at = Vec::with_capacity(rows.len());
    for r in 0..rows.len() {
        let start = r * unit_width + offset;
        if !rows.values[start + pk].is_null() {
            starts.push(start);
            at.push(r);
        }
    }
    let built = h.session_objects(py, map, &rows.values, &starts)?;
    if at.len() == rows.len() {
        return Ok(built.into_iter().map(Some).collect());
    }
    let mut col = vec![None; rows.len()];
    for (r, o) in at.into_iter().zip(built) {
        col[r] = Some(o);
    }
    Ok(col)
}

/// One seg's objects through a map local to this load (no session, or instances given for
/// the root rows), new ones built together through the session's map when there is one.
#[allow(clippy::too_many_arguments)]
fn seg_objects_local<'py>(
    py: Python<'py>,
    h: &super::model::ModelHandle,
    session: Option<&IdentityMap>,
    rows: &SharedRows,
    model: u32,
    offset: usize,
    given: Option<&Vec<Py<PyAny>>>,
    identity: &mut FastMap<(u32, Key), Bound<'py, PyAny>>,
) -> PyResult<Vec<Option<Bound<'py, PyAny>>>> {
    let width = h.keys.len();
    let pk = h.schema.pk;
    let unit_width = rows.width();
    let mut col: Vec<Option<Bound<'py, PyAny>>> = Vec::with_capacity(rows.len());
    // Rows whose object is not at hand yet: (row, index among the distinct new keys).
    let mut waiting: Vec<(usize, usize)> = Vec::new();
    let mut fresh: FastMap<Key, usize> = FastMap::default();
    let mut fresh_keys: Vec<Key> = Vec::new();
    let mut fresh_starts: Vec<usize> = Vec::new();
    for r in 0..rows.len() {
        let row = &rows.row(r)[offset..offset + width];
        let Some(key) = Key::of(&row[pk]) else {
            col.push(None);
            continue;
        };
        if let Some(o) = identity.get(&(model, key.clone())) {
            col.push(Some(o.clone()));
            continue;
        }
        if let Some(g) = given {
            let o = g[r].bind(py).clone();
            identity.insert((model, key), o.clone());
            col.push(Some(o));
            continue;
        }
        if session.is_none() {
            let o = h.new_instance(py, row)?;
            identity.insert((model, key), o.clone());
            col.push(Some(o));
            continue;
        }
        let n = fresh.len();
        let at = *fresh.entry(key.clone()).or_insert_with(|| {
            fresh_keys.push(key);
            fresh_starts.push(r * unit_width + offset);
            n
        });
        waiting.push((r, at));
        col.push(None);
    }
    if let (Some(map), false) = (session, waiting.is_empty()) {
        let built = h.session_objects(py, map, &rows.values, &fresh_starts)?;
        for (key, obj) in fresh_keys.into_iter().zip(&built) {
            identity.insert((model, key), obj.clone());
        }
        for (r, at) in waiting {
            col[r] = Some(built[at].clone());
        }
    }
    Ok(col)
}

/// Builds every unit's instances (one object per row identity) and links them.
fn assemble<'py>(
    py: Python<'py>,
    load: &CompiledLoad,
    units: Vec<RowSet>,
    given: Option<&Vec<Py<PyAny>>>,
    session: Option<&IdentityMap>,
) -> PyResult<Bound<'py, PyList>> {
    let _gc = super::GcPause::new(py, units.iter().map(|u| u.len()).sum());
    let mut built = Built::new(load);
    // With a session and no instances given, the session's map is the only identity
    // needed: it hands back one object per key across units and rows. Otherwise a map local
    // to this load does (and the given instances stand for their rows).
    let direct = session.is_some() && given.is_none();
    let mut identity: FastMap<(u32, Key), Bound<'py, PyAny>> = FastMap::default();
    for (u, rows) in units.into_iter().enumerate() {
        match session {
            Some(map) if direct => built.add_direct(py, load, map, u, rows)?,
            _ => {
                let rows = SharedRows::new(rows);
                for (s, seg) in load.units[u].segs.iter().enumerate() {
                    let handle = handle_for(py, seg.model)?;
                    let given = if (u, s) == (0, 0) { given } else { None };
                    let col = seg_objects_local(
                        py,
                        handle.get(),
                        session,
                        &rows,
                        seg.model,
                        seg.offset,
                        given,
                        &mut identity,
                    )?;
                    built.objects[u][s] = col.into_iter().map(|o| o.map(Bound::unbind)).collect();
                }
                built.units[u].push(rows);
            }
        }
    }
    link(py, load, built, session)
}

/// Attaches the related instances of every edge to their parents; answers the roots.
fn link<'py>(
    py: Python<'py>,
    load: &CompiledLoad,
    built: Built,
    session: Option<&IdentityMap>,
) -> PyResult<Bound<'py, PyList>> {
    let Built { units, objects, early } = built;
    let objects: Vec<Vec<Vec<Option<Bound<'py, PyAny>>>>> = objects
        .into_iter()
        .map(|u| u.into_iter().map(|s| s.into_iter().map(|o| o.map(|p| p.into_bound(py))).collect()).collect())
        .collect();
    let distinct = |objs: &Vec<Option<Bound<'py, PyAny>>>| -> Vec<(usize, Bound<'py, PyAny>)> {
        let mut seen = FastSet::with_capacity_and_hasher(objs.len(), Default::default());
        objs.iter()
            .enumerate()
            .filter_map(|(r, o)| o.as_ref().filter(|o| seen.insert(o.as_ptr() as usize)).map(|o| (r, o.clone())))
            .collect()
    };
    // (object, relation name) pairs this load has filled in, across edges, for its noload()
    // edges to leave alone.
    let attached: std::cell::RefCell<FastSet<(usize, usize)>> = Default::default();
    let track = load.edges.iter().any(|e| e.kind == EdgeKind::NoLoad);
    let no_early = FastSet::default();
    for (ei, e) in load.edges.iter().enumerate() {
        let parents = distinct(&objects[e.parent.0][e.parent.1]);
        // Parents whose children already point back at them (set as the children were read).
        let pointed_back = early[ei].as_ref().map_or(&no_early, |b| &b.done);
        let name = pyo3::types::PyString::intern(py, &e.name);
        let back = e.back.as_ref().map(|b| pyo3::types::PyString::intern(py, b));
        // In a session, what each relation was loaded with is recorded (as the linking
        // column of each related row), so that a flush can tell what the user added to or
        // removed from it.
        let child_seg = &load.units[e.child.0].segs[e.child.1];
        let note = match session {
            Some(map) => {
                let ph = handle_for(py, load.units[e.parent.0].segs[e.parent.1].model)?;
                let rels = ph.get().schema.resolved_relations()?;
                let found = rels.iter().position(|r| r.name == e.name);
                match found {
                    Some(i) => {
                        let r = &rels[i];
                        let link = if r.kind == RelKind::OneToMany {
                            handle_for(py, child_seg.model)?.get().schema.pk
                        } else {
                            r.remote_col
                        };
                        Some((map, ph, i, child_seg.offset + link, r.clone()))
                    }
                    None => None,
                }
            }
            None => None,
        };
        // Rows by number, looked up once: a unit that came in chunks would otherwise search
        // its chunks for every row of every child.
        let child_rows: Vec<&[Value]> = units[e.child.0].iter().collect();
        // A one-to-one filled in from the other side (`author.profile` while loading
        // `profile.author`) is recorded too, else a flush could not tell it was untouched.
        let back_note = match (session, &e.back) {
            (Some(_), Some(b)) => {
                let ch = handle_for(py, child_seg.model)?;
                let crels = ch.get().schema.resolved_relations()?;
                let found = crels.iter().position(|r| &r.name == b && r.kind == RelKind::OneToMany);
                let pk = ch.get().schema.pk;
                found.map(|i| (ch.get().schema.id, i, child_seg.offset + pk))
            }
            _ => None,
        };
        // The parent's key is read from its row, which is what it was loaded with.
        let parent_seg = &load.units[e.parent.0].segs[e.parent.1];
        let parent_rows: Vec<&[Value]> = units[e.parent.0].iter().collect();
        let parent_pk_at = parent_seg.offset + handle_for(py, parent_seg.model)?.get().schema.pk;
        // A single object (many-to-one, one-to-one) left out by noload() stays unset on the
        // instance, which is marked so that reading it gives None: an assignment, even of
        // None, is then one a flush sees.
        let noload_mark = match e.kind == EdgeKind::NoLoad && !e.uselist {
            true => Some(pyo3::types::PyFrozenSet::new(py, [&name])?),
            false => None,
        };
        // A many-to-one whose key names a row the load does not give (soft-deleted, or
        // missing) reads as None but is left unset and marked, as noload() leaves it: set to
        // None, the next flush would take it for an assignment and clear the key.
        let hidden_parent = match e.kind != EdgeKind::NoLoad && !e.uselist {
            true => {
                let ph = handle_for(py, parent_seg.model)?;
                let rels = ph.get().schema.resolved_relations()?;
                match rels.iter().find(|r| r.name == e.name && r.kind == RelKind::ManyToOne) {
                    Some(r) => Some((
                        parent_seg.offset + r.local_col,
                        pyo3::types::PyFrozenSet::new(py, [&name])?,
                        ph.clone_ref(py),
                        r.clone(),
                    )),
                    None => None,
                }
            }
            false => None,
        };
        let attach =
            |pr: usize, parent: &Bound<'py, PyAny>, children: Vec<(Bound<'py, PyAny>, usize)>| -> PyResult<()> {
                // noload() leaves alone what this load already attached to the object by
                // another path (a tree reached as children and as parents).
                let slot = (parent.as_ptr() as usize, name.as_ptr() as usize);
                if e.kind == EdgeKind::NoLoad && attached.borrow().contains(&slot) {
                    return Ok(());
                }
                let mut noted = None;
                // Whether the session recorded what this relation was loaded with.
                let mut recorded = false;
                let hidden =
                    hidden_parent.as_ref().filter(|(fk, ..)| children.is_empty() && !parent_rows[pr][*fk].is_null());
                let parent_key = &parent_rows[pr][parent_pk_at];
                if let Some((map, ph, i, link, rel)) = &note {
                    let h = ph.get();
                    if let Some(k) = Key::of(parent_key) {
                        // A collection changed and not flushed yet keeps the user's version, as a
                        // changed column does when its row is read again.
                        // The parent's dict is looked at only when there is something to
                        // compare: reading it turns the instance's inline values into a dict.
                        let before = map.relation(h.schema.id, &k, *i);
                        recorded = before.is_some();
                        let now = match before {
                            Some(_) => dict_of(parent)?.get_item(&name)?,
                            None => None,
                        };
                        // ...and what an earlier load gave it (as SQLAlchemy's noload does
                        // for objects already in the session).
                        if e.kind == EdgeKind::NoLoad && now.is_some() {
                            return Ok(());
                        }
                        if let (Some(before), Some(now)) = (before, now) {
                            let was_unknown = matches!(before, RelSnap::Unknown(_));
                            let changed = match before {
                                // noload() leaves a single object unset: whatever is there
                                // now was put there, None included.
                                RelSnap::Unknown(_) if !rel.uselist => true,
                                RelSnap::Unknown(_) => !super::write::items(&now)?.is_empty(),
                                before => relation_snap(rel, &now)? != before,
                            };
                            if changed {
                                // Set after noload() and now loaded: the value set stays, and
                                // what was loaded is recorded, so that a flush can tell what
                                // the assignment changes.
                                if was_unknown && !e.uselist && e.kind != EdgeKind::NoLoad {
                                    let loaded = children.first().map(|(_, r)| child_rows[*r][*link].clone());
                                    map.note_relation(h.schema.id, k, *i, RelSnap::One(loaded.unwrap_or(Value::Null)));
                                }
                                return Ok(());
                            }
                        }
                        let values = children.iter().map(|(_, r)| child_rows[*r][*link].clone());
                        // A parent not found is not known either: what is there later (None
                        // included) was assigned.
                        let snap = if e.kind == EdgeKind::NoLoad || hidden.is_some() {
                            RelSnap::Unknown(0)
                        } else if e.uselist {
                            RelSnap::Many(values.collect())
                        } else {
                            RelSnap::One(values.into_iter().next().unwrap_or(Value::Null))
                        };
                        noted = Some((map, h.schema.id, k, *i, snap));
                    }
                }
                if let Some(b) = &back {
                    let pointed = pointed_back.contains(&(parent.as_ptr() as usize));
                    for (c, _) in &children {
                        if !pointed {
                            set_attr(c, b, parent)?;
                        }
                        if track {
                            attached.borrow_mut().insert((c.as_ptr() as usize, b.as_ptr() as usize));
                        }
                    }
                    if let (Some((model, idx, pk_at)), Some((map, ..))) = (back_note, &note) {
                        for (_, r) in &children {
                            if let Some(k) = Key::of(&child_rows[*r][pk_at]) {
                                map.note_relation(model, k, idx, RelSnap::One(parent_key.clone()));
                            }
                        }
                    }
                }
                if e.uselist {
                    let list = PyList::new(py, children.into_iter().map(|(c, _)| c))?;
                    if let Some((_, _, _, _, RelSnap::Unknown(at))) = noted.as_mut() {
                        *at = list.as_ptr() as usize;
                    }
                    set_attr(parent, &name, &list)?;
                    if track {
                        attached.borrow_mut().insert(slot);
                    }
                } else if let Some(only) = &noload_mark {
                    // With nothing recorded for it in the session, a value there was assigned
                    // (or filled in from the other side) and is kept, not dropped unflushed.
                    let keep = note.is_some() && !recorded;
                    mark_noload(parent, &name, only, keep)?;
                } else if let Some((fk, only, ph, r)) = hidden {
                    let d = dict_of(parent)?;
                    // What is there and names another row (None included) is a change not
                    // flushed yet, and stays; a parent that the key names is gone from the
                    // database (it was read before, or filled in from the other side).
                    let pending = match d.get_item(&name)? {
                        Some(cur) => !ph.get().names_parent(parent, r, &cur)?,
                        None => false,
                    };
                    if !pending {
                        if d.contains(&name)? {
                            d.del_item(&name)?;
                        }
                        let fk = super::convert::to_py(py, &parent_rows[pr][*fk])?;
                        super::model::mark_hidden(&d, &name, only, &fk)?;
                    }
                    if track {
                        attached.borrow_mut().insert(slot);
                    }
                } else {
                    let one = children.into_iter().next().map(|(c, _)| c).unwrap_or_else(|| py.None().into_bound(py));
                    set_attr(parent, &name, &one)?;
                    if track {
                        attached.borrow_mut().insert(slot);
                    }
                }
                if let Some((map, model, k, i, snap)) = noted {
                    map.note_relation(model, k, i, snap);
                }
                Ok(())
            };
        match e.kind {
            EdgeKind::NoLoad => {
                for (r, p) in parents {
                    attach(r, &p, vec![])?;
                }
            }
            EdgeKind::Joined => {
                let children_col = &objects[e.child.0][e.child.1];
                let parent_col = &objects[e.parent.0][e.parent.1];
                type Group<'py> = (Vec<(Bound<'py, PyAny>, usize)>, FastSet<usize>);
                let mut grouped: FastMap<usize, Group<'py>> = FastMap::default();
                for (r, (p, c)) in parent_col.iter().zip(children_col).enumerate() {
                    let (Some(p), Some(c)) = (p, c) else { continue };
                    let entry = grouped.entry(p.as_ptr() as usize).or_default();
                    if entry.1.insert(c.as_ptr() as usize) {
                        entry.0.push((c.clone(), r));
                    }
                }
                // The query orders children by key in the database's collation: put each
                // collection in the loader's own key order (text bytewise), as select-in does.
                let pk_at = child_seg.offset + handle_for(py, child_seg.model)?.get().schema.pk;
                for (r, p) in parents {
                    let mut children = grouped.remove(&(p.as_ptr() as usize)).map(|g| g.0).unwrap_or_default();
                    children.sort_by(|a, b| key_order(&child_rows[a.1][pk_at], &child_rows[b.1][pk_at]));
                    attach(r, &p, children)?;
                }
            }
            EdgeKind::Selectin => {
                let children_col = &objects[e.child.0][e.child.1];
                let pk_at = child_seg.offset + handle_for(py, child_seg.model)?.get().schema.pk;
                // Children grouped by the key they match, in one flat vector (a counting
                // sort: no vector per group), each entry with its row and its primary key.
                let mut group_of: FastMap<Key, usize> =
                    FastMap::with_capacity_and_hasher(parents.len(), Default::default());
                let mut counts: Vec<usize> = Vec::with_capacity(parents.len());
                let mut member: Vec<(usize, usize)> = Vec::with_capacity(children_col.len());
                for (r, (c, row)) in children_col.iter().zip(&child_rows).enumerate() {
                    let (Some(_), Some(k)) = (c, Key::of(&row[e.child_match])) else { continue };
                    let next = counts.len();
                    let g = *group_of.entry(k).or_insert(next);
                    if g == next {
                        counts.push(0);
                    }
                    counts[g] += 1;
                    member.push((r, g));
                }
                let mut starts = Vec::with_capacity(counts.len() + 1);
                let mut total = 0;
                for n in &counts {
                    starts.push(total);
                    total += n;
                }
                starts.push(total);
                let mut fill = starts.clone();
                // Each grouped row with its primary key (its object is `children_col[row]`).
                let mut flat: Vec<(usize, &Value)> = vec![(0, &Value::Null); total];
                for (r, g) in member {
                    flat[fill[g]] = (r, &child_rows[r][pk_at]);
                    fill[g] += 1;
                }
                // Keyed units come unordered from the database: each collection is put in its
                // rows' key order here (a stable sort, cheap on runs already in order). A single
                // relationship that several rows match (a one-to-one the schema does not keep
                // unique) then gets the row of the lowest key, as a join, ordered by key, gives.
                for g in 0..counts.len() {
                    flat[starts[g]..starts[g + 1]].sort_by(|a, b| key_order(a.1, b.1));
                }
                for (r, p) in parents {
                    // A collection's parents have distinct keys (they reference a unique
                    // column); many-to-one targets are shared.
                    let children = match Key::of(&parent_rows[r][e.parent_key]).and_then(|k| group_of.get(&k)) {
                        // Sorted by key, a row met twice (a link table holding the same pair
                        // twice) is side by side: the object goes in once, as a join gives it.
                        Some(&g) => {
                            let mut last: Option<&Value> = None;
                            flat[starts[g]..starts[g + 1]]
                                .iter()
                                .filter(|&&(_, pk)| last.replace(pk) != Some(pk))
                                .map(|&(r, _)| (children_col[r].clone().expect("grouped rows have an object"), r))
                                .collect()
                        }
                        None => vec![],
                    };
                    attach(r, &p, children)?;
                }
            }
        }
    }
    let roots = objects.first().and_then(|u| u.first()).map(distinct).unwrap_or_default();
    PyList::new(py, roots.into_iter().map(|(_, o)| o))
}
