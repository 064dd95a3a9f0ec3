//! Model registration from Python, and model instances built from rows in one pass.

use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyType};

use super::convert;
use super::identity::{IdentityMap, RelSnap, RelSnapshots};
use crate::errors::{Error, Result as OResult};
use crate::rows::{Key, RowSet};
use crate::schema::{
    self, ColumnSchema, FkAction, ForeignKeySchema, ModelSchema, RelKind, RelationSchema, ResolvedRel,
};
use crate::value::{ColType, Value};

/// A registered model: its schema in Rust and its Python class.
#[pyclass(frozen, module = "ormkit._ormkit")]
pub struct ModelHandle {
    pub schema: Arc<ModelSchema>,
    pub cls: Py<PyType>,
    /// Interned attribute names, one per column, in schema order.
    pub keys: Vec<Py<PyString>>,
    /// `get` by primary key, compiled once per dialect (the key is a parameter).
    pub get_sql: [std::sync::OnceLock<Arc<crate::compile::Compiled>>; 2],
}

fn get_opt<'py, T: for<'a> FromPyObject<'a, 'py>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<Option<T>> {
    match d.get_item(key)? {
        Some(v) if !v.is_none() => Ok(Some(v.extract().map_err(Into::into)?)),
        _ => Ok(None),
    }
}

fn fk_action(model: &str, col: &str, what: &str, v: Option<String>) -> OResult<Option<FkAction>> {
    match v {
        None => Ok(None),
        Some(s) => FkAction::parse(&s).map(Some).ok_or_else(|| {
            Error::field(format!(
                "{model}.{col}: ForeignKey {what}={s:?} is not one of CASCADE, SET NULL, SET DEFAULT, RESTRICT, NO ACTION"
            ))
        }),
    }
}

fn column_from_spec(model: &str, d: &Bound<'_, PyDict>) -> PyResult<ColumnSchema> {
    let name: String = get_opt(d, "name")?.unwrap_or_default();
    let ty_name: String = get_opt(d, "type")?.unwrap_or_default();
    let ty = ColType::from_name(&ty_name)
        .ok_or_else(|| Error::field(format!("{model}.{name}: unsupported column type {ty_name:?}")))?;
    let foreign_key = match d.get_item("foreign_key")? {
        Some(fk) if !fk.is_none() => {
            let fk = fk.cast_into::<PyDict>()?;
            let target: String = get_opt(&fk, "target")?.unwrap_or_default();
            let (table, column) = match target.split_once('.') {
                Some((t, c)) if schema::is_identifier(t) && schema::is_identifier(c) => (t.to_string(), c.to_string()),
                _ => {
                    return Err(Error::field(format!(
                    "{model}.{name}: ForeignKey({target:?}) must name \"table.column\", e.g. ForeignKey(\"users.id\")"
                ))
                    .into())
                }
            };
            Some(ForeignKeySchema {
                table,
                column,
                on_delete: fk_action(model, &name, "ondelete", get_opt(&fk, "ondelete")?)?,
                on_update: fk_action(model, &name, "onupdate", get_opt(&fk, "onupdate")?)?,
            })
        }
        _ => None,
    };
    let primary_key = get_opt(d, "primary_key")?.unwrap_or(false);
    Ok(ColumnSchema {
        name,
        ty,
        nullable: get_opt(d, "nullable")?.unwrap_or(false),
        primary_key,
        autoincrement: get_opt(d, "autoincrement")?
            .unwrap_or(primary_key && matches!(ty, ColType::Integer | ColType::BigInteger)),
        unique: get_opt(d, "unique")?.unwrap_or(false),
        index: get_opt(d, "index")?.unwrap_or(false),
        max_length: get_opt(d, "max_length")?,
        foreign_key,
    })
}

/// Every registered model's handle, by schema id, for building related instances.
static HANDLES: std::sync::Mutex<Vec<Option<Py<ModelHandle>>>> = std::sync::Mutex::new(Vec::new());

pub fn handle_for(py: Python<'_>, id: u32) -> PyResult<Py<ModelHandle>> {
    HANDLES
        .lock()
        .unwrap()
        .get(id as usize)
        .and_then(|h| h.as_ref().map(|h| h.clone_ref(py)))
        .ok_or_else(|| Error::internal(format!("model {id} has no Python class")).into())
}

