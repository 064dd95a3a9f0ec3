//! The unit of work's flush: compares a session's tracked objects with what they were last
//! read or written with, and plans the statements that bring the database in line.
//!
//! Relationships are compared by object identity against their snapshots: an object added
//! to a one-to-many collection gets its foreign key set (inserted first if new), one removed
//! gets it set to NULL (or an error if the column is NOT NULL); an object added to or removed
//! from a many-to-many collection gets its association row inserted or deleted; assigning a
//! many-to-one relation sets the foreign key. Then every changed column is updated. All of
//! it runs as one request, in one transaction.

use std::collections::HashSet;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use super::convert;
use super::engine::remember_all;
use super::identity::{IdentityMap, Tracked};
use super::model::{handle_for, ModelHandle, Rels};
use super::write::{dict_of, handle_of, is_new, items, WritePlan};
use crate::compile::{self, Dialect};
use crate::driver::{Response, WriteOp};
use crate::errors::{Error, Kind};
use crate::plan::{Cond, DeleteShape, InsertShape, Op, Params, Statement, Target, UpdateShape};
use crate::rows::Key;
use crate::schema::{RelKind, ResolvedRel};
use crate::value::Value;

/// An in-memory back reference to update once the statements ran.
struct Mirror {
    target: Py<PyAny>,
    back: Py<PyString>,
    owner: Py<PyAny>,
    add: bool,
    /// The back reference is a collection (else a scalar).
    list: bool,
}

/// What a flush writes, and what it updates in memory afterwards.
pub struct FlushPlan {
    plan: WritePlan,
    ops: Vec<WriteOp>,
    mirrors: Vec<Mirror>,
    /// Objects whose snapshots are taken again once the statements ran.
    touched: Vec<Py<PyAny>>,
}

impl FlushPlan {
    pub fn take_ops(&mut self) -> Vec<WriteOp> {
        let mut ops = std::mem::take(&mut self.plan.ops);
        ops.append(&mut self.ops);
        ops
    }

    /// Applies generated keys and back references, then records the new state.
    pub fn finish(self, py: Python<'_>, response: Response, identity: &Option<Py<IdentityMap>>) -> PyResult<()> {
        let written = self.plan.apply(py, &response.units())?;
        let new_rows: HashSet<usize> = written.iter().map(|o| o.as_ptr() as usize).collect();
        let mut again: Vec<Bound<'_, PyAny>> = self.touched.iter().map(|o| o.bind(py).clone()).collect();
        for m in &self.mirrors {
            let (target, owner) = (m.target.bind(py), m.owner.bind(py));
            let d = dict_of(target)?;
            let back = m.back.bind(py);
            if m.list {
                // A loaded collection is kept in step, and a row just inserted has no other
                // members; any other unloaded collection stays unloaded.
                let list = match d.get_item(back)?.and_then(|l| l.cast_into::<PyList>().ok()) {
                    Some(list) => list,
                    None if m.add && new_rows.contains(&(target.as_ptr() as usize)) => {
                        let list = PyList::empty(py);
                        d.set_item(back, &list)?;
                        list
                    }
                    None => continue,
                };
                let present = list.iter().any(|o| o.is(owner));
                if m.add && !present {
                    list.append(owner)?;
                } else if !m.add && present {
                    let kept: Vec<Bound<'_, PyAny>> = list.iter().filter(|o| !o.is(owner)).collect();
                    d.set_item(back, PyList::new(py, kept)?)?;
                }
            } else if m.add {
                d.set_item(back, owner)?;
            } else if d.get_item(back)?.is_some_and(|o| o.is(owner)) {
                d.set_item(back, py.None())?;
            }
            again.push(target.clone());
        }
        remember_all(identity, written.iter().map(|o| o.bind(py).clone()), Rels::Inserted)?;
        remember_all(identity, again, Rels::Current)?;
        Ok(())
    }
}

/// The value of column `col` of `obj` as it would be written.
fn value_of(m: &ModelHandle, obj: &Bound<'_, PyAny>, col: usize) -> PyResult<Value> {
    let v = dict_of(obj)?.get_item(m.keys[col].bind(obj.py()))?;
    Ok(v.and_then(|v| convert::to_value(&v, m.schema.columns[col].ty).ok()).unwrap_or(Value::Null))
}

/// The name of the relation on the other side, and whether it is a collection.
fn back_of(r: &ResolvedRel) -> Option<(String, bool)> {
    let b = r.back_populates.as_ref()?;
    let idx = r.target.relation_index(b)?;
    let uselist = r.target.resolved_relations().ok()?.get(idx)?.uselist;
    Some((b.clone(), uselist))
}

