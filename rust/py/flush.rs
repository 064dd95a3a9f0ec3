//! The unit of work's flush: compares a session's tracked objects with what they were last
//! read or written with, and plans the statements that bring the database in line.
//!
//! Many-to-one relations are compared first: assigning one sets the foreign key (a new parent
//! is inserted first). Then collections, by the keys recorded when they were loaded: an
//! object added to a one-to-many collection gets its foreign key set (inserted first if new),
//! one removed gets it set to NULL (or an error if the column is NOT NULL); an object added
//! to or removed from a many-to-many collection gets its association row inserted or
//! deleted. Then every changed column is updated. All of it runs as one request, in one
//! transaction, and nothing is sent if planning fails.

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use super::engine::remember_all;
use super::identity::{IdentityMap, RelSnap, Tracked};
use super::model::{handle_for, related_key_in, ModelHandle, Rels};
use super::write::{check_related, dict_of, handle_of, items, member_handle, WritePlan};
use crate::compile::{self, Dialect};
use crate::driver::{Response, WriteOp};
use crate::errors::{Error, Kind};
use crate::plan::{Cond, DeleteShape, InsertShape, Op, Params, Slot, Statement, Target, UpdateShape};
use crate::rows::{FastSet, Key};
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
    /// Run first: updates that only clear columns.
    clears: Vec<WriteOp>,
    ops: Vec<WriteOp>,
    mirrors: Vec<Mirror>,
    /// Objects whose snapshots are taken again once the statements ran.
    touched: Vec<Py<PyAny>>,
    /// How many statements run before the plan's own (their answers come first).
    shift: usize,
    /// Objects with a key that this session never read or wrote, inserted as new rows.
    strangers: Vec<String>,
}

impl FlushPlan {
    /// "User(id=3) was", "User(id=3) and Post(id=5) were": for a failure message.
    pub fn strangers(&self) -> String {
        match self.strangers.as_slice() {
            [] => String::new(),
            [one] => format!("{one} was"),
            many => format!("{} were", many.join(", ")),
        }
    }

    pub fn take_ops(&mut self) -> Vec<WriteOp> {
        // The plan's statements refer to each other by position (generated keys), so the
        // clears placed in front shift those references, and the answers.
        let shift = self.clears.len();
        let mut ops = std::mem::take(&mut self.clears);
        for mut op in std::mem::take(&mut self.plan.ops).into_iter().chain(std::mem::take(&mut self.ops)) {
            for f in &mut op.fixups {
                f.1 += shift;
            }
            ops.push(op);
        }
        self.shift = shift;
        ops
    }

    /// Applies generated keys and back references, then records the new state.
    pub fn finish(self, py: Python<'_>, response: Response, identity: &Option<Py<IdentityMap>>) -> PyResult<()> {
        let units = response.units();
        let written =
            self.plan.apply(py, units.get(self.shift..).unwrap_or(&[]), identity.as_ref().map(|m| m.get()))?;
        let new_rows: FastSet<usize> = written.iter().map(|(o, _)| o.as_ptr() as usize).collect();
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
        // A parent loaded before that a written key no longer points at goes, as after any
        // other write of the key: a later flush would take it for an assignment.
        for o in &again {
            handle_of(o)?.get().expire_all_parents(o)?;
        }
        super::engine::remember_new(identity, py, &written)?;
        remember_all(identity, again, Rels::Current)?;
        if let Some(map) = identity {
            map.get().clear_deleted();
        }
        Ok(())
    }
}

/// The name of the relation on the other side, and whether it is a collection.
fn back_of(r: &ResolvedRel) -> Option<(String, bool)> {
    let b = r.back_populates.as_ref()?;
    let idx = r.target.relation_index(b)?;
    let uselist = r.target.resolved_relations().ok()?.get(idx)?.uselist;
    Some((b.clone(), uselist))
}