/// Registers a model class. `spec` holds `name`, `table`, `columns` and `relations`.
#[pyfunction]
pub fn register_model(py: Python<'_>, cls: Bound<'_, PyType>, spec: Bound<'_, PyDict>) -> PyResult<Py<ModelHandle>> {
    let name: String = get_opt(&spec, "name")?.unwrap_or_default();
    let table: String = get_opt(&spec, "table")?.unwrap_or_default();
    let mut columns = Vec::new();
    if let Some(cols) = spec.get_item("columns")? {
        for c in cols.try_iter()? {
            columns.push(column_from_spec(&name, &c?.cast_into::<PyDict>()?)?);
        }
    }
    let mut relations = Vec::new();
    if let Some(rels) = spec.get_item("relations")? {
        for r in rels.try_iter()? {
            let r = r?.cast_into::<PyDict>()?;
            relations.push(RelationSchema {
                name: get_opt(&r, "name")?.unwrap_or_default(),
                target: get_opt(&r, "target")?.unwrap_or_default(),
                back_populates: get_opt(&r, "back_populates")?,
                lazy: get_opt(&r, "lazy")?.unwrap_or_else(|| "select".to_string()),
                uselist: get_opt(&r, "uselist")?,
                secondary: get_opt(&r, "secondary")?,
                foreign_key: get_opt(&r, "foreign_keys")?,
            });
        }
    }
    let mut model = ModelSchema::new(name, table, columns, relations)?;
    if let Some(col) = get_opt::<String>(&spec, "soft_delete")? {
        let i = model.require_column(&col)?;
        if !matches!(model.columns[i].ty, ColType::DateTime | ColType::DateTimeTz) || !model.columns[i].nullable {
            return Err(Error::field(format!(
                "{}.{col}: a soft-delete column must be a nullable datetime",
                model.name
            ))
            .into());
        }
        model.soft_delete = Some(i);
    }
    let schema = schema::register(model)?;
    let keys = schema.columns.iter().map(|c| PyString::intern(py, &c.name).unbind()).collect();
    let id = schema.id as usize;
    let handle = Py::new(py, ModelHandle { schema, cls: cls.unbind(), keys, get_sql: Default::default() })?;
    let mut handles = HANDLES.lock().unwrap();
    if handles.len() <= id {
        handles.resize_with(id + 1, || None);
    }
    handles[id] = Some(handle.clone_ref(py));
    Ok(handle)
}

impl ModelHandle {
    pub fn name(&self) -> &str {
        &self.schema.name
    }

    /// Converts `obj` for column `col`, with an error naming the model and field.
    pub fn value_for(&self, col: usize, obj: &Bound<'_, PyAny>) -> PyResult<Value> {
        let c = &self.schema.columns[col];
        let v = convert::to_value(obj, c.ty)
            .map_err(|m| Error::value_type(format!("{}.{}: {m}", self.schema.name, c.name)))?;
        if v.is_null() && !c.nullable && !(c.primary_key && c.autoincrement) {
            return Err(Error::value_type(format!(
                "{}.{} is not nullable but got None; give it a value or declare it Optional / nullable=True",
                self.schema.name, c.name
            ))
            .into());
        }
        Ok(v)
    }