fn ptr(o: &Bound<'_, PyAny>) -> usize {
    o.as_ptr() as usize
}

fn not_loaded(m: &ModelHandle, r: &ResolvedRel) -> PyErr {
    Error::new(
        Kind::Interface,
        format!(
            "{model}.{rel} was set on an instance whose {rel} were never loaded, so the session cannot tell what \
             to add or remove; load it first (await session.load(obj, \"{rel}\") or selectinload(\"{rel}\")) and \
             then change the collection",
            model = m.schema.name,
            rel = r.name
        ),
    )
    .into()
}

struct Planner<'py> {
    py: Python<'py>,
    dialect: Dialect,
    plan: WritePlan,
    /// Column UPDATEs of objects the map does not track (their dicts were changed here).
    updates: Vec<(Bound<'py, PyAny>, Vec<usize>)>,
    link_deletes: Vec<WriteOp>,
    link_inserts: Vec<WriteOp>,
    links_seen: HashSet<(u32, Key, Key)>,
    mirrors: Vec<Mirror>,
    touched: Vec<Py<PyAny>>,
    tracked: HashSet<usize>,
}

/// A one-to-many child taken out of a collection, settled once every addition is known.
struct Removal<'py> {
    child: Bound<'py, PyAny>,
    owner: Bound<'py, PyAny>,
    owner_model: String,
    rel: String,
    fk: usize,
    owner_value: Value,
    back: Option<(String, bool)>,
}

impl<'py> Planner<'py> {
    fn mirror(
        &mut self,
        target: &Bound<'py, PyAny>,
        back: &Option<(String, bool)>,
        owner: &Bound<'py, PyAny>,
        add: bool,
    ) {
        if let Some((name, list)) = back {
            self.mirrors.push(Mirror {
                target: target.clone().unbind(),
                back: PyString::intern(self.py, name).unbind(),
                owner: owner.clone().unbind(),
                add,
                list: *list,
            });
        }
    }

    /// Sets column `col` of `obj` in memory and makes sure it gets written.
    fn set_column(
        &mut self,
        obj: &Bound<'py, PyAny>,
        m: &ModelHandle,
        col: usize,
        v: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        dict_of(obj)?.set_item(m.keys[col].bind(self.py), v)?;
        if !self.tracked.contains(&ptr(obj)) {
            match self.updates.iter_mut().find(|(o, _)| o.is(obj)) {
                Some((_, cols)) if !cols.contains(&col) => cols.push(col),
                Some(_) => {}
                None => self.updates.push((obj.clone(), vec![col])),
            }
        }
        Ok(())
    }

    /// An association row of `r` between `owner` and `target`: inserted, or deleted.
    fn link(
        &mut self,
        m: &ModelHandle,
        r: &ResolvedRel,
        owner: &Bound<'py, PyAny>,
        target: &Bound<'py, PyAny>,
        add: bool,
    ) -> PyResult<()> {
        let sec = r.secondary.as_ref().expect("many-to-many has a secondary");
        let th = handle_of(target)?;
        let t = th.get();
        let owner_value = value_of(m, owner, r.local_col)?;
        let mut fixups = vec![];
        let target_value = if add && is_new(t, target)? {
            let op = self.plan.insert(target, &[])?;
            match op {
                Some(op) if r.remote_col == t.schema.pk => {
                    fixups.push((1, op, 0));
                    Value::Null
                }
                _ => value_of(t, target, r.remote_col)?,
            }
        } else {
            value_of(t, target, r.remote_col)?
        };
        if fixups.is_empty() {
            // The same row reached from both sides (both collections loaded and changed)
            // is written once.
            let (Some(a), Some(b)) = (Key::of(&owner_value), Key::of(&target_value)) else {
                return Err(
                    Error::value_type(format!("{}.{}: a related object has no key", m.schema.name, r.name)).into()
                );
            };
            let pair = if sec.owner_fk < sec.target_fk { (sec.model.id, a, b) } else { (sec.model.id, b, a) };
            if !self.links_seen.insert(pair) {
                return Ok(());
            }
        }
        if add {
            let shape = InsertShape {
                model: sec.model.id,
                cols: vec![sec.owner_fk, sec.target_fk],
                rows: 1,
                returning: vec![],
                arrays: false,
            };
            let compiled = compile::compile(self.dialect, &Statement::Insert(shape))?;
            self.link_inserts.push(WriteOp {
                sql: compiled.sql.clone(),
                params: vec![owner_value, target_value],
                columns: None,
                fixups,
            });
        } else {
            let mut params = Params::default();
            let a = params.push(owner_value);
            let b = params.push(target_value);
            let filter = Cond::And(vec![
                Cond::Leaf { target: Target::Column(sec.owner_fk), op: Op::Eq, slots: vec![a] },
                Cond::Leaf { target: Target::Column(sec.target_fk), op: Op::Eq, slots: vec![b] },
            ]);
            let stmt = Statement::Delete(DeleteShape { model: sec.model.id, filter: Some(filter) });
            let compiled = compile::compile(self.dialect, &stmt)?;
            self.link_deletes.push(WriteOp {
                sql: compiled.sql.clone(),
                params: compiled.params(&params.values),
                columns: None,
                fixups: vec![],
            });
        }
        Ok(())
    }

