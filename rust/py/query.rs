//! The query builder handle behind `ormkit.Query`: each call returns a new immutable plan.

use std::sync::{Arc, OnceLock};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use super::convert;
use super::engine::EngineCore;
use super::load::run_models;
use super::model::ModelHandle;
use super::stream::StreamCore;
use crate::bridge::Pending;
use crate::compile::{self, Compiled};
use crate::errors::{Error, Kind};
use crate::plan::load;
use crate::plan::lookup::{Arity, Expect, Lookup};
use crate::plan::{
    AggFn, Cond, DeleteShape, OrderItem, Params, ProjItem, Projection, SelectShape, Statement, Target, UpdateShape,
    Wrap,
};
use crate::rows::RowSet;
use crate::schema::ModelSchema;
use crate::value::{ColType, Value};

#[pyclass(frozen, module = "ormkit._ormkit")]
pub struct QueryCore {
    pub model: Py<ModelHandle>,
    pub schema: Arc<ModelSchema>,
    pub shape: SelectShape,
    pub params: Params,
    /// The compiled model select, per dialect, once this exact query has run.
    compiled: [OnceLock<Arc<Compiled>>; 2],
    /// `.options(...)` was called with a path (for `stream()`, which cannot honour one, even
    /// one the `lazy=` defaults also give).
    optioned: bool,
}

/// Converts one operand for a lookup.
fn operand(schema: &ModelSchema, lk: &Lookup, expect: Expect, obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    let field = &schema.columns[lk.col].name;
    let fail = |m: String| -> PyErr { Error::value_type(format!("{}.{}: {} {m}", schema.name, field, lk.key)).into() };
    match expect {
        Expect::Column(ty) => convert::to_value(obj, ty).map_err(fail),
        Expect::Text => {
            if obj.is_instance_of::<PyString>() {
                convert::to_value(obj, ColType::Text).map_err(fail)
            } else {
                Err(fail(format!("expects a str, got {}", convert::describe(obj))))
            }
        }
        Expect::Flag => match obj.cast::<pyo3::types::PyBool>() {
            Ok(b) => Ok(Value::Bool(b.is_true())),
            Err(_) => Err(fail(format!("expects True or False, got {}", convert::describe(obj)))),
        },
        Expect::JsonScalar => match convert::to_json(obj, 0).map_err(&fail)? {
            serde_json::Value::Null => Ok(Value::Null),
            serde_json::Value::Bool(b) => Ok(Value::Bool(b)),
            serde_json::Value::String(s) => Ok(Value::Text(s)),
            serde_json::Value::Number(n) => {
                Ok(n.as_i64().map(Value::Int).unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0))))
            }
            _ => Err(fail("compares JSON values with str, int, float, bool or None only".to_string())),
        },
    }
}

/// Builds the condition for one `key=value` pair.
pub fn lookup_cond(schema: &ModelSchema, key: &str, value: &Bound<'_, PyAny>, params: &mut Params) -> PyResult<Cond> {
    let lk = Lookup::parse(schema, key)?;
    let (expect, arity) = lk.expect(schema);
    let operands = match arity {
        Arity::One => vec![operand(schema, &lk, expect, value)?],
        Arity::List | Arity::Pair => {
            if value.is_instance_of::<PyString>() || value.is_instance_of::<pyo3::types::PyBytes>() {
                return Err(Error::value_type(format!(
                    "{}.{}: {} expects a list or tuple of values, got {}",
                    schema.name,
                    schema.columns[lk.col].name,
                    key,
                    convert::describe(value)
                ))
                .into());
            }
            let iter = value.try_iter().map_err(|_| {
                Error::value_type(format!(
                    "{}.{}: {} expects a list or tuple of values, got {}",
                    schema.name,
                    schema.columns[lk.col].name,
                    key,
                    convert::describe(value)
                ))
            })?;
            iter.map(|v| operand(schema, &lk, expect, &v?)).collect::<PyResult<Vec<_>>>()?
        }
    };
    Ok(lk.leaf(schema, operands, params)?)
}

