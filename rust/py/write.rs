//! Inserting instances together with the related instances they hold.
//!
//! `User(name=..., posts=[Post(...)])` becomes one `Writes` request: the user's INSERT, then
//! each post's INSERT with its foreign key taken from the key the user's INSERT returned,
//! all in one transaction. Many-to-one parents are inserted first; many-to-many targets are
//! inserted if new and linked by association rows. Related instances that already have a
//! primary key are not inserted again: a child is moved to the new parent (its foreign key
//! updated), a parent or many-to-many target is linked as it is.

use std::collections::{HashMap, HashSet};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use super::convert;
use super::identity::IdentityMap;
use super::model::ModelHandle;
use crate::compile::{self, Dialect};
use crate::driver::WriteOp;
use crate::errors::Error;
use crate::plan::{Cond, InsertShape, Op, Params, Statement, Target, UpdateShape};
use crate::schema::RelKind;
use crate::value::Value;

/// What to set on which object once the statements ran.
enum Effect {
    /// `obj.<key> = <column col of op's first row>`
    FromOp { obj: Py<PyAny>, key: Py<PyString>, op: usize, col: usize },
    /// `obj.<key> = value`
    Set { obj: Py<PyAny>, key: Py<PyString>, value: Py<PyAny> },
    /// `obj`, just inserted, joins relation `rel` of `target` (a collection or a one-to-one
    /// back-populating one of `obj`'s relationships), if that relation is loaded.
    Join { target: Py<PyAny>, rel: usize, obj: Py<PyAny> },
    /// `child`, a row the session holds, was moved to a new parent by writing its foreign key
    /// `fk` (it was `old`); `owner` is the parent model and its collection's relation.
    Moved { child: Py<PyAny>, fk: usize, old: Value, owner: (u32, usize) },
}

/// The index of the relationship on `r`'s target that back-populates `r` and holds the
/// rows pointing at it (a collection, or a one-to-one), if any.
fn back_collection(r: &crate::schema::ResolvedRel) -> Option<usize> {
    let b = r.back_populates.as_deref()?;
    let t = &r.target;
    let i = t.relation_index(b)?;
    t.resolved_relations().ok()?.get(i).filter(|br| br.kind != RelKind::ManyToOne).map(|_| i)
}

pub struct WritePlan {
    pub ops: Vec<WriteOp>,
    effects: Vec<Effect>,
    /// Insert op of each planned instance, by object address.
    planned: HashMap<usize, usize>,
    in_progress: HashSet<usize>,
    dialect: Dialect,
    /// Every instance planned for insertion, in order, and whether its key is left to the
    /// database.
    objects: Vec<(Py<PyAny>, bool)>,
}

/// Refuses a relationship value of the wrong shape before anything is written, with the
/// model, the relationship and the fix: a collection takes a list (or tuple or set), a single
/// relationship a model instance or None. Members are checked where they are handled
/// (`member_handle`), so a collection is walked once.
pub fn check_related(m: &ModelHandle, r: &crate::schema::ResolvedRel, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let is_model = |o: &Bound<'_, PyAny>| o.get_type().hasattr(pyo3::intern!(o.py(), "__ormkit__")).unwrap_or(false);
    let (model, rel, target) = (&m.schema.name, &r.name, &r.target.name);
    if !r.uselist {
        if value.is_none() || is_model(value) {
            return Ok(());
        }
        return Err(Error::value_type(format!(
            "{model}.{rel} was set to {}; it takes a {target} instance (or None)",
            convert::describe(value)
        ))
        .into());
    }
    let is_collection = value.is_instance_of::<PyList>()
        || value.is_instance_of::<pyo3::types::PyTuple>()
        || value.is_instance_of::<pyo3::types::PySet>();
    if !is_collection {
        let shown = if value.is_none() { "None".to_string() } else { convert::describe(value) };
        return Err(Error::value_type(format!(
            "{model}.{rel} was set to {shown}; it takes a list of {target} instances (assign [] to empty it)"
        ))
        .into());
    }
    Ok(())
}

/// The handle of `o`, a member of collection `r` of `m`; one that is not a model instance is
/// refused with the model, the relationship and what it takes.
pub fn member_handle<'py>(
    m: &ModelHandle,
    r: &crate::schema::ResolvedRel,
    o: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, ModelHandle>> {
    handle_of(o).map_err(|_| {
        Error::value_type(format!(
            "{}.{} holds {}; it takes {} instances",
            m.schema.name,
            r.name,
            convert::describe(o),
            r.target.name
        ))
        .into()
    })
}