    /// Compares the relationships of one tracked object with their snapshots.
    fn relations(
        &mut self,
        t: &Tracked<'py>,
        removals: &mut Vec<Removal<'py>>,
        added: &mut HashSet<usize>,
    ) -> PyResult<bool> {
        let py = self.py;
        let handle = handle_for(py, t.model)?;
        let m = handle.get();
        if m.schema.relations.is_empty() {
            return Ok(false);
        }
        let Ok(rels) = m.schema.resolved_relations() else { return Ok(false) };
        let d = dict_of(&t.obj)?;
        let mut changed = false;
        for (ri, r) in rels.iter().enumerate() {
            let Some(cur) = d.get_item(r.name.as_str())? else { continue };
            let snap = t.rels.iter().find(|(i, _)| *i == ri).map(|(_, v)| v);
            if r.kind == RelKind::ManyToOne {
                if snap.is_some_and(|s| s.is(&cur)) {
                    continue;
                }
                let back = back_of(r);
                if cur.is_none() {
                    // Only a relation that held something is cleared; an unset one says nothing.
                    if let Some(old) = snap.filter(|s| !s.is_none()) {
                        self.set_column(&t.obj, m, r.local_col, &py.None().into_bound(py))?;
                        self.mirror(old, &back, &t.obj, false);
                        changed = true;
                    }
                    continue;
                }
                let ph = handle_of(&cur)?;
                let p = ph.get();
                if is_new(p, &cur)? && r.remote_col == p.schema.pk {
                    if let Some(op) = self.plan.insert(&cur, &[])? {
                        self.plan.move_child(&t.obj, m, r.local_col, op, 0)?;
                    }
                } else {
                    let v = dict_of(&cur)?
                        .get_item(p.keys[r.remote_col].bind(py))?
                        .unwrap_or_else(|| py.None().into_bound(py));
                    if value_of(m, &t.obj, r.local_col)? == value_of(p, &cur, r.remote_col)? {
                        // Same row: a reassignment to the object already linked.
                        if snap.is_none() {
                            continue;
                        }
                    }
                    self.set_column(&t.obj, m, r.local_col, &v)?;
                }
                if let Some(old) = snap.filter(|s| !s.is_none()) {
                    self.mirror(old, &back, &t.obj, false);
                }
                self.mirror(&cur, &back, &t.obj, true);
                changed = true;
                continue;
            }
            let Some(snap) = snap else {
                if items(&cur)?.is_empty() {
                    continue;
                }
                return Err(not_loaded(m, r));
            };
            let now = items(&cur)?;
            let before = items(snap)?;
            let before_set: HashSet<usize> = before.iter().map(ptr).collect();
            let now_set: HashSet<usize> = now.iter().map(ptr).collect();
            let gained: Vec<_> = now.iter().filter(|o| !before_set.contains(&ptr(o))).cloned().collect();
            let lost: Vec<_> = before.iter().filter(|o| !now_set.contains(&ptr(o))).cloned().collect();
            if gained.is_empty() && lost.is_empty() {
                continue;
            }
            changed = true;
            let back = back_of(r);
            match r.kind {
                RelKind::ManyToMany => {
                    for o in &lost {
                        self.link(m, r, &t.obj, o, false)?;
                        self.mirror(o, &back, &t.obj, false);
                    }
                    for o in &gained {
                        self.link(m, r, &t.obj, o, true)?;
                        self.mirror(o, &back, &t.obj, true);
                    }
                }
                RelKind::OneToMany => {
                    let owner_value = value_of(m, &t.obj, r.local_col)?;
                    let owner_py =
                        d.get_item(m.keys[r.local_col].bind(py))?.unwrap_or_else(|| py.None().into_bound(py));
                    for o in &gained {
                        added.insert(ptr(o));
                        let ch = handle_of(o)?;
                        let c = ch.get();
                        if is_new(c, o)? {
                            dict_of(o)?.set_item(c.keys[r.remote_col].bind(py), &owner_py)?;
                            self.plan.insert(o, &[])?;
                        } else if value_of(c, o, r.remote_col)? != owner_value {
                            self.set_column(o, c, r.remote_col, &owner_py)?;
                        }
                        self.mirror(o, &back, &t.obj, true);
                    }
                    for o in lost {
                        removals.push(Removal {
                            child: o,
                            owner: t.obj.clone(),
                            owner_model: m.schema.name.clone(),
                            rel: r.name.clone(),
                            fk: r.remote_col,
                            owner_value: owner_value.clone(),
                            back: back.clone(),
                        });
                    }
                }
                RelKind::ManyToOne => unreachable!("handled above"),
            }
        }
        Ok(changed)
    }