fn kwargs_cond(schema: &ModelSchema, kwargs: Option<&Bound<'_, PyDict>>, params: &mut Params) -> PyResult<Vec<Cond>> {
    let mut out = Vec::new();
    if let Some(kw) = kwargs {
        for (k, v) in kw.iter() {
            let key = k.cast::<PyString>()?.to_str()?.to_owned();
            out.push(lookup_cond(schema, &key, &v, params)?);
        }
    }
    Ok(out)
}

/// The conditions of `filter(*qs, **lookups)`, in order.
fn conditions(
    schema: &ModelSchema,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
    params: &mut Params,
) -> PyResult<Vec<Cond>> {
    let mut conds = args.iter().map(|q| q_cond(schema, &q, params, 0)).collect::<PyResult<Vec<_>>>()?;
    conds.extend(kwargs_cond(schema, kwargs, params)?);
    Ok(conds)
}

/// Converts a `Q` object (children, connector, negated) into a condition tree.
pub fn q_cond(schema: &ModelSchema, q: &Bound<'_, PyAny>, params: &mut Params, depth: usize) -> PyResult<Cond> {
    let py = q.py();
    if depth > 512 {
        return Err(Error::field("Q tree nested too deeply").into());
    }
    let children = q.getattr(pyo3::intern!(py, "children")).map_err(|_| {
        Error::value_type(format!(
            "{}: filter() takes Q objects and keyword lookups, got {}",
            schema.name,
            convert::describe(q)
        ))
    })?;
    let connector: String = q.getattr(pyo3::intern!(py, "connector"))?.extract()?;
    let negated: bool = q.getattr(pyo3::intern!(py, "negated"))?.extract()?;
    let mut items = Vec::new();
    for child in children.try_iter()? {
        let child = child?;
        if let Ok(t) = child.cast::<PyTuple>() {
            let key: String = t.get_item(0)?.extract()?;
            items.push(lookup_cond(schema, &key, &t.get_item(1)?, params)?);
        } else {
            items.push(q_cond(schema, &child, params, depth + 1)?);
        }
    }
    let c = match (connector.as_str(), items.len()) {
        (_, 1) => items.pop().unwrap(),
        ("OR", _) => Cond::Or(items),
        _ => Cond::And(items),
    };
    Ok(if negated { Cond::Not(Box::new(c)) } else { c })
}