/// `column = <slot>`.
fn eq(col: usize, slot: Slot) -> Cond {
    Cond::Leaf { target: Target::Column(col), op: Op::Eq, slots: vec![slot] }
}

/// A statement whose parameters are all known now (no earlier statement's answer needed).
fn plain_op(dialect: Dialect, stmt: &Statement, params: &Params) -> PyResult<WriteOp> {
    let compiled = compile::compile(dialect, stmt)?;
    Ok(WriteOp { sql: compiled.sql.clone(), params: compiled.params(&params.values), columns: None, fixups: vec![] })
}

/// A tracked object's resolved relations and its `__dict__`; None when its model has no
/// relations, or none is set on the object, so there is nothing for a relation pass to do.
type RelsAndDict<'py> = (std::sync::Arc<Vec<ResolvedRel>>, Bound<'py, pyo3::types::PyDict>);

fn relations_and_dict<'py>(t: &Tracked<'py>, m: &ModelHandle) -> PyResult<Option<RelsAndDict<'py>>> {
    if m.schema.relations.is_empty() {
        return Ok(None);
    }
    let rels = match m.schema.resolved_relations() {
        Ok(rels) => rels,
        Err(e) => {
            // A relationship declared wrong cannot be written, but an object holding none
            // (it was only read, or changed in its columns) still flushes.
            let d = dict_of(&t.obj)?;
            for r in &m.schema.relations {
                if d.contains(r.name.as_str())? {
                    return Err(e.into());
                }
            }
            return Ok(None);
        }
    };
    Ok(Some((rels, dict_of(&t.obj)?)))
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
             then change it",
            model = m.schema.name,
            rel = r.name
        ),
    )
    .into()
}

struct Planner<'py, 'a> {
    py: Python<'py>,
    dialect: Dialect,
    map: &'a IdentityMap,
    plan: WritePlan,
    /// Column UPDATEs of objects the map does not track (their dicts were changed here).
    updates: Vec<(Bound<'py, PyAny>, Vec<usize>)>,
    /// Statements that need no object: unlinking children that are no longer in memory.
    by_key: Vec<WriteOp>,
    link_deletes: Vec<WriteOp>,
    link_inserts: Vec<WriteOp>,
    links_seen: FastSet<(u32, Key, Key)>,
    /// New many-to-many targets already linked to an owner in this flush: (target, owner).
    new_links: FastSet<(usize, usize)>,
    mirrors: Vec<Mirror>,
    touched: Vec<Py<PyAny>>,
    tracked: FastSet<usize>,
    /// One-to-many children given a new parent in this flush, by (child, foreign key column).
    adopted: FastSet<(usize, usize)>,
    live: Vec<(u32, Bound<'py, PyAny>)>,
    strangers: Vec<String>,
}

/// A one-to-many child taken out of a collection, settled once every addition is known.
struct Removal<'py> {
    owner: Bound<'py, PyAny>,
    owner_model: String,
    rel: ResolvedRel,
    /// The child's key, and the child if it is still in memory.
    key: Value,
    child: Option<Bound<'py, PyAny>>,
    owner_value: Value,
}

impl<'py> Planner<'py, '_> {
    /// An object the flush must insert: one without a key, or one this session has never
    /// read or written (SQLAlchemy's "transient"), whatever key it was given.
    fn is_new(&mut self, m: &ModelHandle, obj: &Bound<'py, PyAny>) -> PyResult<bool> {
        let key = m.column_value(obj, m.schema.pk)?;
        Ok(self.is_new_keyed(m, obj, &key))
    }