    /// A child taken out of a one-to-many collection and put in no other: its foreign key
    /// becomes NULL, unless the column cannot hold NULL.
    fn settle_removal(&mut self, r: Removal<'py>) -> PyResult<()> {
        let ch = handle_of(&r.child)?;
        let c = ch.get();
        if value_of(c, &r.child, r.fk)? != r.owner_value {
            return Ok(()); // the user moved it already
        }
        let col = &c.schema.columns[r.fk];
        if !col.nullable {
            return Err(Error::new(
                Kind::Interface,
                format!(
                    "{}.{}: a {} was taken out of the collection, but {}.{} is NOT NULL so it cannot be unlinked; \
                     delete it with await session.remove(obj), or put it in another {}'s {}",
                    r.owner_model, r.rel, c.schema.name, c.schema.name, col.name, r.owner_model, r.rel
                ),
            )
            .into());
        }
        let none = self.py.None().into_bound(self.py);
        self.set_column(&r.child, c, r.fk, &none)?;
        self.mirror(&r.child, &r.back, &r.owner, false);
        Ok(())
    }
}

/// Plans a flush of everything the session's map tracks; None when nothing changed.
pub fn plan(py: Python<'_>, dialect: Dialect, map: &IdentityMap) -> PyResult<Option<FlushPlan>> {
    let live = map.live(py)?;
    let mut p = Planner {
        py,
        dialect,
        plan: WritePlan::new(dialect),
        updates: vec![],
        link_deletes: vec![],
        link_inserts: vec![],
        links_seen: HashSet::new(),
        mirrors: vec![],
        touched: vec![],
        tracked: live.iter().map(|t| ptr(&t.obj)).collect(),
    };
    let mut removals = Vec::new();
    let mut added = HashSet::new();
    for t in &live {
        if p.relations(t, &mut removals, &mut added)? {
            p.touched.push(t.obj.clone().unbind());
        }
    }
    for r in removals {
        if !added.contains(&ptr(&r.child)) {
            p.settle_removal(r)?;
        }
    }
    let mut ops = Vec::new();
    let mut update = |m: &ModelHandle, obj: &Bound<'_, PyAny>, cols: &[usize], key: Value| -> PyResult<()> {
        let d = dict_of(obj)?;
        let mut params = Params::default();
        let mut sets = Vec::new();
        for c in cols {
            let v = d.get_item(m.keys[*c].bind(py))?.unwrap_or_else(|| py.None().into_bound(py));
            sets.push((*c, params.push(m.value_for(*c, &v)?)));
        }
        let slot = params.push(key);
        let filter = Some(Cond::Leaf { target: Target::Column(m.schema.pk), op: Op::Eq, slots: vec![slot] });
        let stmt = Statement::Update(UpdateShape { model: m.schema.id, sets, filter });
        let compiled = compile::compile(dialect, &stmt)?;
        ops.push(WriteOp {
            sql: compiled.sql.clone(),
            params: compiled.params(&params.values),
            columns: None,
            fixups: vec![],
        });
        Ok(())
    };
    for t in &live {
        let handle = handle_for(py, t.model)?;
        let m = handle.get();
        let current = m.snapshot(&t.obj)?;
        let changed: Vec<usize> =
            (0..current.len()).filter(|i| *i != m.schema.pk && current[*i] != t.snapshot[*i]).collect();
        if changed.is_empty() {
            continue;
        }
        update(m, &t.obj, &changed, t.snapshot[m.schema.pk].clone())?;
        p.touched.push(t.obj.clone().unbind());
    }
    for (obj, cols) in std::mem::take(&mut p.updates) {
        let handle = handle_of(&obj)?;
        let m = handle.get();
        update(m, &obj, &cols, m.pk_value(&obj)?)?;
        p.touched.push(obj.unbind());
    }
    ops.append(&mut p.link_deletes);
    ops.append(&mut p.link_inserts);
    if ops.is_empty() && p.plan.ops.is_empty() && p.mirrors.is_empty() {
        return Ok(None);
    }
    Ok(Some(FlushPlan { plan: p.plan, ops, mirrors: p.mirrors, touched: p.touched }))
}