pub fn handle_of<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, ModelHandle>> {
    let h = obj
        .get_type()
        .getattr(pyo3::intern!(obj.py(), "__ormkit__"))
        .map_err(|_| Error::value_type(format!("{} is not a model instance", convert::describe(obj))))?;
    Ok(h.cast_into::<ModelHandle>()?)
}

pub fn dict_of<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    // SAFETY: `obj` is a live model instance (a type with a __dict__); the call returns a
    // new reference to its dict (built from its inline values if it had none), or NULL with
    // an exception set.
    let d = unsafe {
        Bound::from_owned_ptr_or_err(obj.py(), pyo3::ffi::PyObject_GenericGetDict(obj.as_ptr(), std::ptr::null_mut()))?
    };
    Ok(d.cast_into::<PyDict>()?)
}

/// True when the instance holds a related instance or collection to write with it.
pub fn has_related(m: &ModelHandle, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    if m.schema.relations.is_empty() {
        return Ok(false);
    }
    let d = dict_of(obj)?;
    for r in &m.schema.relations {
        if let Some(v) = d.get_item(r.name.as_str())? {
            let empty_list = v.is_instance_of::<PyList>() && v.len()? == 0;
            if !v.is_none() && !empty_list {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Where an instance whose row the session deleted says so (`session.add()` takes it away).
fn removed_key(py: Python<'_>) -> &Bound<'_, PyString> {
    pyo3::intern!(py, "_ormkit_removed")
}

pub fn mark_removed(obj: &Bound<'_, PyAny>) -> PyResult<()> {
    dict_of(obj)?.set_item(removed_key(obj.py()), true)
}

/// The row is back (the delete was rolled back): the mark goes.
pub fn unmark_removed(obj: &Bound<'_, PyAny>) -> PyResult<()> {
    let d = dict_of(obj)?;
    if d.contains(removed_key(obj.py()))? {
        d.del_item(removed_key(obj.py()))?;
    }
    Ok(())
}

/// Whether the session deleted `obj`'s row (`session.remove`).
pub fn is_removed(obj: &Bound<'_, PyAny>) -> bool {
    dict_of(obj).and_then(|d| d.contains(removed_key(obj.py()))).unwrap_or(false)
}

/// The error for a row this session deleted, put in a relationship of `m` since.
pub fn removed_member(m: &ModelHandle, r: &crate::schema::ResolvedRel, target: &ModelHandle) -> PyErr {
    Error::value_type(format!(
        "{}.{} holds a {} whose row this session deleted (session.remove); take it out, or session.add() it \
         first to insert it again",
        m.schema.name, r.name, target.schema.name
    ))
    .into()
}

pub fn is_new(m: &ModelHandle, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let d = dict_of(obj)?;
    Ok(d.get_item(m.keys[m.schema.pk].bind(obj.py()))?.is_none_or(|v| v.is_none()))
}

pub fn items<'py>(v: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if v.is_none() {
        return Ok(vec![]);
    }
    if v.is_instance_of::<PyList>()
        || v.is_instance_of::<pyo3::types::PyTuple>()
        || v.is_instance_of::<pyo3::types::PySet>()
    {
        return v.try_iter()?.collect();
    }
    Ok(vec![v.clone()])
}

impl WritePlan {
    pub fn new(dialect: Dialect) -> Self {
        WritePlan {
            ops: vec![],
            effects: vec![],
            planned: HashMap::new(),
            in_progress: HashSet::new(),
            dialect,
            objects: vec![],
        }
    }

    fn key_of(obj: &Bound<'_, PyAny>) -> usize {
        obj.as_ptr() as usize
    }

    /// Plans the INSERT of `obj` (once) and of what it holds; `forced` sets columns from
    /// earlier ops' results: `(column, op, result column)`. Returns the op, or None when
    /// `obj` is already being planned further up (it will link itself).
    pub fn insert(&mut self, obj: &Bound<'_, PyAny>, forced: &[(usize, usize, usize)]) -> PyResult<Option<usize>> {
        let py = obj.py();
        let id = Self::key_of(obj);
        if let Some(op) = self.planned.get(&id) {
            return Ok(Some(*op));
        }
        if !self.in_progress.insert(id) {
            return Ok(None);
        }
        let handle = handle_of(obj)?;
        let m = handle.get();
        let rels = m.schema.resolved_relations()?;
        let d = dict_of(obj)?;
        let mut from_ops: Vec<(usize, usize, usize)> = forced.to_vec();
        // Parents first: this row needs their keys.
        for r in rels.iter() {
            if let Some(v) = d.get_item(r.name.as_str())? {
                check_related(m, r, &v)?;
            }
        }
        for r in rels.iter().filter(|r| r.kind == RelKind::ManyToOne) {
            let Some(parent) = d.get_item(r.name.as_str())? else { continue };
            if parent.is_none() || from_ops.iter().any(|f| f.0 == r.local_col) {
                continue;
            }
            let ph = handle_of(&parent)?;
            let p = ph.get();
            let remote_key = p.keys[r.remote_col].bind(py);
            if is_new(p, &parent)? && r.remote_col == p.schema.pk {
                if let Some(op) = self.insert(&parent, &[])? {
                    from_ops.push((r.local_col, op, 0));
                }
            } else {
                d.set_item(m.keys[r.local_col].bind(py), dict_of(&parent)?.get_item(remote_key)?)?;
            }
            if let Some(rel) = back_collection(r) {
                self.effects.push(Effect::Join { target: parent.clone().unbind(), rel, obj: obj.clone().unbind() });
            }
        }
        let mut cols = Vec::new();
        let mut params = Vec::new();
        let mut fixups = Vec::new();
        let mut generated = false;
        for (i, c) in m.schema.columns.iter().enumerate() {
            if let Some((_, op, rc)) = from_ops.iter().find(|f| f.0 == i) {
                fixups.push((params.len(), *op, *rc));
                cols.push(i);
                params.push(Value::Null);
                self.effects.push(Effect::FromOp {
                    obj: obj.clone().unbind(),
                    key: m.keys[i].clone_ref(py),
                    op: *op,
                    col: *rc,
                });
                continue;
            }
            let v = d.get_item(m.keys[i].bind(py))?;
            let missing = v.as_ref().is_none_or(|v| v.is_none());
            if c.primary_key && c.autoincrement && missing {
                generated = true;
                continue;
            }
            cols.push(i);
            let none = py.None().into_bound(py);
            params.push(m.value_for(i, v.as_ref().unwrap_or(&none))?);
        }
        let pk = m.schema.pk;
        let shape = InsertShape { model: m.schema.id, cols, rows: 1, returning: vec![pk], arrays: false };
        let compiled = compile::compile(self.dialect, &Statement::Insert(shape))?;
        let op = self.ops.len();
        self.ops.push(WriteOp { sql: compiled.sql.clone(), params, columns: Some(compiled.out.clone()), fixups });
        self.effects.push(Effect::FromOp { obj: obj.clone().unbind(), key: m.keys[pk].clone_ref(py), op, col: 0 });
        self.planned.insert(id, op);
        self.objects.push((obj.clone().unbind(), generated));
        // Then what hangs below it.
        for (ri, r) in rels.iter().enumerate().filter(|(_, r)| r.kind != RelKind::ManyToOne) {
            let Some(v) = d.get_item(r.name.as_str())? else { continue };
            let back = match &r.back_populates {
                Some(b) => {
                    let t = &r.target;
                    let idx = t.relation_index(b);
                    idx.filter(|i| !t.resolved_relations().map(|rs| rs[*i].uselist).unwrap_or(true)).map(|_| b.clone())
                }
                None => None,
            };
            let mut seen = HashSet::new();
            // The same object twice in a collection is one member, as a flush takes it.
            for child in items(&v)?.into_iter().filter(|c| seen.insert(c.as_ptr() as usize)) {
                let ch = member_handle(m, r, &child)?;
                let c = ch.get();
                match r.kind {
                    RelKind::OneToMany => {
                        let link = if r.local_col == pk {
                            Some((r.remote_col, op, 0))
                        } else {
                            let val = d.get_item(m.keys[r.local_col].bind(py))?;
                            dict_of(&child)?.set_item(c.keys[r.remote_col].bind(py), val)?;
                            None
                        };
                        if is_removed(&child) {
                            return Err(removed_member(m, r, c));
                        }
                        if is_new(c, &child)? {
                            self.insert(&child, link.as_slice())?;
                        } else if let Some((fk, from, col)) = link {
                            let old = c.column_value(&child, fk)?;
                            self.move_child(&child, c, fk, from, col)?;
                            self.effects.push(Effect::Moved {
                                child: child.clone().unbind(),
                                fk,
                                old,
                                owner: (m.schema.id, ri),
                            });
                        }
                        if let Some(b) = &back {
                            self.effects.push(Effect::Set {
                                obj: child.clone().unbind(),
                                key: PyString::intern(py, b).unbind(),
                                value: obj.clone().unbind(),
                            });
                        }
                    }
                    RelKind::ManyToMany => {
                        if let Some(rel) = back_collection(r) {
                            self.effects.push(Effect::Join {
                                target: child.clone().unbind(),
                                rel,
                                obj: obj.clone().unbind(),
                            });
                        }
                        let sec = r.secondary.as_ref().expect("many-to-many has a secondary");
                        let target_op = if is_new(c, &child)? { self.insert(&child, &[])? } else { None };
                        let owner_val = (r.local_col != pk)
                            .then(|| d.get_item(m.keys[r.local_col].bind(py)))
                            .transpose()?
                            .flatten();
                        let target_val = dict_of(&child)?.get_item(c.keys[r.remote_col].bind(py))?;
                        let mut params = vec![Value::Null, Value::Null];
                        let mut fixups = vec![];
                        match owner_val {
                            Some(v) => {
                                params[0] =
                                    convert::to_value(&v, m.schema.columns[r.local_col].ty).unwrap_or(Value::Null)
                            }
                            None => fixups.push((0, op, 0)),
                        }
                        match (target_op, target_val) {
                            (Some(top), _) if r.remote_col == c.schema.pk => fixups.push((1, top, 0)),
                            (_, Some(v)) => {
                                params[1] =
                                    convert::to_value(&v, c.schema.columns[r.remote_col].ty).unwrap_or(Value::Null)
                            }
                            _ => {}
                        }
                        let shape = InsertShape {
                            model: sec.model.id,
                            cols: vec![sec.owner_fk, sec.target_fk],
                            rows: 1,
                            returning: vec![],
                            arrays: false,
                        };
                        let compiled = compile::compile(self.dialect, &Statement::Insert(shape))?;
                        self.ops.push(WriteOp { sql: compiled.sql.clone(), params, columns: None, fixups });
                    }
                    RelKind::ManyToOne => unreachable!("filtered above"),
                }
            }
        }
        self.in_progress.remove(&id);
        Ok(Some(op))
    }

    /// `UPDATE child SET fk = <new parent key> WHERE pk = <child key>`.
    pub fn move_child(
        &mut self,
        child: &Bound<'_, PyAny>,
        c: &ModelHandle,
        fk: usize,
        from: usize,
        col: usize,
    ) -> PyResult<()> {
        let py = child.py();
        let mut params = Params::default();
        let set = params.push(Value::Null);
        let pkv = c.pk_value(child)?;
        let slot = params.push(pkv);
        let filter = Some(Cond::Leaf { target: Target::Column(c.schema.pk), op: Op::Eq, slots: vec![slot] });
        let stmt = Statement::Update(UpdateShape { model: c.schema.id, sets: vec![(fk, set)], filter });
        let compiled = compile::compile(self.dialect, &stmt)?;
        let params = compiled.params(&params.values);
        let fixups =
            compiled.binds.iter().enumerate().filter(|(_, b)| b.slot == set).map(|(i, _)| (i, from, col)).collect();
        self.ops.push(WriteOp { sql: compiled.sql.clone(), params, columns: None, fixups });
        self.effects.push(Effect::FromOp { obj: child.clone().unbind(), key: c.keys[fk].clone_ref(py), op: from, col });
        Ok(())
    }

    /// Applies the keys the statements returned to the Python objects, then adds the new
    /// rows to the loaded collections they belong to; returns the instances that were
    /// inserted, each with whether its key was generated.
    pub fn apply(
        self,
        py: Python<'_>,
        results: &[crate::rows::RowSet],
        identity: Option<&IdentityMap>,
    ) -> PyResult<Vec<(Py<PyAny>, bool)>> {
        let mut joins = Vec::new();
        let mut moves = Vec::new();
        for e in self.effects {
            match e {
                Effect::FromOp { obj, key, op, col } => {
                    if let Some(v) = results.get(op).filter(|r| !r.is_empty()).map(|r| r.row(0)[col].clone()) {
                        dict_of(obj.bind(py))?.set_item(key.bind(py), convert::to_py(py, &v)?)?;
                    }
                }
                Effect::Set { obj, key, value } => {
                    dict_of(obj.bind(py))?.set_item(key.bind(py), value)?;
                }
                Effect::Join { target, rel, obj } => joins.push((target, rel, obj)),
                Effect::Moved { child, fk, old, owner } => moves.push((child, fk, old, owner)),
            }
        }
        let new_rows: HashSet<usize> = self.objects.iter().map(|(o, _)| o.as_ptr() as usize).collect();
        for (target, rel, obj) in joins {
            let fresh = new_rows.contains(&(target.as_ptr() as usize));
            join_collection(identity, target.bind(py), rel, obj.bind(py), fresh)?;
        }
        if let Some(map) = identity {
            for (child, fk, old, owner) in moves {
                settle_move(py, map, child.bind(py), fk, &old, owner)?;
            }
        }
        Ok(self.objects)
    }
}

/// After a write moved `child` to another parent: the session takes its new key as what the
/// database holds (a later flush would write it again, and a read keep it over another
/// session's change), and the old parent's loaded collection lets it go.
fn settle_move(
    py: Python<'_>,
    map: &IdentityMap,
    child: &Bound<'_, PyAny>,
    fk: usize,
    old: &Value,
    (owner, rel): (u32, usize),
) -> PyResult<()> {
    let ch = handle_of(child)?;
    let c = ch.get();
    if map.holds_obj(c, child)? {
        map.settle_columns(c, child, &[fk])?;
    }
    let Some(old_key) = crate::rows::Key::of(old) else { return Ok(()) };
    let Some(prev) = map.lookup(py, owner, &old_key) else { return Ok(()) };
    let ph = handle_of(&prev)?;
    let Ok(rels) = ph.get().schema.resolved_relations() else { return Ok(()) };
    let Some(r) = rels.get(rel) else { return Ok(()) };
    let d = dict_of(&prev)?;
    let Some(list) = d.get_item(r.name.as_str())?.and_then(|l| l.cast_into::<PyList>().ok()) else {
        return Ok(());
    };
    if !list.iter().any(|o| o.is(child)) {
        return Ok(());
    }
    let kept: Vec<Bound<'_, PyAny>> = list.iter().filter(|o| !o.is(child)).collect();
    map.remove_from_relation(&prev, owner, old_key, rel, &c.pk_value(child)?);
    d.set_item(r.name.as_str(), PyList::new(py, kept)?)
}

/// Puts `obj`, a row just inserted, in relationship `rel` of `target` (a collection, or a
/// one-to-one) when that holds what was loaded: the loaded relationships on the other side of
/// a new row's relationships follow it, as they follow an assignment. The session's record
/// takes the row too, so that the next flush does not write it again. A `fresh` target was
/// inserted by the same write: it is recorded afterwards with what it then holds.
fn join_collection(
    identity: Option<&IdentityMap>,
    target: &Bound<'_, PyAny>,
    rel: usize,
    obj: &Bound<'_, PyAny>,
    fresh: bool,
) -> PyResult<()> {
    let py = target.py();
    let th = handle_of(target)?;
    let t = th.get();
    let Ok(rels) = t.schema.resolved_relations() else { return Ok(()) };
    let Some(r) = rels.get(rel) else { return Ok(()) };
    let d = dict_of(target)?;
    let held = d.get_item(r.name.as_str())?;
    if !r.uselist {
        if held.as_ref().is_some_and(|h| h.is(obj)) {
            return Ok(());
        }
        if !fresh {
            let Some(map) = identity else {
                return match held {
                    Some(_) => d.set_item(r.name.as_str(), obj),
                    None => Ok(()),
                };
            };
            let oh = handle_of(obj)?;
            let value = oh.get().column_value(obj, oh.get().schema.pk)?;
            let Some(key) = crate::rows::Key::of(&t.pk_value(target)?) else { return Ok(()) };
            if !map.set_relation_one(target, t.schema.id, key, rel, value) {
                return Ok(());
            }
        }
        return d.set_item(r.name.as_str(), obj);
    }
    let list = match held.and_then(|l| l.cast_into::<PyList>().ok()) {
        Some(list) => list,
        None if fresh => {
            let list = PyList::empty(py);
            d.set_item(r.name.as_str(), &list)?;
            list
        }
        None => return Ok(()),
    };
    if list.iter().any(|o| o.is(obj)) {
        return Ok(());
    }
    if let (Some(map), false) = (identity, fresh) {
        let oh = handle_of(obj)?;
        let link = if r.kind == RelKind::OneToMany { oh.get().schema.pk } else { r.remote_col };
        let value = oh.get().column_value(obj, link)?;
        let Some(key) = crate::rows::Key::of(&t.pk_value(target)?) else { return Ok(()) };
        // Only a collection the session recorded as loaded, and recorded with its members:
        // one noload() left empty, or one assigned and not flushed, is the user's to fill.
        if !map.add_to_relation(target, t.schema.id, key, rel, value) {
            return Ok(());
        }
    }
    list.append(obj)
}