    /// The instance's value for every column, from its `__dict__`.
    pub fn instance_values<'py>(&self, obj: &Bound<'py, PyAny>) -> PyResult<Vec<Option<Bound<'py, PyAny>>>> {
        self.check_instance(obj)?;
        let dict = obj.getattr(pyo3::intern!(obj.py(), "__dict__"))?.cast_into::<PyDict>()?;
        self.keys.iter().map(|k| dict.get_item(k.bind(obj.py()))).collect()
    }

    pub fn check_instance(&self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        if !obj.is_instance(self.cls.bind(obj.py()))? {
            return Err(PyTypeError::new_err(format!(
                "expected a {} instance, got {}",
                self.schema.name,
                convert::describe(obj)
            )));
        }
        Ok(())
    }

    pub fn pk_value(&self, obj: &Bound<'_, PyAny>) -> PyResult<Value> {
        let vals = self.instance_values(obj)?;
        let pk = self.schema.pk;
        match &vals[pk] {
            Some(v) if !v.is_none() => self.value_for(pk, v),
            _ => Err(Error::new(
                crate::errors::Kind::Interface,
                format!("{} instance has no {} yet; insert it first", self.schema.name, self.schema.pk_column().name),
            )
            .into()),
        }
    }

    /// Allocates an instance without calling `__init__` and sets its column attributes.
    pub fn new_instance<'py>(&self, py: Python<'py>, values: &[Value]) -> PyResult<Bound<'py, PyAny>> {
        let cls = self.cls.bind(py);
        // `object.__new__` rather than the bare allocator: it also readies the instance's
        // inline attribute values (CPython 3.11+), so that no `__dict__` is built unless
        // somebody asks for one.
        // SAFETY: `cls` is a heap type deriving from `object` (all models derive from Base);
        // object.__new__ with no arguments returns a new reference or NULL with an exception set.
        let obj = unsafe {
            let tp = cls.as_ptr() as *mut ffi::PyTypeObject;
            let new = (*std::ptr::addr_of!(ffi::PyBaseObject_Type)).tp_new.expect("object has tp_new");
            let args = empty_tuple(py);
            Bound::from_owned_ptr_or_err(py, new(tp, args.as_ptr(), std::ptr::null_mut()))?
        };
        for (k, v) in self.keys.iter().zip(values) {
            let v = convert::to_py(py, v)?;
            // SAFETY: all three are live objects; the name is an exact str. Columns are
            // non-data descriptors on the class, so the value lands on the instance.
            if unsafe { ffi::PyObject_GenericSetAttr(obj.as_ptr(), k.as_ptr(), v.as_ptr()) } < 0 {
                return Err(PyErr::fetch(py));
            }
        }
        Ok(obj)
    }

    /// Drops the loaded many-to-one relations whose foreign key is among `cols` and no
    /// longer matches the object there: a parent left from before would be a stale value
    /// that the next flush takes for an assignment.
    pub fn expire_parents(&self, obj: &Bound<'_, PyAny>, cols: &[usize]) -> PyResult<()> {
        if self.schema.relations.is_empty() || cols.is_empty() {
            return Ok(());
        }
        let Ok(rels) = self.schema.resolved_relations() else { return Ok(()) };
        let py = obj.py();
        let d = obj.getattr(pyo3::intern!(py, "__dict__"))?.cast_into::<PyDict>()?;
        for r in rels.iter().filter(|r| r.kind == RelKind::ManyToOne && cols.contains(&r.local_col)) {
            let Some(parent) = d.get_item(r.name.as_str())? else {
                // Read as None because no row had the key it held: with another key, not known.
                if let Some(was) = hidden_for(&d, &r.name)? {
                    let now = d.get_item(self.keys[r.local_col].bind(py))?;
                    if now.is_none_or(|n| !n.eq(&was).unwrap_or(false)) {
                        forget_hidden(&d, &r.name)?;
                    }
                }
                continue;
            };
            if self.names_parent(obj, r, &parent)? {
                continue;
            }
            d.del_item(r.name.as_str())?;
            // Unset now means not loaded: it must raise when read, not pass for noload's None.
            unmark_noload(&d, &r.name)?;
        }
        Ok(())
    }

    /// After a rollback, with the columns reverted: each relationship of `obj` that no longer
    /// matches what the session recorded of the database is dropped (reading it raises until
    /// it is loaded again). A many-to-one must name the row its key does; a collection or
    /// one-to-one must match its record, which the rolled-back transaction must not have
    /// made (`touched(relation)`). One `noload()` left unknown goes back to that: None, or
    /// an empty list.
    pub fn forget_changed_relations(
        &self,
        obj: &Bound<'_, PyAny>,
        map: &IdentityMap,
        key: &Key,
        touched: impl Fn(usize) -> bool,
    ) -> PyResult<()> {
        if self.schema.relations.is_empty() {
            return Ok(());
        }
        let Ok(rels) = self.schema.resolved_relations() else { return Ok(()) };
        let py = obj.py();
        let d = super::write::dict_of(obj)?;
        let id = self.schema.id;
        for (i, r) in rels.iter().enumerate() {
            if r.kind == RelKind::ManyToOne {
                match d.get_item(r.name.as_str())? {
                    // Loaded (or assigned and written) in the transaction: it says nothing of
                    // the database now, and must be loaded again.
                    Some(_) if touched(i) => {
                        d.del_item(r.name.as_str())?;
                        unmark_noload(&d, &r.name)?;
                    }
                    // A noload() mark stays: unset, it reads as None again.
                    Some(now) if !self.names_parent(obj, r, &now)? => d.del_item(r.name.as_str())?,
                    Some(_) => {}
                    // Read as None because no row had its key, in the transaction: that row
                    // may be back.
                    None if touched(i) && hidden_for(&d, &r.name)?.is_some() => forget_hidden(&d, &r.name)?,
                    None => {}
                }
                continue;
            }
            let Some(now) = d.get_item(r.name.as_str())? else { continue };
            let before = map.relation(id, key, i);
            let same = match &before {
                Some(RelSnap::Unknown(at)) => {
                    r.uselist && now.as_ptr() as usize == *at && now.len().is_ok_and(|n| n == 0)
                }
                Some(b) => relation_snap(r, &now).is_ok_and(|s| &s == b),
                None => false,
            };
            if same && !touched(i) {
                continue;
            }
            match before {
                // Marked as left out by noload(): unset, it reads as None again.
                Some(RelSnap::Unknown(_)) if !r.uselist => d.del_item(r.name.as_str())?,
                Some(RelSnap::Unknown(_)) => {
                    let empty = PyList::empty(py);
                    d.set_item(r.name.as_str(), &empty)?;
                    map.note_relation(id, key.clone(), i, RelSnap::Unknown(empty.as_ptr() as usize));
                }
                _ => {
                    d.del_item(r.name.as_str())?;
                    unmark_noload(&d, &r.name)?;
                    map.forget_relation(id, key, i);
                }
            }
        }
        Ok(())
    }

    /// Whether `parent` (many-to-one `r` of `obj`, or None) is the row `obj`'s key names.
    /// Something other than a model instance (a wrong assignment) names no row.
    pub fn names_parent(&self, obj: &Bound<'_, PyAny>, r: &ResolvedRel, parent: &Bound<'_, PyAny>) -> PyResult<bool> {
        let fk = self.column_value(obj, r.local_col)?;
        let named = if parent.is_none() { Ok(Value::Null) } else { related_key(r, parent) };
        Ok(named.is_ok_and(|k| k == fk))
    }

    /// `expire_parents` over every column: after a write that may have changed any key.
    pub fn expire_all_parents(&self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let all: Vec<usize> = (0..self.keys.len()).collect();
        self.expire_parents(obj, &all)
    }

    /// Sets every column of `obj` that differs from `values` back to it.
    pub fn revert_to(&self, obj: &Bound<'_, PyAny>, values: &[Value]) -> PyResult<()> {
        let py = obj.py();
        let now = self.snapshot(obj)?;
        let d = obj.getattr(pyo3::intern!(py, "__dict__"))?.cast_into::<PyDict>()?;
        let mut cols = Vec::new();
        for (i, (n, v)) in now.iter().zip(values).enumerate() {
            if n != v {
                d.set_item(self.keys[i].bind(py), convert::to_py(py, v)?)?;
                cols.push(i);
            }
        }
        self.expire_parents(obj, &cols)
    }

    /// After a rollback: objects without a key (never saved, or whose insert was rolled
    /// back) leave the loaded collections, which then hold what the database holds.
    pub fn drop_unsaved_related(&self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.schema.relations.is_empty() {
            return Ok(());
        }
        let Ok(rels) = self.schema.resolved_relations() else { return Ok(()) };
        let py = obj.py();
        let d = obj.getattr(pyo3::intern!(py, "__dict__"))?.cast_into::<PyDict>()?;
        for r in rels.iter().filter(|r| r.kind != RelKind::ManyToOne) {
            let Some(v) = d.get_item(r.name.as_str())? else { continue };
            if r.uselist {
                let all = super::write::items(&v)?;
                let mut kept = Vec::with_capacity(all.len());
                for o in &all {
                    if !related_key(r, o)?.is_null() {
                        kept.push(o.clone());
                    }
                }
                if kept.len() != all.len() {
                    d.set_item(r.name.as_str(), PyList::new(py, kept)?)?;
                }
            } else if !v.is_none() && related_key(r, &v)?.is_null() {
                d.set_item(r.name.as_str(), py.None())?;
            }
        }
        Ok(())
    }

    /// Brings an object up to date with a row read again: a column the database changed
    /// takes the new value unless the object holds an unflushed change of its own there,
    /// which wins (and is still written at the next flush).
    pub fn refresh_unchanged(&self, obj: &Bound<'_, PyAny>, old: &[Value], row: &[Value]) -> PyResult<()> {
        let py = obj.py();
        let dict = obj.getattr(pyo3::intern!(py, "__dict__"))?.cast_into::<PyDict>()?;
        let mut refreshed = Vec::new();
        for (i, (was, now)) in old.iter().zip(row).enumerate() {
            if was == now {
                continue;
            }
            let key = self.keys[i].bind(py);
            let untouched = match dict.get_item(key)? {
                Some(v) => convert::to_value(&v, self.schema.columns[i].ty).is_ok_and(|v| &v == was),
                None => true,
            };
            if untouched {
                dict.set_item(key, convert::to_py(py, now)?)?;
                refreshed.push(i);
            }
        }
        self.expire_parents(obj, &refreshed)
    }

    /// The value of column `col` of `obj` as it would be written (NULL if unset or not
    /// convertible).
    pub fn column_value(&self, obj: &Bound<'_, PyAny>, col: usize) -> PyResult<Value> {
        let v = super::write::dict_of(obj)?.get_item(self.keys[col].bind(obj.py()))?;
        Ok(convert::written_value(v.as_ref(), self.schema.columns[col].ty))
    }

    /// The columns other than the key whose value now differs from `snapshot` (compared as
    /// `snapshot()` would convert them, without converting the ones that are plainly equal).
    pub fn changed_columns(&self, obj: &Bound<'_, PyAny>, snapshot: &[Value]) -> PyResult<Vec<usize>> {
        self.check_instance(obj)?;
        let d = super::write::dict_of(obj)?;
        let mut changed = Vec::new();
        for (i, (k, was)) in self.keys.iter().zip(snapshot).enumerate() {
            if i == self.schema.pk {
                continue;
            }
            let ty = self.schema.columns[i].ty;
            let v = d.get_item(k.bind(obj.py()))?;
            let same = match v.as_ref().and_then(|v| convert::same_value(v, ty, was)) {
                Some(same) => same,
                None => convert::written_value(v.as_ref(), ty) == *was,
            };
            if !same {
                changed.push(i);
            }
        }
        Ok(changed)
    }

    /// The column values of an instance as they would be written (unconvertible ones as NULL).
    pub fn snapshot(&self, obj: &Bound<'_, PyAny>) -> PyResult<Vec<Value>> {
        Ok(self
            .instance_values(obj)?
            .into_iter()
            .enumerate()
            .map(|(i, v)| convert::written_value(v.as_ref(), self.schema.columns[i].ty))
            .collect())
    }

    /// Records `obj` in the session's map with its current values; `rels` says what to take
    /// as its relationships' state in the database.
    pub fn remember(&self, obj: &Bound<'_, PyAny>, identity: Option<&IdentityMap>, rels: Rels) -> PyResult<()> {
        let Some(map) = identity else { return Ok(()) };
        let snapshot = self.snapshot(obj)?;
        let Some(key) = Key::of(&snapshot[self.schema.pk]) else { return Ok(()) };
        let rel_snaps = match rels {
            Rels::Keep => None,
            Rels::Current => self.relation_snapshots_after(obj, Some((map, &key)), false)?,
            Rels::Inserted { .. } => self.relation_snapshots(obj)?,
        };
        map.remember(obj, self.schema.id, key.clone(), snapshot, rel_snaps)?;
        // Logged after an object it displaced was: a rollback replays the log backwards,
        // taking this row's object out before the displaced one is put back.
        if let Rels::Inserted { generated } = rels {
            map.log_insert(self.schema.id, key, generated);
        }
        Ok(())
    }

    /// Full-width column values of rows about to be inserted (`insert_values` output), to
    /// become their snapshots once the generated keys are known.
    pub fn insert_snapshots(&self, rows: &[(Vec<usize>, Vec<Value>)]) -> Vec<Vec<Value>> {
        rows.iter()
            .map(|(cols, values)| {
                let mut full = vec![Value::Null; self.keys.len()];
                for (c, v) in cols.iter().zip(values) {
                    full[*c] = v.clone();
                }
                full
            })
            .collect()
    }

    /// Tracks objects just inserted by `insert_all` with the values they were written with
    /// and the keys the database returned, in one pass over the map.
    pub fn remember_inserted(
        &self,
        py: Python<'_>,
        map: &IdentityMap,
        objs: &Bound<'_, PyList>,
        mut snapshots: Vec<Vec<Value>>,
        keys: &[Value],
    ) -> PyResult<()> {
        let pk = self.schema.pk;
        let generated: Vec<bool> = snapshots.iter().map(|s| s[pk].is_null()).collect();
        for (snap, key) in snapshots.iter_mut().zip(keys) {
            snap[pk] = key.clone();
        }
        // Nothing was set on these objects' relations (else the insert took another path).
        let rels: RelSnapshots = vec![];
        let items: Vec<(Bound<'_, PyAny>, Vec<Value>)> = objs.iter().zip(snapshots).collect();
        map.remember_batch(py, self.schema.id, pk, items, rels, &generated)
    }

    /// The relationships `obj` holds, as a flush will compare them later. One it does not
    /// hold gets no snapshot, even on a row just inserted: rows inserted later with its key
    /// would not be in it, so assigning such a collection must be refused, not diffed.
    pub fn relation_snapshots(&self, obj: &Bound<'_, PyAny>) -> PyResult<Option<RelSnapshots>> {
        self.relation_snapshots_after(obj, None, false)
    }

    /// `relation_snapshots`, keeping what `prior` (the session's map) knows is unknown: a
    /// collection still holding the empty list `noload()` gave it says nothing of the database.
    /// After a rollback (`rolled_back`) neither does a single object set since noload(); after
    /// a flush it was written (or put there by the flush), so it is what the database holds.
    pub fn relation_snapshots_after(
        &self,
        obj: &Bound<'_, PyAny>,
        prior: Option<(&IdentityMap, &Key)>,
        rolled_back: bool,
    ) -> PyResult<Option<RelSnapshots>> {
        if self.schema.relations.is_empty() {
            return Ok(Some(vec![]));
        }
        // A model whose relations cannot be resolved yet is not tracked by relation.
        let Ok(rels) = self.schema.resolved_relations() else { return Ok(None) };
        let py = obj.py();
        let d = obj.getattr(pyo3::intern!(py, "__dict__"))?.cast_into::<PyDict>()?;
        let mut out = Vec::new();
        for (i, r) in rels.iter().enumerate() {
            match d.get_item(r.name.as_str())? {
                Some(v) if r.uselist => {
                    if let Some((map, key)) = prior {
                        if let Some(RelSnap::Unknown(at)) = map.relation(self.schema.id, key, i) {
                            if at == v.as_ptr() as usize && v.len()? == 0 {
                                out.push((i, RelSnap::Unknown(at)));
                                continue;
                            }
                        }
                    }
                    out.push((i, relation_snap(r, &v)?));
                }
                Some(v) => {
                    // Set after noload() and not loaded since: what the database holds is
                    // still unknown (a rollback must not make the value set look stored).
                    if let (true, Some((map, key))) = (rolled_back, prior) {
                        if let Some(RelSnap::Unknown(_)) = map.relation(self.schema.id, key, i) {
                            out.push((i, RelSnap::Unknown(0)));
                            continue;
                        }
                    }
                    out.push((i, relation_snap(r, &v)?))
                }
                // Left out by noload(): still unknown, so that a value set later is not taken
                // for what the database holds.
                None if !r.uselist && noloaded(&d, &r.name)? => out.push((i, RelSnap::Unknown(0))),
                None => {}
            }
        }
        Ok(Some(out))
    }

    /// The session's objects for this model's rows starting at `starts` in `values` (built
    /// for rows it holds no live object for, brought up to date for rows that changed).
    pub fn session_objects<'py>(
        &self,
        py: Python<'py>,
        map: &IdentityMap,
        values: &std::sync::Arc<Vec<Value>>,
        starts: &[usize],
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        map.objects_for(
            py,
            self.schema.id,
            self.schema.pk,
            self.keys.len(),
            values,
            starts,
            |row| self.new_instance(py, row),
            |obj, old, new| self.refresh_unchanged(obj, old, new),
        )
    }

    /// Instances for `rows`, through the session's identity map when there is one.
    pub fn instances_in<'py>(
        &self,
        py: Python<'py>,
        rows: RowSet,
        identity: Option<&IdentityMap>,
    ) -> PyResult<Bound<'py, PyList>> {
        match identity {
            Some(map) => PyList::new(py, self.instances_for(py, rows, map)?),
            None => self.instances(py, &rows),
        }
    }

    /// The session's objects for `rows` (built where it has none).
    pub fn instances_for<'py>(
        &self,
        py: Python<'py>,
        rows: RowSet,
        map: &IdentityMap,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let w = rows.width();
        if w != self.keys.len() {
            return Err(Error::internal("row width does not match the model").into());
        }
        let _gc = super::GcPause::new(py, rows.len());
        let starts: Vec<usize> = (0..rows.len()).map(|r| r * w).collect();
        let values = std::sync::Arc::new(rows.values);
        self.session_objects(py, map, &values, &starts)
    }

    pub fn instances<'py>(&self, py: Python<'py>, rows: &RowSet) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        let w = rows.width();
        if w != self.keys.len() {
            return Err(Error::internal("row width does not match the model").into());
        }
        let _gc = super::GcPause::new(py, rows.len());
        for chunk in rows.values.chunks(w) {
            list.append(self.new_instance(py, chunk)?)?;
        }
        Ok(list)
    }
}