    /// `is_new` with the object's primary key value already read.
    fn is_new_keyed(&mut self, m: &ModelHandle, obj: &Bound<'py, PyAny>, key: &Value) -> bool {
        if key.is_null() {
            return true;
        }
        if self.tracked.contains(&ptr(obj)) {
            return false;
        }
        // Deleted by this session: gone, not new (a loaded relationship still holding it
        // would otherwise have it inserted again).
        if super::write::is_removed(obj) {
            return false;
        }
        let shown = match key {
            Value::Int(i) => i.to_string(),
            Value::Text(t) => format!("{t:?}"),
            other => format!("{other:?}"),
        };
        let who = format!("{}({}={shown})", m.schema.name, m.schema.pk_column().name);
        if !self.strangers.contains(&who) {
            self.strangers.push(who);
        }
        true
    }

    /// True when a collection holds the session's objects for exactly the rows it was loaded
    /// with, in the order they were recorded: the usual case, decided without building sets.
    fn holds_as_loaded(
        &self,
        r: &ResolvedRel,
        target: &ModelHandle,
        cls: &Bound<'py, pyo3::types::PyType>,
        items: &[Bound<'py, PyAny>],
        before: &[Value],
    ) -> PyResult<bool> {
        let by_pk = r.kind == RelKind::OneToMany || r.remote_col == target.schema.pk;
        for (o, was) in items.iter().zip(before) {
            if !o.get_type().is(cls) || !self.tracked.contains(&ptr(o)) || related_key_in(target, r, o)? != *was {
                return Ok(false);
            }
            // Linked by another column: a member whose key was cleared is new again.
            if !by_pk && target.column_value(o, target.schema.pk)?.is_null() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// True when a many-to-one holds what it was loaded with: the same parent (by the
    /// referenced column), or None for a NULL. The common case of a flush with nothing to
    /// do, decided without looking the old parent up.
    fn same_parent(&mut self, r: &ResolvedRel, cur: &Bound<'py, PyAny>, before: &Value) -> PyResult<bool> {
        if cur.is_none() {
            return Ok(before.is_null());
        }
        if before.is_null() {
            return Ok(false);
        }
        let target = handle_for(self.py, r.target.id)?;
        let p = target.get();
        if !cur.get_type().is(p.cls.bind(self.py)) {
            return Ok(false); // checked (and reported) on the full path
        }
        let pk = p.column_value(cur, p.schema.pk)?;
        if self.is_new_keyed(p, cur, &pk) {
            return Ok(false);
        }
        let now = if r.remote_col == p.schema.pk { pk } else { p.column_value(cur, r.remote_col)? };
        Ok(&now == before)
    }

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

    /// The session's object for a related row recorded in a snapshot, when it is alive and
    /// the recorded value is the row's key.
    fn object_for(&self, r: &ResolvedRel, v: &Value) -> Option<Bound<'py, PyAny>> {
        let by_pk = r.kind == RelKind::OneToMany || r.remote_col == r.target.pk;
        if by_pk {
            return self.map.lookup(self.py, r.target.id, &Key::of(v)?);
        }
        // Referenced through another unique column: look among the tracked objects.
        let h = handle_for(self.py, r.target.id).ok()?;
        self.live
            .iter()
            .filter(|(m, _)| *m == r.target.id)
            .find(|(_, o)| h.get().column_value(o, r.remote_col).is_ok_and(|x| &x == v))
            .map(|(_, o)| o.clone())
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

    /// An association row of `r` between `owner` and the target: inserted, or deleted.
    fn link(
        &mut self,
        m: &ModelHandle,
        r: &ResolvedRel,
        owner: &Bound<'py, PyAny>,
        target: Linked<'py>,
        add: bool,
    ) -> PyResult<()> {
        let sec = r.secondary.as_ref().expect("many-to-many has a secondary");
        let owner_value = m.column_value(owner, r.local_col)?;
        let mut fixups = vec![];
        let target_value = match target {
            Linked::Row(v) => v,
            Linked::New(obj) => {
                if !self.new_links.insert((ptr(&obj), ptr(owner))) {
                    return Ok(()); // the same new object twice in one collection
                }
                let th = handle_of(&obj)?;
                let t = th.get();
                // A new target that lists the owner in its own collection gets that link
                // written by its insert.
                if let Some((b, true)) = back_of(r) {
                    if let Some(list) = dict_of(&obj)?.get_item(b.as_str())? {
                        if items(&list)?.iter().any(|o| o.is(owner)) {
                            self.plan.insert(&obj, &[])?;
                            return Ok(());
                        }
                    }
                }
                match self.plan.insert(&obj, &[])? {
                    Some(op) if r.remote_col == t.schema.pk && t.column_value(&obj, t.schema.pk)?.is_null() => {
                        fixups.push((1, op, 0));
                        Value::Null
                    }
                    _ => t.column_value(&obj, r.remote_col)?,
                }
            }
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
            let filter = Cond::And(vec![eq(sec.owner_fk, a), eq(sec.target_fk, b)]);
            let stmt = Statement::Delete(DeleteShape { model: sec.model.id, filter: Some(filter) });
            self.link_deletes.push(plain_op(self.dialect, &stmt, &params)?);
        }
        Ok(())
    }

    /// Pass one: many-to-one relations of a tracked object, compared with the foreign key
    /// the row holds as the session last saw it.
    fn parents(&mut self, t: &Tracked<'py>, m: &ModelHandle) -> PyResult<bool> {
        let py = self.py;
        let Some((rels, d)) = relations_and_dict(t, m)? else { return Ok(false) };
        let mut changed = false;
        for r in rels.iter().filter(|r| r.kind == RelKind::ManyToOne) {
            let Some(cur) = d.get_item(PyString::intern(py, &r.name))? else { continue };
            check_related(m, r, &cur)?;
            // What the row holds: a record of the parent it was loaded with may be older
            // (an upsert or a read since changed the key).
            let before = t.snapshot[r.local_col].clone();
            if self.same_parent(r, &cur, &before)? {
                continue;
            }
            let back = back_of(r);
            let old_parent = if before.is_null() { None } else { self.object_for(r, &before) };
            if cur.is_none() {
                if before.is_null() {
                    continue;
                }
                self.set_column(&t.obj, m, r.local_col, &py.None().into_bound(py))?;
            } else {
                let ph = handle_of(&cur)?;
                let p = ph.get();
                if p.schema.id != r.target.id {
                    return Err(Error::value_type(format!(
                        "{}.{} was set to a {}; it takes a {} (or None)",
                        m.schema.name, r.name, p.schema.name, r.target.name
                    ))
                    .into());
                }
                if self.is_new(p, &cur)? {
                    let op = self.plan.insert(&cur, &[])?;
                    match op {
                        Some(op) if r.remote_col == p.schema.pk && p.column_value(&cur, p.schema.pk)?.is_null() => {
                            self.plan.move_child(&t.obj, m, r.local_col, op, 0)?;
                        }
                        _ => {
                            let v = dict_of(&cur)?.get_item(p.keys[r.remote_col].bind(py))?;
                            self.set_column(&t.obj, m, r.local_col, &v.unwrap_or_else(|| py.None().into_bound(py)))?;
                        }
                    }
                } else {
                    let now = p.column_value(&cur, r.remote_col)?;
                    if now == before {
                        continue;
                    }
                    let v = dict_of(&cur)?.get_item(p.keys[r.remote_col].bind(py))?;
                    self.set_column(&t.obj, m, r.local_col, &v.unwrap_or_else(|| py.None().into_bound(py)))?;
                }
                self.mirror(&cur, &back, &t.obj, true);
            }
            if let Some(old) = old_parent {
                self.mirror(&old, &back, &t.obj, false);
            }
            changed = true;
        }
        Ok(changed)
    }

    /// Pass two: one-to-many and many-to-many relations of a tracked object, compared with
    /// the keys they were loaded with.
    fn collections(&mut self, t: &Tracked<'py>, m: &ModelHandle, removals: &mut Vec<Removal<'py>>) -> PyResult<bool> {
        let py = self.py;
        let Some((rels, d)) = relations_and_dict(t, m)? else { return Ok(false) };
        let mut changed = false;
        for (ri, r) in rels.iter().enumerate().filter(|(_, r)| r.kind != RelKind::ManyToOne) {
            let Some(cur) = d.get_item(PyString::intern(py, &r.name))? else { continue };
            check_related(m, r, &cur)?;
            let before: std::borrow::Cow<'_, [Value]> = match t.rels.iter().find(|(i, _)| *i == ri) {
                Some((_, RelSnap::Many(v))) => std::borrow::Cow::Borrowed(v.as_slice()),
                Some((_, RelSnap::One(v))) => {
                    if v.is_null() {
                        std::borrow::Cow::Owned(vec![])
                    } else {
                        std::borrow::Cow::Owned(vec![v.clone()])
                    }
                }
                // noload() left it empty: untouched unless something was put in it.
                Some((_, RelSnap::Unknown(list))) if *list == ptr(&cur) && items(&cur)?.is_empty() => continue,
                Some((_, RelSnap::Unknown(_))) | None => return Err(not_loaded(m, r)),
            };
            let items = items(&cur)?;
            let target = handle_for(py, r.target.id)?;
            let target_cls = target.get().cls.bind(py);
            if items.len() == before.len() && self.holds_as_loaded(r, target.get(), target_cls, &items, &before)? {
                continue;
            }
            let mut seen = FastSet::with_capacity_and_hasher(items.len(), Default::default());
            let now: Vec<Bound<'py, PyAny>> = items.into_iter().filter(|o| seen.insert(ptr(o))).collect();
            let before_keys: FastSet<Key> = before.iter().filter_map(Key::of).collect();
            let mut now_keys: FastSet<Key> = FastSet::with_capacity_and_hasher(now.len(), Default::default());
            let mut gained: Vec<(Bound<'py, PyAny>, Option<Value>)> = Vec::new();
            for o in &now {
                // Members are nearly always of the target class itself: its handle is at hand.
                let th = if o.get_type().is(target_cls) { target.bind(py).clone() } else { member_handle(m, r, o)? };
                if th.get().schema.id != r.target.id {
                    return Err(Error::value_type(format!(
                        "{}.{} holds a {}; it takes {} instances",
                        m.schema.name,
                        r.name,
                        th.get().schema.name,
                        r.target.name
                    ))
                    .into());
                }
                let pk = th.get().column_value(o, th.get().schema.pk)?;
                // A child is known by its key (one-to-many), a many-to-many target by the
                // column the association references.
                let v = if r.kind == RelKind::OneToMany { pk.clone() } else { related_key_in(th.get(), r, o)? };
                if !self.tracked.contains(&ptr(o)) && super::write::is_removed(o) {
                    // Left over in a collection loaded before the delete: nothing to write.
                    // Put there since, it names a row that is gone.
                    match Key::of(&v) {
                        Some(k) if before_keys.contains(&k) => {
                            now_keys.insert(k);
                            continue;
                        }
                        _ => return Err(super::write::removed_member(m, r, th.get())),
                    }
                }
                if self.is_new_keyed(th.get(), o, &pk) {
                    // Keyed already (e.g. by an insert since rolled back): still here, not lost.
                    if let Some(k) = Key::of(&v) {
                        now_keys.insert(k);
                    }
                    gained.push((o.clone(), None));
                    continue;
                }
                match Key::of(&v) {
                    Some(k) if before_keys.contains(&k) => {
                        now_keys.insert(k);
                    }
                    Some(k) => {
                        now_keys.insert(k);
                        gained.push((o.clone(), Some(v)));
                    }
                    None => gained.push((o.clone(), None)),
                }
            }
            let lost: Vec<Value> =
                before.iter().filter(|v| Key::of(v).is_some_and(|k| !now_keys.contains(&k))).cloned().collect();
            if gained.is_empty() && lost.is_empty() {
                continue;
            }
            changed = true;
            let back = back_of(r);
            match r.kind {
                RelKind::ManyToMany => {
                    for v in lost {
                        if let Some(o) = self.object_for(r, &v) {
                            self.mirror(&o, &back, &t.obj, false);
                        }
                        self.link(m, r, &t.obj, Linked::Row(v), false)?;
                    }
                    for (o, v) in gained {
                        self.mirror(&o, &back, &t.obj, true);
                        let target = match v {
                            Some(v) => Linked::Row(v),
                            None => Linked::New(o),
                        };
                        self.link(m, r, &t.obj, target, true)?;
                    }
                }
                RelKind::OneToMany => {
                    let owner_value = m.column_value(&t.obj, r.local_col)?;
                    let owner_py =
                        d.get_item(m.keys[r.local_col].bind(py))?.unwrap_or_else(|| py.None().into_bound(py));
                    for (o, v) in gained {
                        self.adopted.insert((ptr(&o), r.remote_col));
                        let ch = handle_of(&o)?;
                        let c = ch.get();
                        if v.is_none() {
                            dict_of(&o)?.set_item(c.keys[r.remote_col].bind(py), &owner_py)?;
                            self.plan.insert(&o, &[])?;
                        } else {
                            let was = c.column_value(&o, r.remote_col)?;
                            if was != owner_value {
                                // Moved here from another parent: it leaves that one's
                                // collection (or one-to-one) too, once written.
                                let prev = match r.local_col == m.schema.pk {
                                    true => Key::of(&was).and_then(|k| self.map.lookup(py, m.schema.id, &k)),
                                    false => None,
                                };
                                if let Some(prev) = prev.filter(|p| !p.is(&t.obj)) {
                                    self.mirror(&prev, &Some((r.name.clone(), r.uselist)), &o, false);
                                }
                                self.set_column(&o, c, r.remote_col, &owner_py)?;
                            }
                        }
                        self.mirror(&o, &back, &t.obj, true);
                    }
                    for key in lost {
                        removals.push(Removal {
                            owner: t.obj.clone(),
                            owner_model: m.schema.name.clone(),
                            rel: r.clone(),
                            child: self.object_for(r, &key),
                            key,
                            owner_value: owner_value.clone(),
                        });
                    }
                }
                RelKind::ManyToOne => unreachable!("filtered above"),
            }
        }
        Ok(changed)
    }

    /// A child taken out of a one-to-many collection and given no other parent: its
    /// foreign key becomes NULL, unless the column cannot hold NULL.
    fn settle_removal(&mut self, r: Removal<'py>) -> PyResult<()> {
        let fk = r.rel.remote_col;
        let Some(k) = Key::of(&r.key) else { return Ok(()) };
        if self.map.is_deleted(r.rel.target.id, &k) {
            return Ok(()); // the session deleted that row itself
        }
        if let Some(child) = &r.child {
            if self.adopted.contains(&(ptr(child), fk)) {
                return Ok(());
            }
            let ch = handle_of(child)?;
            if ch.get().column_value(child, fk)? != r.owner_value {
                return Ok(()); // the user gave it another parent already
            }
        }
        let col = &r.rel.target.columns[fk];
        if !col.nullable {
            let child = &r.rel.target.name;
            return Err(Error::new(
                Kind::Interface,
                format!(
                    "{}.{}: a {child} was taken out of it, but {child}.{} is NOT NULL so it cannot be unlinked; delete \
                     it with await session.remove(obj), or give it another {}",
                    r.owner_model, r.rel.name, col.name, r.owner_model
                ),
            )
            .into());
        }
        let back = back_of(&r.rel);
        match &r.child {
            Some(child) => {
                let ch = handle_of(child)?;
                let none = self.py.None().into_bound(self.py);
                self.set_column(child, ch.get(), fk, &none)?;
                self.mirror(child, &back, &r.owner, false);
            }
            None => {
                // Not in memory: unlink it by key, and only if it still points at the owner.
                let mut params = Params::default();
                let set = params.push(Value::Null);
                let a = params.push(r.key.clone());
                let b = params.push(r.owner_value.clone());
                let filter = Cond::And(vec![eq(r.rel.target.pk, a), eq(fk, b)]);
                let stmt = Statement::Update(UpdateShape {
                    model: r.rel.target.id,
                    sets: vec![(fk, set)],
                    filter: Some(filter),
                });
                self.by_key.push(plain_op(self.dialect, &stmt, &params)?);
            }
        }
        Ok(())
    }
}

/// The other end of a many-to-many link: a row by its referenced value, or a new object.
enum Linked<'py> {
    Row(Value),
    New(Bound<'py, PyAny>),
}

/// Plans a flush of everything the session's map tracks; None when nothing changed.
pub fn plan(py: Python<'_>, dialect: Dialect, map: &IdentityMap) -> PyResult<Option<FlushPlan>> {
    let live = map.live(py)?;
    let mut p = Planner {
        py,
        dialect,
        map,
        plan: WritePlan::new(dialect),
        updates: vec![],
        by_key: vec![],
        link_deletes: vec![],
        link_inserts: vec![],
        links_seen: FastSet::default(),
        new_links: FastSet::default(),
        mirrors: vec![],
        touched: vec![],
        tracked: live.iter().map(|t| ptr(&t.obj)).collect(),
        adopted: FastSet::default(),
        live: live.iter().map(|t| (t.model, t.obj.clone())).collect(),
        strangers: vec![],
    };
    // One handle per tracked object, looked up once for the three passes below.
    let handles: Vec<Py<ModelHandle>> = live.iter().map(|t| handle_for(py, t.model)).collect::<PyResult<_>>()?;
    for (t, h) in live.iter().zip(&handles) {
        if p.parents(t, h.get())? {
            p.touched.push(t.obj.clone().unbind());
        }
    }
    let mut removals = Vec::new();
    for (t, h) in live.iter().zip(&handles) {
        if p.collections(t, h.get(), &mut removals)? {
            p.touched.push(t.obj.clone().unbind());
        }
    }
    for r in removals {
        p.settle_removal(r)?;
    }
    let mut ops = Vec::new();
    // Updates that only clear columns go before everything else, so that a unique foreign
    // key (one-to-one) is free before another row takes it.
    let mut clears = Vec::new();
    let mut update = |m: &ModelHandle, obj: &Bound<'_, PyAny>, cols: &[usize], key: Value| -> PyResult<()> {
        let d = dict_of(obj)?;
        let mut params = Params::default();
        let mut sets = Vec::new();
        let mut all_null = true;
        for c in cols {
            let v = d.get_item(m.keys[*c].bind(py))?.unwrap_or_else(|| py.None().into_bound(py));
            let value = m.value_for(*c, &v)?;
            all_null &= value.is_null();
            sets.push((*c, params.push(value)));
        }
        let filter = Some(eq(m.schema.pk, params.push(key)));
        let stmt = Statement::Update(UpdateShape { model: m.schema.id, sets, filter });
        let op = plain_op(dialect, &stmt, &params)?;
        if all_null {
            clears.push(op)
        } else {
            ops.push(op)
        }
        Ok(())
    };
    for (t, h) in live.iter().zip(&handles) {
        let m = h.get();
        let changed = m.changed_columns(&t.obj, &t.snapshot)?;
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
    clears.append(&mut p.by_key);
    if ops.is_empty() && clears.is_empty() && p.plan.ops.is_empty() && p.mirrors.is_empty() {
        map.clear_deleted();
        return Ok(None);
    }
    Ok(Some(FlushPlan {
        plan: p.plan,
        clears,
        ops,
        mirrors: p.mirrors,
        touched: p.touched,
        shift: 0,
        strangers: p.strangers,
    }))
}