fn agg_spec(schema: &ModelSchema, s: &str) -> Option<(AggFn, Option<usize>, String)> {
    let (name, rest) = match s.split_once("__") {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let f = AggFn::parse(name)?;
    let Some(rest) = rest else {
        return (f == AggFn::Count).then(|| (f, None, String::new()));
    };
    let (first, tail) = match rest.split_once("__") {
        Some((a, b)) => (a, b.to_string()),
        None => (rest, String::new()),
    };
    if let Some(c) = schema.column_index(first) {
        return Some((f, Some(c), tail));
    }
    // `count__gt`: COUNT(*) followed directly by a lookup.
    (f == AggFn::Count).then(|| (f, None, rest.to_string()))
}

fn field_list_error(schema: &ModelSchema, name: &str, what: &str) -> PyErr {
    Error::field(format!(
        "{}: {what} got unknown field {:?}; valid fields are: {}",
        schema.name,
        name,
        schema.column_names().join(", ")
    ))
    .into()
}

impl QueryCore {
    pub fn new(model: Py<ModelHandle>, schema: Arc<ModelSchema>) -> PyResult<Self> {
        let mut shape = SelectShape::new(schema.id);
        shape.loads = load::defaults(&schema)?;
        Ok(QueryCore { model, schema, shape, params: Params::default(), compiled: Default::default(), optioned: false })
    }

    fn derive(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut SelectShape, &mut Params) -> PyResult<()>,
    ) -> PyResult<QueryCore> {
        let mut shape = self.shape.clone();
        let mut params = self.params.clone();
        f(&mut shape, &mut params)?;
        Ok(QueryCore {
            model: self.model.clone_ref(py),
            schema: self.schema.clone(),
            shape,
            params,
            compiled: Default::default(),
            optioned: self.optioned,
        })
    }

    fn column(&self, name: &str, what: &str) -> PyResult<usize> {
        self.schema.column_index(name).ok_or_else(|| field_list_error(&self.schema, name, what))
    }

    fn model_compiled(&self, engine: &EngineCore) -> PyResult<Arc<Compiled>> {
        let d = engine.dialect();
        Ok(compile::compile_in(&self.compiled[d as usize], d, || Statement::Select(self.shape.clone()))?)
    }

    /// Runs a derived select and hands its rows to `finish` on the event loop's thread.
    fn run_select<F>(&self, engine: &EngineCore, shape: SelectShape, params: Params, finish: F) -> PyResult<Pending>
    where
        F: FnOnce(Python<'_>, RowSet) -> PyResult<Py<PyAny>> + Send + 'static,
    {
        let compiled = compile::compile(engine.dialect(), &Statement::Select(shape))?;
        engine.run_compiled(&compiled, &params.values, finish)
    }

    /// The filter of the rows this query sees, soft-delete condition included.
    fn visible_filter(&self) -> Option<Cond> {
        match self.shape.deleted.cond(&self.schema) {
            Some(c) => Some(Cond::and_opt(self.shape.filter.clone(), c)),
            None => self.shape.filter.clone(),
        }
    }

    /// The query capped at `n` rows; a smaller limit of the user's own stays.
    fn with_limit(&self, n: i64) -> (SelectShape, Params) {
        let mut shape = self.shape.clone();
        let mut params = self.params.clone();
        match shape.limit {
            Some(slot) => {
                let v = &mut params.values[slot as usize];
                if matches!(v, Value::Int(cur) if *cur > n) {
                    *v = Value::Int(n);
                }
            }
            None => shape.limit = Some(params.push(Value::Int(n))),
        }
        (shape, params)
    }

    fn check_plain(&self, what: &str) -> PyResult<()> {
        if self.shape.limit.is_some()
            || self.shape.offset.is_some()
            || self.shape.distinct
            || !self.shape.group_by.is_empty()
        {
            return Err(Error::new(
                Kind::NotSupported,
                format!("{}: {what}() cannot be combined with limit, offset, distinct or group_by", self.schema.name),
            )
            .into());
        }
        Ok(())
    }
}

#[pymethods]
impl QueryCore {
    #[pyo3(signature = (*args, **kwargs))]
    fn filter(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<QueryCore> {
        self.derive(py, |shape, params| {
            for c in conditions(&self.schema, args, kwargs, params)? {
                shape.filter = Some(Cond::and_opt(shape.filter.take(), c));
            }
            Ok(())
        })
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn exclude(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<QueryCore> {
        self.derive(py, |shape, params| {
            let mut conds = conditions(&self.schema, args, kwargs, params)?;
            if conds.is_empty() {
                return Ok(());
            }
            let c = if conds.len() == 1 { conds.pop().unwrap() } else { Cond::And(conds) };
            shape.filter = Some(Cond::and_opt(shape.filter.take(), Cond::Not(Box::new(c))));
            Ok(())
        })
    }

    #[pyo3(signature = (**kwargs))]
    fn filter_by(&self, py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<QueryCore> {
        self.derive(py, |shape, params| {
            if let Some(kw) = kwargs {
                for (k, v) in kw.iter() {
                    let key = k.cast::<PyString>()?.to_str()?.to_owned();
                    // filter_by takes plain field names, as in SQLAlchemy: no lookups.
                    self.column(&key, "filter_by()")?;
                    let c = lookup_cond(&self.schema, &format!("{key}__exact"), &v, params)?;
                    shape.filter = Some(Cond::and_opt(shape.filter.take(), c));
                }
            }
            Ok(())
        })
    }

    #[pyo3(signature = (*fields))]
    fn order_by(&self, py: Python<'_>, fields: Vec<String>) -> PyResult<QueryCore> {
        self.derive(py, |shape, _| {
            for f in fields {
                let (name, desc) = match f.strip_prefix('-') {
                    Some(n) => (n, true),
                    None => (f.strip_prefix('+').unwrap_or(&f), false),
                };
                let col = self.column(name, "order_by()")?;
                shape.order.push(OrderItem { col, desc });
            }
            Ok(())
        })
    }

    fn limit(&self, py: Python<'_>, n: i64) -> PyResult<QueryCore> {
        if n < 0 {
            return Err(
                Error::value_type(format!("{}: limit() needs a non-negative int, got {n}", self.schema.name)).into()
            );
        }
        self.derive(py, |shape, params| {
            shape.limit = Some(params.push(Value::Int(n)));
            Ok(())
        })
    }

    fn offset(&self, py: Python<'_>, n: i64) -> PyResult<QueryCore> {
        if n < 0 {
            return Err(
                Error::value_type(format!("{}: offset() needs a non-negative int, got {n}", self.schema.name)).into()
            );
        }
        self.derive(py, |shape, params| {
            shape.offset = Some(params.push(Value::Int(n)));
            Ok(())
        })
    }

    /// `"hidden"` (default), `"included"` or `"only"`: which soft-deleted rows the query sees.
    fn deleted(&self, py: Python<'_>, mode: &str) -> PyResult<QueryCore> {
        let mode = match mode {
            "hidden" => crate::plan::Deleted::Hidden,
            "included" => crate::plan::Deleted::Included,
            "only" => crate::plan::Deleted::Only,
            _ => return Err(Error::interface(format!("unknown soft-delete mode {mode:?}")).into()),
        };
        if self.schema.soft_delete.is_none() {
            return Err(Error::field(format!(
                "{} is not soft-deletable; derive it from SoftDeleteMixin to use with_deleted() / only_deleted()",
                self.schema.name
            ))
            .into());
        }
        self.derive(py, |shape, _| {
            shape.deleted = mode;
            Ok(())
        })
    }

    fn distinct(&self, py: Python<'_>) -> PyResult<QueryCore> {
        self.derive(py, |shape, _| {
            shape.distinct = true;
            Ok(())
        })
    }

    #[pyo3(signature = (*fields))]
    fn group_by(&self, py: Python<'_>, fields: Vec<String>) -> PyResult<QueryCore> {
        self.derive(py, |shape, _| {
            for f in fields {
                shape.group_by.push(self.column(&f, "group_by()")?);
            }
            Ok(())
        })
    }

    #[pyo3(signature = (**kwargs))]
    fn having(&self, py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<QueryCore> {
        let schema = self.schema.clone();
        self.derive(py, |shape, params| {
            let Some(kw) = kwargs else { return Ok(()) };
            for (k, v) in kw.iter() {
                let key = k.cast::<PyString>()?.to_str()?.to_owned();
                let (f, col, tail) = agg_spec(&schema, &key).ok_or_else(|| {
                    Error::field(format!(
                        "{}: having() takes aggregate lookups such as count__gt=1, sum__<field>__gte=10 or avg__<field>__lt=3; got {key:?}",
                        schema.name
                    ))
                })?;
                let (op_name, ty) = (if tail.is_empty() { "exact".to_string() } else { tail }, match (f, col) {
                    (AggFn::Count, _) => ColType::BigInteger,
                    (AggFn::Avg, _) => ColType::Float,
                    (_, Some(c)) => schema.columns[c].ty,
                    _ => ColType::Float,
                });
                let op = crate::plan::lookup::LOOKUP_NAMES
                    .iter()
                    .find(|(n, _)| *n == op_name)
                    .map(|(_, op)| *op)
                    .ok_or_else(|| Error::field(format!("{}: having() got unknown lookup {op_name:?} in {key:?}", schema.name)))?;
                use crate::plan::lookup::LookupOp as L;
                let op = match op {
                    L::Eq => crate::plan::Op::Eq,
                    L::Ne => crate::plan::Op::Ne,
                    L::Gt => crate::plan::Op::Gt,
                    L::Gte => crate::plan::Op::Gte,
                    L::Lt => crate::plan::Op::Lt,
                    L::Lte => crate::plan::Op::Lte,
                    _ => {
                        return Err(Error::field(format!(
                            "{}: having() supports exact, ne, gt, gte, lt and lte; got {op_name:?}",
                            schema.name
                        ))
                        .into())
                    }
                };
                let ty = if ty == ColType::BigInteger || ty == ColType::Integer { ColType::Integer } else { ty };
                let val = if ty == ColType::Float && v.is_instance_of::<pyo3::types::PyInt>() {
                    Value::Float(v.extract::<f64>()?)
                } else {
                    convert::to_value(&v, ty)
                        .map_err(|m| Error::value_type(format!("{}: having({key}=...): {m}", schema.name)))?
                };
                let slot = params.push(val);
                let c = Cond::Leaf { target: Target::Agg(f, col), op, slots: vec![slot] };
                shape.having = Some(Cond::and_opt(shape.having.take(), c));
            }
            Ok(())
        })
    }

    /// Load options: each path is a list of `(relation, strategy)` from this model down.
    fn options(&self, py: Python<'_>, paths: Vec<Vec<(String, String)>>) -> PyResult<QueryCore> {
        let schema = self.schema.clone();
        let optioned = !paths.is_empty();
        let mut q = self.derive(py, |shape, _| {
            for path in paths {
                load::add_path(&mut shape.loads, &schema, &parse_path(path)?)?;
            }
            Ok(())
        })?;
        q.optioned |= optioned;
        Ok(q)
    }

    fn all(&self, engine: &EngineCore, py: Python<'_>) -> PyResult<Pending> {
        let plain = if self.shape.loads.is_empty() { Some(self.model_compiled(engine)?) } else { None };
        run_models(py, engine, &self.shape, &self.params, plain, Box::new(|_, list| Ok(list.into_any().unbind())))
    }

    fn first(&self, engine: &EngineCore, py: Python<'_>) -> PyResult<Pending> {
        let (mut shape, params) = self.with_limit(1);
        if shape.order.is_empty() {
            shape.order.push(OrderItem { col: self.schema.pk, desc: false });
        }
        run_models(
            py,
            engine,
            &shape,
            &params,
            None,
            Box::new(|py, list| Ok(if list.is_empty() { py.None() } else { list.get_item(0)?.unbind() })),
        )
    }

    #[pyo3(signature = (engine, allow_none=false))]
    fn one(&self, engine: &EngineCore, py: Python<'_>, allow_none: bool) -> PyResult<Pending> {
        let (shape, params) = self.with_limit(2);
        let name = self.schema.name.clone();
        run_models(
            py,
            engine,
            &shape,
            &params,
            None,
            Box::new(move |py, list| match list.len() {
                0 if allow_none => Ok(py.None()),
                0 => Err(Error::new(Kind::NoResultFound, format!("no {name} matched the query")).into()),
                1 => Ok(list.get_item(0)?.unbind()),
                _ => Err(Error::new(
                    Kind::MultipleResultsFound,
                    format!("more than one {name} matched the query; use first() or add filters"),
                )
                .into()),
            }),
        )
    }

    fn count(&self, engine: &EngineCore) -> PyResult<Pending> {
        let mut shape = self.shape.clone();
        shape.order.clear();
        let wrapped = shape.limit.is_some() || shape.offset.is_some() || shape.distinct || !shape.group_by.is_empty();
        if wrapped {
            if !shape.distinct && shape.group_by.is_empty() {
                shape.projection = Projection::Items(vec![]);
            } else if let Projection::Model = shape.projection {
                if !shape.group_by.is_empty() {
                    shape.projection = Projection::Items(shape.group_by.iter().map(|c| ProjItem::Col(*c)).collect());
                }
            }
            shape.wrap = Some(Wrap::Count);
        } else {
            shape.projection = Projection::Items(vec![ProjItem::Agg(AggFn::Count, None)]);
        }
        self.run_select(engine, shape, self.params.clone(), |py, rows| {
            Ok(rows
                .values
                .first()
                .map(|v| convert::to_py(py, v))
                .transpose()?
                .map(|b| b.unbind())
                .unwrap_or_else(|| 0i64.into_pyobject(py).unwrap().into_any().unbind()))
        })
    }

    fn aggregate(&self, engine: &EngineCore, func: &str, field: &str) -> PyResult<Pending> {
        let f = AggFn::parse(func).ok_or_else(|| Error::field(format!("unknown aggregate {func:?}")))?;
        let col = self.column(field, &format!("{func}()"))?;
        let ty = self.schema.columns[col].ty;
        if matches!(f, AggFn::Sum | AggFn::Avg)
            && !matches!(ty, ColType::Integer | ColType::BigInteger | ColType::Float | ColType::Bool)
        {
            return Err(Error::field(format!(
                "{}.{}: {func}() needs a numeric field, but {field} is {}",
                self.schema.name,
                field,
                ty.python_name()
            ))
            .into());
        }
        if !self.shape.group_by.is_empty() {
            return Err(Error::new(
                Kind::NotSupported,
                format!("{}: {func}() over a grouped query is ambiguous; use values(\"<group field>\", \"{func}__{field}\")", self.schema.name),
            )
            .into());
        }
        let mut shape = self.shape.clone();
        if shape.limit.is_some() || shape.offset.is_some() || shape.distinct {
            // The ordering decides which rows a limit keeps, so it stays in the subquery.
            shape.projection = Projection::Items(vec![ProjItem::Col(col)]);
            shape.wrap = Some(Wrap::Agg(f, col));
        } else {
            shape.order.clear();
            shape.projection = Projection::Items(vec![ProjItem::Agg(f, Some(col))]);
        }
        self.run_select(engine, shape, self.params.clone(), |py, rows| {
            Ok(rows
                .values
                .first()
                .map(|v| convert::to_py(py, v))
                .transpose()?
                .map(|b| b.unbind())
                .unwrap_or_else(|| py.None()))
        })
    }

    fn exists(&self, engine: &EngineCore) -> PyResult<Pending> {
        let (mut shape, params) = self.with_limit(1);
        shape.projection = Projection::Items(vec![]);
        shape.order.clear();
        self.run_select(engine, shape, params, |py, rows| {
            Ok(pyo3::types::PyBool::new(py, !rows.is_empty()).to_owned().into_any().unbind())
        })
    }

    fn delete(&self, engine: &EngineCore) -> PyResult<Pending> {
        self.check_plain("delete")?;
        // The session's objects of deleted rows stay tracked (which rows went is not known
        // here); forgetting them all would drop pending changes of the rows that remain.
        let stmt = Statement::Delete(DeleteShape { model: self.schema.id, filter: self.visible_filter() });
        let compiled = compile::compile(engine.dialect(), &stmt)?;
        engine.run_compiled(&compiled, &self.params.values, |py, rows| {
            Ok(rows.affected.into_pyobject(py)?.into_any().unbind())
        })
    }

    #[pyo3(signature = (engine, **kwargs))]
    fn update(&self, engine: &EngineCore, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Pending> {
        self.check_plain("update")?;
        let mut params = self.params.clone();
        let sets = set_list(self.model.get(), kwargs, &mut params)?;
        let stmt = Statement::Update(UpdateShape { model: self.schema.id, sets, filter: self.visible_filter() });
        let compiled = compile::compile(engine.dialect(), &stmt)?;
        engine.run_compiled(&compiled, &params.values, |py, rows| {
            Ok(rows.affected.into_pyobject(py)?.into_any().unbind())
        })
    }

    /// `values(*fields)` (dicts) and `values_list(*fields, flat=...)` (tuples or scalars).
    #[pyo3(signature = (engine, fields, mode))]
    fn values(&self, engine: &EngineCore, fields: Vec<String>, mode: &str) -> PyResult<Pending> {
        let mut items = Vec::new();
        if fields.is_empty() {
            items.extend((0..self.schema.columns.len()).map(ProjItem::Col));
        }
        for f in &fields {
            if let Some(c) = self.schema.column_index(f) {
                items.push(ProjItem::Col(c));
            } else if let Some((func, col, tail)) = agg_spec(&self.schema, f).filter(|(_, _, t)| t.is_empty()) {
                let _ = tail;
                items.push(ProjItem::Agg(func, col));
            } else {
                return Err(Error::field(format!(
                    "{}: values() got unknown field {:?}; valid fields are: {} (or aggregates such as count, sum__<field>, avg__<field>)",
                    self.schema.name,
                    f,
                    self.schema.column_names().join(", ")
                ))
                .into());
            }
        }
        let flat = mode == "flat";
        if flat && items.len() != 1 {
            return Err(
                Error::field(format!("{}: values_list(flat=True) needs exactly one field", self.schema.name)).into()
            );
        }
        let mut shape = self.shape.clone();
        shape.projection = Projection::Items(items);
        let mode = mode.to_string();
        self.run_select(engine, shape, self.params.clone(), move |py, rows| {
            let out = match mode.as_str() {
                "dicts" => super::result::dicts(py, &rows)?,
                "flat" => super::result::column(py, &rows, 0)?,
                _ => super::result::tuples(py, &rows)?,
            };
            Ok(out.into_any().unbind())
        })
    }

    /// Streams the rows as instances, `batch_size` at a time (relation loads do not apply).
    fn stream(&self, engine: &EngineCore, py: Python<'_>, batch_size: usize) -> PyResult<StreamCore> {
        if batch_size == 0 {
            return Err(
                Error::value_type(format!("{}: stream(batch_size=...) must be at least 1", self.schema.name)).into()
            );
        }
        // The eager defaults (`lazy="selectin"`) are left out, as documented; options the
        // caller asked for would be lost without a word.
        if self.optioned {
            return Err(Error::value_type(format!(
                "{}: stream() loads no relationships, so it cannot take .options(...); use .all() (or load them per batch with session.load)",
                self.schema.name
            ))
            .into());
        }
        let compiled = self.model_compiled(engine)?;
        StreamCore::start(
            engine,
            self.model.clone_ref(py),
            compiled.sql.clone(),
            compiled.params(&self.params.values),
            compiled.out.clone(),
            batch_size,
        )
    }

    fn __repr__(&self) -> String {
        format!("<Query {}>", self.schema.name)
    }

    /// The SQL this query compiles to for `dialect` ("sqlite" or "postgresql"), for debugging.
    fn sql(&self, dialect: &str) -> PyResult<String> {
        let d = match dialect {
            "sqlite" => compile::Dialect::Sqlite,
            "postgresql" | "postgres" => compile::Dialect::Postgres,
            _ => return Err(Error::interface(format!("unknown dialect {dialect:?}")).into()),
        };
        Ok(compile::compile(d, &Statement::Select(self.shape.clone()))?.sql.to_string())
    }
}

/// A load path from Python: `(relation, strategy)` per level.
pub fn parse_path(path: Vec<(String, String)>) -> PyResult<Vec<(String, load::Strategy)>> {
    path.into_iter()
        .map(|(name, strategy)| {
            load::Strategy::parse(&strategy)
                .map(|s| (name, s))
                .ok_or_else(|| Error::field(format!("unknown loading strategy {strategy:?}")).into())
        })
        .collect()
}

/// `field=value` pairs for UPDATE, checked against the model.
pub fn set_list(
    model: &ModelHandle,
    kwargs: Option<&Bound<'_, PyDict>>,
    params: &mut Params,
) -> PyResult<Vec<(usize, u32)>> {
    let mut sets = Vec::new();
    if let Some(kw) = kwargs {
        for (k, v) in kw.iter() {
            let key = k.cast::<PyString>()?.to_str()?.to_owned();
            let col = model.schema.column_index(&key).ok_or_else(|| field_list_error(&model.schema, &key, "update"))?;
            let val = model.value_for(col, &v)?;
            sets.push((col, params.push(val)));
        }
    }
    if sets.is_empty() {
        return Err(Error::field(format!("{}: update needs at least one field=value", model.schema.name)).into());
    }
    Ok(sets)
}