/// Where an instance lists its single relations left out by noload(): they are unset, and
/// the relationship descriptor reads them as None (the class holds the empty set).
fn noload_key(py: Python<'_>) -> &Bound<'_, pyo3::types::PyString> {
    pyo3::intern!(py, "_ormkit_noload")
}

/// Adds `name` to the instance's noload() list; `only`, the set of just `name`, is shared
/// by every instance a load marks.
pub fn mark_noload(
    d: &Bound<'_, PyDict>,
    name: &Bound<'_, pyo3::types::PyString>,
    only: &Bound<'_, pyo3::types::PyFrozenSet>,
) -> PyResult<()> {
    let key = noload_key(d.py());
    let marked = match d.get_item(key)? {
        Some(m) => m.cast_into::<pyo3::types::PyFrozenSet>()?,
        None => return d.set_item(key, only),
    };
    if marked.contains(name)? {
        return Ok(());
    }
    let both = pyo3::types::PyFrozenSet::new(d.py(), marked.iter().chain(std::iter::once(name.clone().into_any())))?;
    d.set_item(key, both)
}

/// Whether `name` is on the instance's noload() list.
fn noloaded(d: &Bound<'_, PyDict>, name: &str) -> PyResult<bool> {
    match d.get_item(noload_key(d.py()))? {
        Some(marked) => marked.contains(name),
        None => Ok(false),
    }
}

/// Where an instance keeps, for each many-to-one read as None because no row had its key
/// (a soft-deleted parent), the key it held then.
fn hidden_key(py: Python<'_>) -> &Bound<'_, pyo3::types::PyString> {
    pyo3::intern!(py, "_ormkit_hidden")
}

/// Marks relation `name` as read as None because the load found no row for `fk`: unset, it
/// reads as None (as noload() leaves it) until `fk` changes.
pub fn mark_hidden(
    d: &Bound<'_, PyDict>,
    name: &Bound<'_, pyo3::types::PyString>,
    only: &Bound<'_, pyo3::types::PyFrozenSet>,
    fk: &Bound<'_, PyAny>,
) -> PyResult<()> {
    mark_noload(d, name, only)?;
    let key = hidden_key(d.py());
    let held = match d.get_item(key)? {
        Some(h) => h.cast_into::<PyDict>()?,
        None => {
            let h = PyDict::new(d.py());
            d.set_item(key, &h)?;
            h
        }
    };
    held.set_item(name, fk)
}

fn hidden_for<'py>(d: &Bound<'py, PyDict>, name: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    match d.get_item(hidden_key(d.py()))? {
        Some(h) => h.cast_into::<PyDict>()?.get_item(name),
        None => Ok(None),
    }
}

/// Unset and no longer read as None: reading raises until it is loaded.
fn forget_hidden(d: &Bound<'_, PyDict>, name: &str) -> PyResult<()> {
    if let Some(h) = d.get_item(hidden_key(d.py()))? {
        h.cast_into::<PyDict>()?.del_item(name)?;
    }
    unmark_noload(d, name)
}

/// Takes `name` off the instance's noload() list, if it is there.
fn unmark_noload(d: &Bound<'_, PyDict>, name: &str) -> PyResult<()> {
    let key = noload_key(d.py());
    let Some(marked) = d.get_item(key)? else { return Ok(()) };
    let marked = marked.cast_into::<pyo3::types::PyFrozenSet>()?;
    if !marked.contains(name)? {
        return Ok(());
    }
    let rest: Vec<Bound<'_, PyAny>> = marked.iter().filter(|n| n.ne(name).unwrap_or(true)).collect();
    d.set_item(key, pyo3::types::PyFrozenSet::new(d.py(), rest)?)
}

fn empty_tuple(py: Python<'_>) -> &Bound<'_, pyo3::types::PyTuple> {
    static EMPTY: pyo3::sync::PyOnceLock<Py<pyo3::types::PyTuple>> = pyo3::sync::PyOnceLock::new();
    EMPTY.get_or_init(py, || pyo3::types::PyTuple::empty(py).unbind()).bind(py)
}

/// The value a relationship snapshot records for a related object: a child's key, or the
/// column a parent or many-to-many target is referenced by. NULL for an object without one.
pub fn related_key(r: &ResolvedRel, obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    let h = handle_for(obj.py(), r.target.id)?;
    related_key_in(h.get(), r, obj)
}

/// `related_key` with the target model's handle at hand (one lookup for a whole collection).
pub fn related_key_in(m: &ModelHandle, r: &ResolvedRel, obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    m.column_value(obj, if r.kind == RelKind::OneToMany { m.schema.pk } else { r.remote_col })
}

/// What relationship `r` holds now (`now`: a collection, an object or None), as a snapshot.
pub fn relation_snap(r: &ResolvedRel, now: &Bound<'_, PyAny>) -> PyResult<RelSnap> {
    Ok(if r.uselist {
        let h = handle_for(now.py(), r.target.id)?;
        let h = h.get();
        RelSnap::Many(super::write::items(now)?.iter().map(|o| related_key_in(h, r, o)).collect::<PyResult<_>>()?)
    } else if now.is_none() {
        RelSnap::One(Value::Null)
    } else {
        RelSnap::One(related_key(r, now)?)
    })
}

/// What `ModelHandle::remember` takes as an object's relationships in the database.
#[derive(Clone, Copy)]
pub enum Rels {
    /// What was recorded before (the write touched columns only).
    Keep,
    /// What the object holds now (everything it holds was just written).
    Current,
    /// What it holds now, and empty collections for those it does not (a new row; whether
    /// the database generated its key).
    Inserted { generated: bool },
}

#[pymethods]
impl ModelHandle {
    #[getter]
    fn table(&self) -> &str {
        &self.schema.table
    }

    #[getter]
    fn pk_name(&self) -> &str {
        &self.schema.pk_column().name
    }

    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.schema.columns.iter().map(|c| c.name.clone()).collect()
    }
}
