//! `EngineCore`: one database (a connection pool), the statements the simple API needs, and
//! the hand-off of every request to its driver.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use super::convert;
use super::identity::IdentityMap;
use super::load::{run_for_instances, run_models};
use super::model::{ModelHandle, Rels};
use super::query::{lookup_cond, parse_path, set_list};
use super::result::RawResult;
use super::write::{has_related, WritePlan};
use crate::bridge::{self, Payload, Pending};
use crate::compile::{self, ddl, Compiled, Dialect};
use crate::driver::postgres::{self, Lease, PgConfig, PgPool};
use crate::driver::sqlite::{self, SqliteConfig, SqlitePool};
use crate::driver::{runtime, LoadUnit, LoggedQuery, Observer, Progress, Request, Response};
use crate::errors::{Error, Kind};
use crate::plan::load;
use crate::plan::{Cond, DeleteShape, InsertShape, Params, SelectShape, Statement, UpdateShape, UpsertShape};
use crate::rows::RowSet;
use crate::schema;
use crate::value::{ColType, Value};

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[pyclass(frozen, module = "ormkit._ormkit")]
pub struct EngineCore {
    backend: Backend,
    dialect: Dialect,
    url: String,
    observer: Arc<Observer>,
    /// Set on a session's core while it holds a connection for a transaction.
    pin: Option<Arc<PinState>>,
    /// A session's identity map; `None` on an engine's own core.
    identity: Option<Py<IdentityMap>>,
}

/// Where a stream runs.
pub enum StreamTarget {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    Pinned,
}

/// A connection reserved for one session (its transaction).
enum Pin {
    Sqlite(sqlite::Pinned),
    Postgres(Arc<tokio::sync::Mutex<Option<Lease>>>),
}

struct PinState {
    pin: Pin,
    /// The operation under way (0: none); a second one at the same time is a misuse.
    owner: AtomicU64,
    /// The operation under way and whether its caller went away: one whose caller was
    /// cancelled is still winding down on the connection, and the one next call takes over
    /// from it, waiting its turn there instead of being refused.
    running: std::sync::Mutex<Option<(u64, bridge::CancelProbe)>>,
    /// A statement on this connection was cancelled: a cancel request may still be on
    /// its way, so the connection is closed at release rather than reused.
    tainted: Arc<AtomicBool>,
}

/// An upsert writes one row's columns: a many-to-one set on the instance gives its foreign
/// key (as an insert takes it); what would need other rows written is refused, not dropped.
/// The relationships of an object the session tracks are left to the next flush, which
/// compares them with what they were loaded with.
fn upsert_parents(m: &ModelHandle, obj: &Bound<'_, PyAny>, tracked: bool) -> PyResult<()> {
    if m.schema.relations.is_empty() || tracked {
        return Ok(());
    }
    let py = obj.py();
    let d = super::write::dict_of(obj)?;
    let rels = m.schema.resolved_relations()?;
    for r in rels.iter() {
        let Some(v) = d.get_item(r.name.as_str())? else { continue };
        super::write::check_related(m, r, &v)?;
        let refuse = |what: &str| -> PyResult<()> {
            Err(Error::value_type(format!(
                "{}.{}: upsert() writes the row's own columns only, and {what}; insert it with session.insert() \
                 (or session.add()), or write the related rows first",
                m.schema.name, r.name
            ))
            .into())
        };
        match r.kind {
            crate::schema::RelKind::ManyToOne => {
                if v.is_none() {
                    d.set_item(m.keys[r.local_col].bind(py), py.None())?;
                    continue;
                }
                let p = super::write::handle_of(&v)?;
                let key = p.get().column_value(&v, r.remote_col)?;
                if key.is_null() {
                    return refuse(&format!("the {} it names is not saved yet", r.target.name));
                }
                d.set_item(m.keys[r.local_col].bind(py), convert::to_py(py, &key)?)?;
            }
            _ if super::write::items(&v)?.is_empty() => {}
            _ => return refuse("a relationship holding rows would need them written"),
        }
    }
    Ok(())
}

/// Whether a request may change rows (anything but a read or transaction control).
fn writes(req: &Request) -> bool {
    match req {
        Request::Load { .. } | Request::Control { .. } => false,
        Request::Query { sql, .. } => !sql.trim_start().get(..6).is_some_and(|w| w.eq_ignore_ascii_case("select")),
        _ => true,
    }
}

/// Tracks the instances a write plan inserted (`WritePlan::apply`).
pub(super) fn remember_new(
    identity: &Option<Py<IdentityMap>>,
    py: Python<'_>,
    written: &[(Py<PyAny>, bool)],
) -> PyResult<()> {
    for (o, generated) in written {
        remember_all(identity, [o.bind(py).clone()], Rels::Inserted { generated: *generated })?;
    }
    Ok(())
}

/// Records instances just written in the session's identity map, with their values.
pub(super) fn remember_all<'py>(
    identity: &Option<Py<IdentityMap>>,
    objs: impl IntoIterator<Item = Bound<'py, PyAny>>,
    rels: Rels,
) -> PyResult<()> {
    let Some(map) = identity else { return Ok(()) };
    for o in objs {
        let h = o.get_type().getattr(pyo3::intern!(o.py(), "__ormkit__"))?.cast_into::<ModelHandle>()?;
        h.get().remember(&o, Some(map.get()), rels)?;
    }
    Ok(())
}

/// Marks a pinned session free again when dropped, unless another operation took over.
struct BusyGuard(Arc<PinState>, u64);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let _ = self.0.owner.compare_exchange(self.1, 0, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Numbers a pinned session's operations (0 stands for none).
static NEXT_OP: AtomicU64 = AtomicU64::new(1);

/// Runs a request on a PostgreSQL connection. If the awaiting task goes away, the statement
/// is cancelled server-side; a pooled connection is then closed (a late cancel must never
/// hit the next query), a session's connection is kept once the cancel request is through.
async fn run_pg(
    pool: &PgPool,
    lease: &mut Lease,
    req: Request,
    obs: &Observer,
    completer: &bridge::Completer,
    taint: Option<Arc<AtomicBool>>,
) -> crate::errors::Result<Response> {
    let pinned = taint.is_some();
    if completer.is_cancelled() {
        return Err(Error::operational("cancelled"));
    }
    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<tokio::task::JoinHandle<()>>();
    let token = lease.conn().cancel_token();
    let cancel_config = pool.cancel_config();
    let cancel_tx = std::sync::Mutex::new(Some(cancel_tx));
    completer.on_cancel(Box::new(move || {
        if let Some(t) = &taint {
            t.store(true, Ordering::SeqCst);
        }
        let handle = runtime().spawn(async move { PgPool::cancel(&cancel_config, token).await });
        if let Some(tx) = cancel_tx.lock().unwrap().take() {
            let _ = tx.send(handle);
        }
    }));
    let result = postgres::run(lease.conn(), req, obs).await;
    let mut cancel_rx = cancel_rx;
    if let Ok(handle) = cancel_rx.try_recv() {
        if pinned {
            let _ = handle.await;
        } else {
            lease.discard();
        }
    } else if lease.conn().is_closed() {
        lease.discard();
    }
    result
}

fn finish_none(py: Python<'_>, _rows: RowSet) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

impl EngineCore {
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Sends `req` to a connection; `finish` turns its rows into the awaited Python value.
    pub fn submit<F>(&self, req: Request, finish: F) -> PyResult<Pending>
    where
        F: FnOnce(Python<'_>, RowSet) -> PyResult<Py<PyAny>> + Send + 'static,
    {
        self.submit_response(req, move |py, r| finish(py, r.rows()))
    }

    /// Like `submit`, for requests answering with several result sets.
    pub fn submit_response<F>(&self, req: Request, finish: F) -> PyResult<Pending>
    where
        F: FnOnce(Python<'_>, Response) -> PyResult<Py<PyAny>> + Send + 'static,
    {
        self.submit_response_explained(req, finish, |e| e)
    }

    /// `submit_response`, with `explain` adding what the caller knows to a failure.
    pub fn submit_response_explained<F, X>(&self, req: Request, finish: F, explain: X) -> PyResult<Pending>
    where
        F: FnOnce(Python<'_>, Response) -> PyResult<Py<PyAny>> + Send + 'static,
        X: FnOnce(Error) -> Error + Send + 'static,
    {
        self.submit_with(|_| req, finish, explain)
    }

    /// Sends a load whose rows reach `chunk` on the loop's thread, `(unit, rows)`, while the
    /// driver reads the rest; `finish` then gets the response, which holds rows only where
    /// they were not streamed.
    pub fn submit_streamed<C, F>(&self, units: Vec<LoadUnit>, chunk: C, finish: F) -> PyResult<Pending>
    where
        C: Fn(Python<'_>, usize, RowSet) -> PyResult<()> + Send + Sync + 'static,
        F: FnOnce(Python<'_>, Response) -> PyResult<Py<PyAny>> + Send + 'static,
    {
        let chunk = Arc::new(chunk);
        let request = move |completer: &bridge::Completer| {
            let stepper = completer.stepper();
            let progress = Progress(Arc::new(move |unit, rows| {
                let chunk = chunk.clone();
                stepper.step(Box::new(move |py| chunk(py, unit, rows)));
            }));
            Request::Load { units, progress: Some(progress) }
        };
        self.submit_with(request, finish, |e| e)
    }

    fn submit_with<R, F, X>(&self, request: R, finish: F, explain: X) -> PyResult<Pending>
    where
        R: FnOnce(&bridge::Completer) -> Request,
        F: FnOnce(Python<'_>, Response) -> PyResult<Py<PyAny>> + Send + 'static,
        X: FnOnce(Error) -> Error + Send + 'static,
    {
        let (pending, completer) = bridge::pending();
        let req = request(&completer);
        let obs = self.observer.clone();
        let pin = self.pin.clone();
        let mut op = 0;
        if let Some(p) = &pin {
            op = NEXT_OP.fetch_add(1, Ordering::Relaxed);
            let mut running = p.running.lock().unwrap();
            let cur = p.owner.load(Ordering::Acquire);
            let winding_down = running.as_ref().is_some_and(|(id, c)| *id == cur && c.is_cancelled());
            if cur != 0 && !winding_down {
                return Err(Error::interface(
                    "this session is already running an operation: an AsyncSession must not be used by two tasks at once (await each call before the next, or give each task its own session)",
                )
                .into());
            }
            p.owner.store(op, Ordering::Release);
            *running = Some((op, completer.cancel_probe()));
        }
        // Inside a transaction, a row read again after a write may show that write (or what
        // the database did with it), which a rollback undoes.
        if let (Some(map), true) = (&self.identity, writes(&req)) {
            map.get().log_write();
        }
        // The session stays busy until its caller has taken the result (or dropped the
        // awaitable), so two operations in flight at once are refused whatever the timing.
        let guard = pin.map(|p| BusyGuard(p, op));
        let done = move |result: crate::errors::Result<Response>, completer: bridge::Completer| {
            completer.complete(result.map_err(explain).map(|r| {
                Box::new(move |py: Python<'_>| {
                    let _guard = guard;
                    finish(py, r)
                }) as Payload
            }));
        };
        let mut req = req;
        if let (Backend::Sqlite(pool), None) = (&self.backend, &self.pin) {
            // Short statements run right here with the GIL released: the awaitable is then
            // complete before it is awaited, with no thread hop and no loop round trip.
            match Python::attach(|py| py.detach(|| pool.try_inline(req, &obs))) {
                Ok(result) => {
                    done(result, completer);
                    return Ok(pending);
                }
                Err(back) => req = back,
            }
        }
        match (&self.backend, self.pin.as_ref().map(|p| &p.pin)) {
            (Backend::Sqlite(pool), pinned) => {
                let job: sqlite::Job = Box::new(move |conn| {
                    if completer.is_cancelled() {
                        return done(Err(Error::operational("cancelled")), completer);
                    }
                    let handle = conn.get_interrupt_handle();
                    completer.on_cancel(Box::new(move || handle.interrupt()));
                    let result = sqlite::run(conn, req, &obs);
                    done(result, completer);
                });
                match pinned {
                    Some(Pin::Sqlite(p)) => p.submit(job),
                    _ => pool.submit(job),
                }?;
            }
            (Backend::Postgres(pool), pinned) => {
                let pool = pool.clone();
                let pinned = match pinned {
                    Some(Pin::Postgres(lease)) => Some(lease.clone()),
                    _ => None,
                };
                let taint = self.pin.as_ref().map(|p| p.tainted.clone());
                let task = async move {
                    match pinned {
                        Some(slot) => {
                            let mut guard = slot.lock().await;
                            let Some(lease) = guard.as_mut() else {
                                let e =
                                    Error::interface("the session's connection was released; start a new transaction");
                                return done(Err(e), completer);
                            };
                            let result = run_pg(&pool, lease, req, &obs, &completer, taint).await;
                            drop(guard);
                            done(result, completer);
                        }
                        None => {
                            let mut lease = match pool.acquire().await {
                                Ok(l) => l,
                                Err(e) => return done(Err(e), completer),
                            };
                            let result = run_pg(&pool, &mut lease, req, &obs, &completer, None).await;
                            drop(lease);
                            done(result, completer);
                        }
                    }
                };
                Python::attach(|py| bridge::start(py, &pending, task))?;
            }
        }
        Ok(pending)
    }

    /// This core with another identity map (or none); backend, pin and log are shared.
    fn with_map(&self, identity: Option<Py<IdentityMap>>) -> EngineCore {
        EngineCore {
            backend: self.backend.clone(),
            dialect: self.dialect,
            url: self.url.clone(),
            observer: self.observer.clone(),
            pin: self.pin.clone(),
            identity,
        }
    }

    pub fn identity<'py>(&self, py: Python<'py>) -> Option<Py<IdentityMap>> {
        self.identity.as_ref().map(|m| m.clone_ref(py))
    }

    pub fn forget_model(&self, model: u32) {
        if let Some(m) = &self.identity {
            m.get().forget_model(model);
        }
    }

    pub fn backend_for_stream(&self) -> StreamTarget {
        if self.pin.is_some() {
            return StreamTarget::Pinned;
        }
        match &self.backend {
            Backend::Sqlite(p) => StreamTarget::Sqlite(p.clone()),
            Backend::Postgres(p) => StreamTarget::Postgres(p.clone()),
        }
    }

    pub fn run_compiled<F>(&self, compiled: &Compiled, values: &[Value], finish: F) -> PyResult<Pending>
    where
        F: FnOnce(Python<'_>, RowSet) -> PyResult<Py<PyAny>> + Send + 'static,
    {
        let req = Request::Query {
            sql: compiled.sql.clone(),
            params: compiled.params(values),
            columns: Some(compiled.out.clone()),
        };
        self.submit(req, finish)
    }

    /// PostgreSQL: every row in one INSERT, each column's values bound as one array.
    fn insert_arrays(
        &self,
        py: Python<'_>,
        model: Py<ModelHandle>,
        objs: &[Bound<'_, PyAny>],
        rows: Vec<(Vec<usize>, Vec<Value>)>,
    ) -> PyResult<Pending> {
        let m = model.get();
        let cols = rows[0].0.clone();
        let generated = !cols.contains(&m.schema.pk);
        let snapshots = self.identity.as_ref().map(|_| m.insert_snapshots(&rows));
        let mut columns: Vec<Vec<Value>> = cols.iter().map(|_| Vec::with_capacity(rows.len())).collect();
        for (_, values) in rows {
            for (c, v) in values.into_iter().enumerate() {
                columns[c].push(v);
            }
        }
        let stmt = Statement::Insert(InsertShape {
            model: m.schema.id,
            cols,
            rows: 1,
            returning: vec![m.schema.pk],
            arrays: true,
        });
        let compiled = compile::compile(self.dialect, &stmt)?;
        let values: Vec<Value> = columns.into_iter().map(Value::List).collect();
        let list = PyList::new(py, objs)?.unbind();
        let identity = self.identity(py);
        self.run_compiled(&compiled, &values, move |py, rows| {
            let m = model.get();
            let key = m.keys[m.schema.pk].bind(py);
            let mut keys = rows.values;
            if generated {
                // Generated keys rise in insertion order.
                keys.sort_by_key(|v| if let Value::Int(i) = v { *i } else { i64::MIN });
            }
            let l = list.bind(py);
            for (i, pk) in keys.iter().enumerate() {
                l.get_item(i)?.setattr(key, convert::to_py(py, pk)?)?;
            }
            if let (Some(map), Some(snaps)) = (&identity, snapshots) {
                m.remember_inserted(py, map.get(), l, snaps, &keys)?;
            }
            Ok(list.into_any())
        })
    }

    /// Inserts instances and the related instances they hold, in one transaction.
    fn insert_related(&self, objs: Vec<Bound<'_, PyAny>>, result: Py<PyAny>) -> PyResult<Pending> {
        let mut plan = WritePlan::new(self.dialect);
        for o in &objs {
            plan.insert(o, &[])?;
        }
        let ops = std::mem::take(&mut plan.ops);
        let identity = Python::attach(|py| self.identity(py));
        self.submit_response(Request::Writes { ops }, move |py, response| {
            let written = plan.apply(py, &response.units(), identity.as_ref().map(|m| m.get()))?;
            remember_new(&identity, py, &written)?;
            Ok(result)
        })
    }

    fn pk_filter(model: &ModelHandle, pk: Value, params: &mut Params) -> Cond {
        let slot = params.push(pk);
        Cond::Leaf { target: crate::plan::Target::Column(model.schema.pk), op: crate::plan::Op::Eq, slots: vec![slot] }
    }

    /// The columns an insert of `obj` sets and their values; a missing generated key is left
    /// to the database.
    fn insert_values(model: &ModelHandle, obj: &Bound<'_, PyAny>) -> PyResult<(Vec<usize>, Vec<Value>)> {
        let vals = model.instance_values(obj)?;
        let mut cols = Vec::with_capacity(vals.len());
        let mut out = Vec::with_capacity(vals.len());
        let py = obj.py();
        for (i, v) in vals.iter().enumerate() {
            let c = &model.schema.columns[i];
            let missing = v.as_ref().is_none_or(|v| v.is_none());
            if c.primary_key && c.autoincrement && missing {
                continue;
            }
            let none = py.None().into_bound(py);
            cols.push(i);
            out.push(model.value_for(i, v.as_ref().unwrap_or(&none))?);
        }
        Ok((cols, out))
    }
}

fn sqlite_config(url: &str, pragmas: Option<&Bound<'_, PyDict>>, pool_size: Option<usize>) -> PyResult<SqliteConfig> {
    let mut cfg = SqliteConfig::from_url(url)?;
    if let Some(p) = pragmas {
        for (k, v) in p.iter() {
            let name: String = k.extract()?;
            let value = if let Ok(b) = v.cast::<pyo3::types::PyBool>() {
                if b.is_true() {
                    "ON".to_string()
                } else {
                    "OFF".to_string()
                }
            } else {
                v.str()?.to_string()
            };
            cfg.set_pragma(&name, &value)?;
        }
    }
    if let Some(n) = pool_size {
        if n == 0 {
            return Err(Error::interface("pool_size must be at least 1").into());
        }
        cfg.pool_size = n;
    }
    Ok(cfg)
}

#[pymethods]
impl EngineCore {
    /// Opens an engine for `url`; resolves to an `EngineCore`.
    #[staticmethod]
    #[pyo3(signature = (url, pragmas=None, pool_size=None, pool_timeout=None))]
    fn connect(
        url: String,
        pragmas: Option<&Bound<'_, PyDict>>,
        pool_size: Option<usize>,
        pool_timeout: Option<f64>,
    ) -> PyResult<Pending> {
        let scheme = url.split(':').next().unwrap_or_default().to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => {
                let cfg = sqlite_config(&url, pragmas, pool_size)?;
                let (pending, completer) = bridge::pending();
                std::thread::Builder::new()
                    .name("ormkit-connect".into())
                    .spawn(move || {
                        let result = SqlitePool::start(&cfg).map(|pool| {
                            let core = EngineCore { backend: Backend::Sqlite(pool), dialect: Dialect::Sqlite, url, observer: Default::default(), pin: None, identity: None };
                            Box::new(move |py: Python<'_>| Ok(Py::new(py, core)?.into_any())) as Payload
                        });
                        completer.complete(result);
                    })
                    .map_err(|e| Error::operational(format!("cannot start a thread: {e}")))?;
                Ok(pending)
            }
            "postgresql" | "postgres" => {
                if pragmas.is_some() {
                    return Err(Error::interface("pragmas= applies to SQLite engines only").into());
                }
                let mut cfg = PgConfig::from_url(&url)?;
                if let Some(n) = pool_size {
                    if n == 0 {
                        return Err(Error::interface("pool_size must be at least 1").into());
                    }
                    cfg.pool_size = n;
                }
                if let Some(t) = pool_timeout {
                    if !(t > 0.0 && t.is_finite()) {
                        return Err(Error::interface("pool_timeout must be a positive number of seconds").into());
                    }
                    cfg.pool_timeout = std::time::Duration::from_secs_f64(t);
                }
                let pool = PgPool::new(cfg);
                let (pending, completer) = bridge::pending();
                let task = async move {
                    // Connect once now, so a wrong URL fails at create_engine.
                    let result = pool.acquire().await.map(|lease| {
                        drop(lease);
                        let core = EngineCore { backend: Backend::Postgres(pool), dialect: Dialect::Postgres, url, observer: Default::default(), pin: None, identity: None };
                        Box::new(move |py: Python<'_>| Ok(Py::new(py, core)?.into_any())) as Payload
                    });
                    completer.complete(result);
                };
                Python::attach(|py| bridge::start(py, &pending, task))?;
                Ok(pending)
            }
            _ => Err(Error::interface(format!(
                "unsupported database URL {url:?}; use postgresql://user:password@host:port/dbname, sqlite:///path.db, sqlite:////abs/path.db or sqlite::memory:"
            ))
            .into()),
        }
    }

    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    #[getter]
    fn dialect_name(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgresql",
        }
    }

    /// Raw SQL with bound parameters; resolves to a `Result`.
    #[pyo3(signature = (sql, params=None))]
    fn execute(&self, sql: String, params: Option<&Bound<'_, PyAny>>) -> PyResult<Pending> {
        let mut values = Vec::new();
        if let Some(p) = params {
            if !p.is_none() {
                if p.is_instance_of::<PyString>() || p.is_instance_of::<PyDict>() {
                    return Err(
                        Error::programming("parameters must be a list or tuple of values, bound in order").into()
                    );
                }
                for (i, v) in p.try_iter()?.enumerate() {
                    let v = v?;
                    values.push(
                        convert::dynamic_value(&v)
                            .map_err(|m| Error::value_type(format!("parameter {}: {m}", i + 1)))?,
                    );
                }
            }
        }
        let sql = match self.dialect {
            Dialect::Postgres => postgres::rewrite_qmarks(&sql),
            Dialect::Sqlite => sql,
        };
        let req = Request::Query { sql: sql.into(), params: values, columns: None };
        self.submit(req, |py, rows| Ok(Py::new(py, RawResult { rows })?.into_any()))
    }

    /// Creates the tables of every registered model (or of `models`), parents first.
    #[pyo3(signature = (models=None))]
    fn create_all(&self, models: Option<Vec<Py<ModelHandle>>>) -> PyResult<Pending> {
        let models = match models {
            Some(m) => m.iter().map(|h| h.get().schema.clone()).collect(),
            None => schema::all_current(),
        };
        let statements = ddl::create_all(self.dialect, &models)?;
        self.submit(Request::Script { statements }, finish_none)
    }

    #[pyo3(signature = (models=None))]
    fn drop_all(&self, models: Option<Vec<Py<ModelHandle>>>) -> PyResult<Pending> {
        let models = match models {
            Some(m) => m.iter().map(|h| h.get().schema.clone()).collect(),
            None => schema::all_current(),
        };
        let statements = ddl::drop_all(self.dialect, &models)?;
        self.submit(Request::Script { statements }, finish_none)
    }

    /// Closes every connection once queued work is done.
    fn dispose(&self) -> PyResult<Pending> {
        let (pending, completer) = bridge::pending();
        match &self.backend {
            Backend::Sqlite(pool) => {
                pool.close(Box::new(move || {
                    completer.complete(Ok(Box::new(|py: Python<'_>| Ok(py.None()))));
                }));
            }
            Backend::Postgres(pool) => {
                pool.close();
                completer.complete(Ok(Box::new(|py: Python<'_>| Ok(py.None()))));
            }
        }
        Ok(pending)
    }

    /// Inserts instances of any models (and what they hold) in one transaction.
    fn insert_many(&self, objs: Vec<Bound<'_, PyAny>>) -> PyResult<Pending> {
        let list =
            PyList::new(objs.first().map(|o| o.py()).ok_or_else(|| Error::interface("nothing to insert"))?, &objs)?;
        let result = list.into_any().unbind();
        self.insert_related(objs, result)
    }

    /// Inserts one instance; resolves to the instance with its generated key set.
    fn insert(&self, py: Python<'_>, model: Py<ModelHandle>, obj: Bound<'_, PyAny>) -> PyResult<Pending> {
        let m = model.get();
        if has_related(m, &obj)? {
            return self.insert_related(vec![obj.clone()], obj.unbind());
        }
        let (cols, values) = Self::insert_values(m, &obj)?;
        let generated = !cols.contains(&m.schema.pk);
        let stmt = Statement::Insert(InsertShape {
            model: m.schema.id,
            cols,
            rows: 1,
            returning: vec![m.schema.pk],
            arrays: false,
        });
        let compiled = compile::compile(self.dialect, &stmt)?;
        let obj = obj.unbind();
        let model = model.clone_ref(py);
        let identity = self.identity(py);
        self.run_compiled(&compiled, &values, move |py, rows| {
            let m = model.get();
            let o = obj.bind(py);
            if let Some(pk) = rows.values.first() {
                o.setattr(m.keys[m.schema.pk].bind(py), convert::to_py(py, pk)?)?;
            }
            remember_all(&identity, [o.clone()], Rels::Inserted { generated })?;
            Ok(obj)
        })
    }

    /// Inserts many instances in one transaction; resolves to the list, keys filled in.
    fn insert_all(&self, py: Python<'_>, model: Py<ModelHandle>, objs: Bound<'_, PyAny>) -> PyResult<Pending> {
        let m = model.get();
        let objs: Vec<Bound<'_, PyAny>> = objs.try_iter()?.collect::<PyResult<_>>()?;
        let mut related = false;
        for o in &objs {
            m.check_instance(o)?;
            related = related || has_related(m, o)?;
        }
        if related {
            let list = PyList::new(py, &objs)?.into_any().unbind();
            return self.insert_related(objs, list);
        }
        let mut groups: Vec<(Arc<str>, Vec<Vec<Value>>)> = Vec::new();
        let mut last_cols: Option<Vec<usize>> = None;
        let rows: Vec<(Vec<usize>, Vec<Value>)> =
            objs.iter().map(|o| Self::insert_values(m, o)).collect::<PyResult<_>>()?;
        if self.dialect == Dialect::Postgres
            && !rows.is_empty()
            && rows.iter().all(|r| r.0 == rows[0].0 && !r.0.is_empty())
        {
            return self.insert_arrays(py, model.clone_ref(py), &objs, rows);
        }
        let snapshots = self.identity.as_ref().map(|_| m.insert_snapshots(&rows));
        // SQLite: an integer key may be the rowid, read without RETURNING (the driver checks).
        let int_pk = matches!(m.schema.pk_column().ty, ColType::Integer | ColType::BigInteger);
        let mut plain: Vec<Arc<str>> = Vec::new();
        for (cols, values) in rows {
            if last_cols.as_ref() != Some(&cols) {
                let shape = InsertShape {
                    model: m.schema.id,
                    cols: cols.clone(),
                    rows: 1,
                    returning: vec![m.schema.pk],
                    arrays: false,
                };
                groups
                    .push((compile::compile(self.dialect, &Statement::Insert(shape.clone()))?.sql.clone(), Vec::new()));
                if int_pk {
                    let shape = InsertShape { returning: vec![], ..shape };
                    plain.push(compile::compile(self.dialect, &Statement::Insert(shape))?.sql.clone());
                }
                last_cols = Some(cols);
            }
            groups.last_mut().expect("pushed above").1.push(values);
        }
        let rowid = int_pk.then(|| {
            Box::new(crate::driver::RowidInsert {
                table: m.schema.table.clone(),
                pk: m.schema.pk_column().name.clone(),
                plain,
            })
        });
        let list = PyList::new(py, &objs)?.unbind();
        if objs.is_empty() {
            return Ok(bridge::ready(Ok(Box::new(move |_py: Python<'_>| Ok(list.into_any())))));
        }
        let model = model.clone_ref(py);
        let identity = self.identity(py);
        self.submit(Request::Batch { groups, columns: None, rowid }, move |py, rows| {
            let m = model.get();
            let key = m.keys[m.schema.pk].bind(py);
            let l = list.bind(py);
            for (i, pk) in rows.values.iter().enumerate() {
                l.get_item(i)?.setattr(key, convert::to_py(py, pk)?)?;
            }
            if let (Some(map), Some(snaps)) = (&identity, snapshots) {
                m.remember_inserted(py, map.get(), l, snaps, &rows.values)?;
            }
            Ok(list.into_any())
        })
    }

    /// INSERT ... ON CONFLICT (conflict_target) DO UPDATE SET update_fields, for each
    /// instance, in one transaction; every instance gets the row as stored.
    #[pyo3(signature = (model, objs, conflict_target, update_fields=None))]
    fn upsert(
        &self,
        py: Python<'_>,
        model: Py<ModelHandle>,
        objs: Vec<Bound<'_, PyAny>>,
        conflict_target: &Bound<'_, PyAny>,
        update_fields: Option<Vec<String>>,
    ) -> PyResult<Pending> {
        let m = model.get();
        let schema = &m.schema;
        let target: Vec<String> =
            if let Ok(one) = conflict_target.extract::<String>() { vec![one] } else { conflict_target.extract()? };
        let conflict = match target.as_slice() {
            [one] => schema.require_column(one)?,
            _ => {
                return Err(Error::field(format!(
                    "{}: conflict_target must name one unique column (got {target:?})",
                    schema.name
                ))
                .into())
            }
        };
        let c = &schema.columns[conflict];
        if !c.unique && !c.primary_key {
            return Err(Error::field(format!(
                "{}.{} is not unique, so no insert can conflict on it; conflict_target must name a unique column (mapped_column(unique=True)) or the primary key",
                schema.name, c.name
            ))
            .into());
        }
        let mut groups: Vec<(Arc<str>, Vec<Vec<Value>>)> = Vec::new();
        let mut last: Option<Vec<usize>> = None;
        let mut columns = None;
        for o in &objs {
            m.check_instance(o)?;
            let tracked = match &self.identity {
                Some(map) => map.get().holds_obj(m, o)?,
                None => false,
            };
            upsert_parents(m, o, tracked)?;
            let (cols, values) = Self::insert_values(m, o)?;
            if last.as_ref() != Some(&cols) {
                if !cols.contains(&conflict) {
                    return Err(Error::field(format!(
                        "{}.{}: the instance has no value for the conflict target",
                        schema.name, c.name
                    ))
                    .into());
                }
                let update = match &update_fields {
                    Some(fields) => {
                        fields.iter().map(|f| schema.require_column(f)).collect::<crate::errors::Result<Vec<_>>>()?
                    }
                    None => cols.iter().copied().filter(|i| *i != conflict && *i != schema.pk).collect(),
                };
                let stmt = Statement::Upsert(UpsertShape { model: schema.id, cols: cols.clone(), conflict, update });
                let compiled = compile::compile(self.dialect, &stmt)?;
                columns = Some(compiled.out.clone());
                groups.push((compiled.sql.clone(), Vec::new()));
                last = Some(cols);
            }
            groups.last_mut().expect("pushed above").1.push(values);
        }
        let list = PyList::new(py, &objs)?.unbind();
        if objs.is_empty() {
            return Ok(bridge::ready(Ok(Box::new(move |_py: Python<'_>| Ok(list.into_any())))));
        }
        // What each object's key attribute held before, for a rollback to put back.
        let pk_name = m.keys[schema.pk].bind(py);
        let identity = self.identity(py);
        let keys_before = match identity {
            Some(_) => objs
                .iter()
                .map(|o| {
                    Ok(crate::py::write::dict_of(o)?.get_item(pk_name)?.unwrap_or_else(|| py.None().into_bound(py)))
                })
                .map(|o: PyResult<Bound<'_, PyAny>>| o.map(Bound::unbind))
                .collect::<PyResult<Vec<_>>>()?,
            None => vec![],
        };
        let model = model.clone_ref(py);
        self.submit(Request::Batch { groups, columns, rowid: None }, move |py, rows| {
            let m = model.get();
            let l = list.bind(py);
            // What the call answers: for each row, the session's object for it.
            let mut out: Vec<Bound<'_, PyAny>> = Vec::with_capacity(l.len());
            for (i, row) in rows.values.chunks(m.keys.len()).enumerate() {
                let o = l.get_item(i)?;
                let d = o.getattr(pyo3::intern!(py, "__dict__"))?.cast_into::<PyDict>()?;
                for (k, v) in m.keys.iter().zip(row) {
                    d.set_item(k.bind(py), convert::to_py(py, v)?)?;
                }
                // A parent loaded before that the stored row no longer points at goes.
                m.expire_all_parents(&o)?;
                let (Some(map), Some(key)) = (&identity, crate::rows::Key::of(&row[m.schema.pk])) else {
                    out.push(o);
                    continue;
                };
                let map = map.get();
                let held = map.lookup(py, m.schema.id, &key);
                // Logged before anything is remembered: a rollback replays the log backwards,
                // so whatever remembering displaced is put back first, and the instance gets
                // back the key it had (the row may not exist after the rollback).
                if !held.as_ref().is_some_and(|t| t.is(&o)) {
                    map.log_upsert(m.schema.id, key, o.clone().unbind(), keys_before[i].clone_ref(py));
                }
                match held {
                    // The session already has another object for the row (tracked before, or
                    // upserted earlier in this call): that object takes the row as stored (what
                    // the upsert wrote wins over unflushed changes of its own, as with
                    // refresh()) and is what the call hands back; `o` stays outside the
                    // session, as the instance given to SQLAlchemy's merge() does. Tracking `o`
                    // instead would leave the other object's later changes unwritten.
                    Some(t) if !t.is(&o) => {
                        m.revert_to(&t, row)?;
                        m.remember(&t, Some(map), Rels::Keep)?;
                        out.push(t);
                    }
                    _ => {
                        m.remember(&o, Some(map), Rels::Keep)?;
                        out.push(o);
                    }
                }
            }
            Ok(PyList::new(py, out)?.into_any().unbind())
        })
    }

    /// Fetches by primary key; resolves to the instance or None (or raises, with `required`).
    #[pyo3(signature = (model, pk, required=false))]
    fn get(&self, py: Python<'_>, model: Py<ModelHandle>, pk: Bound<'_, PyAny>, required: bool) -> PyResult<Pending> {
        let m = model.get();
        let pkv = m.value_for(m.schema.pk, &pk)?;
        let mut params = Params::default();
        let mut shape = SelectShape::new(m.schema.id);
        shape.filter = Some(Self::pk_filter(m, pkv, &mut params));
        shape.loads = load::defaults(&m.schema)?;
        let plain = if shape.loads.is_empty() {
            let cell = &m.get_sql[self.dialect as usize];
            Some(compile::compile_in(cell, self.dialect, || Statement::Select(shape.clone()))?)
        } else {
            None
        };
        let model = model.clone_ref(py);
        let shown = pk.repr()?.to_string();
        run_models(
            py,
            self,
            &shape,
            &params,
            plain,
            Box::new(move |py, list| {
                let m = model.get();
                if list.is_empty() {
                    if required {
                        return Err(Error::new(
                            Kind::NoResultFound,
                            format!("no {} with {}={}", m.schema.name, m.schema.pk_column().name, shown),
                        )
                        .into());
                    }
                    return Ok(py.None());
                }
                Ok(list.get_item(0)?.unbind())
            }),
        )
    }

    /// Loads relations (paths of `(relation, strategy)`) of instances already at hand, and
    /// attaches them; resolves to the list of instances.
    fn load_relations(
        &self,
        model: Py<ModelHandle>,
        instances: Vec<Bound<'_, PyAny>>,
        paths: Vec<Vec<(String, String)>>,
    ) -> PyResult<Pending> {
        let m = model.get();
        let mut shape = SelectShape::new(m.schema.id);
        for path in paths {
            load::add_path(&mut shape.loads, &m.schema, &parse_path(path)?)?;
        }
        let mut values = Vec::with_capacity(instances.len() * m.keys.len());
        for obj in &instances {
            values.extend(m.snapshot(obj)?);
        }
        let names: Vec<String> = m.schema.columns.iter().map(|c| c.name.clone()).collect();
        let types: Vec<Option<crate::value::ColType>> = m.schema.columns.iter().map(|c| Some(c.ty)).collect();
        let given = RowSet {
            columns: crate::compile::Columns { names: names.into(), types: types.into() },
            values,
            affected: 0,
        };
        let objs = instances.into_iter().map(|o| o.unbind()).collect();
        run_for_instances(self, &shape, objs, given)
    }

    /// Updates columns of one instance by primary key and sets them on the instance.
    #[pyo3(signature = (model, obj, **values))]
    fn update(
        &self,
        py: Python<'_>,
        model: Py<ModelHandle>,
        obj: Bound<'_, PyAny>,
        values: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Pending> {
        let m = model.get();
        let pkv = m.pk_value(&obj)?;
        let mut params = Params::default();
        let sets = set_list(m, values, &mut params)?;
        let filter = Some(Self::pk_filter(m, pkv, &mut params));
        let stmt = Statement::Update(UpdateShape { model: m.schema.id, sets, filter });
        let compiled = compile::compile(self.dialect, &stmt)?;
        let updates: Vec<(Py<PyAny>, Py<PyAny>)> = match values {
            Some(v) => v.iter().map(|(k, v)| (k.unbind(), v.unbind())).collect(),
            None => vec![],
        };
        let obj = obj.unbind();
        let model = model.clone_ref(py);
        let identity = self.identity(py);
        self.run_compiled(&compiled, &params.values, move |py, rows| {
            let m = model.get();
            if rows.affected == 0 {
                return Err(Error::new(
                    Kind::NoResultFound,
                    format!("cannot update {}: its row no longer exists", m.schema.name),
                )
                .into());
            }
            let o = obj.bind(py);
            let mut cols = Vec::new();
            for (k, v) in updates {
                let k = k.bind(py).cast::<PyString>()?.to_string();
                o.setattr(k.as_str(), v)?;
                if let Some(i) = m.schema.columns.iter().position(|c| c.name == k) {
                    cols.push(i);
                }
            }
            // Only the columns written are settled: other unflushed changes stay pending.
            if let Some(map) = &identity {
                m.expire_parents(o, &cols)?;
                map.get().settle_columns(m, o, &cols)?;
            }
            Ok(obj)
        })
    }

    /// Deletes one instance by primary key; resolves to True when a row was deleted.
    fn remove(&self, model: Py<ModelHandle>, obj: Bound<'_, PyAny>) -> PyResult<Pending> {
        let m = model.get();
        let pkv = m.pk_value(&obj)?;
        let mut params = Params::default();
        let filter = Some(Self::pk_filter(m, pkv, &mut params));
        let stmt = Statement::Delete(DeleteShape { model: m.schema.id, filter });
        let compiled = compile::compile(self.dialect, &stmt)?;
        let forget = match (&self.identity, crate::rows::Key::of(&params.values[0])) {
            (Some(map), Some(key)) => Some((map.clone_ref(obj.py()), key, obj.clone().unbind())),
            _ => None,
        };
        let model_id = m.schema.id;
        self.run_compiled(&compiled, &params.values, move |py, rows| {
            // Only once the row is gone: a refused DELETE leaves the object tracked.
            if let Some((map, key, obj)) = forget {
                map.get().forget(model_id, &key);
                // Still held by loaded relationships of other objects, it must not pass for
                // a new object there, which a flush would insert again.
                super::write::mark_removed(obj.bind(py))?;
            }
            Ok(pyo3::types::PyBool::new(py, rows.affected > 0).to_owned().into_any().unbind())
        })
    }

    /// `UPDATE ... SET values WHERE filters`; resolves to the number of rows changed.
    #[pyo3(signature = (model, values, **filters))]
    fn bulk_update(
        &self,
        model: Py<ModelHandle>,
        values: &Bound<'_, PyDict>,
        filters: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Pending> {
        let m = model.get();
        let mut params = Params::default();
        let sets = set_list(m, Some(values), &mut params)?;
        let mut filter = None;
        if let Some(f) = filters {
            for (k, v) in f.iter() {
                let key: String = k.extract()?;
                filter = Some(Cond::and_opt(filter, lookup_cond(&m.schema, &key, &v, &mut params)?));
            }
        }
        let stmt = Statement::Update(UpdateShape { model: m.schema.id, sets, filter });
        let compiled = compile::compile(self.dialect, &stmt)?;
        // The session's objects keep their identity: the next read of their rows brings them
        // up to date (IdentityMap::hit), and their own unflushed changes are still written.
        self.run_compiled(&compiled, &params.values, |py, rows| {
            Ok(rows.affected.into_pyobject(py)?.into_any().unbind())
        })
    }

    /// This core for a session: the same engine, with the session's identity map.
    /// This core (and its connection, if pinned) without the session's identity map: reads
    /// build fresh objects, as `refresh()` needs.
    fn without_identity(&self) -> EngineCore {
        self.with_map(None)
    }

    fn with_identity(&self, identity: Py<IdentityMap>) -> EngineCore {
        self.with_map(Some(identity))
    }

    /// Writes what changed on the session's instances since they were read or written
    /// (columns, and loaded relationships: see `flush.rs`), in one transaction.
    fn flush_dirty(&self, py: Python<'_>) -> PyResult<Pending> {
        let none = || Ok(bridge::ready(Ok(Box::new(|py: Python<'_>| Ok(py.None())))));
        let Some(map) = &self.identity else { return none() };
        let Some(mut plan) = super::flush::plan(py, self.dialect, map.get())? else { return none() };
        let ops = plan.take_ops();
        let identity = self.identity(py);
        let strangers = plan.strangers();
        self.submit_response_explained(
            Request::Writes { ops },
            move |py, response| {
                plan.finish(py, response, &identity)?;
                Ok(py.None())
            },
            move |mut e| {
                if e.kind == Kind::Integrity && !strangers.is_empty() {
                    e.message = format!(
                        "{}; note: {} not read or written by this session, so the flush inserted it as a new row; \
                         to link a row that exists, read it through this session (session.get)",
                        e.message, strangers
                    );
                }
                e
            },
        )
    }

    /// A core holding one connection for a session's transaction; resolves to it.
    fn pin(&self) -> PyResult<Pending> {
        let (pending, completer) = bridge::pending();
        let (dialect, url, observer) = (self.dialect, self.url.clone(), self.observer.clone());
        let identity = Python::attach(|py| self.identity.as_ref().map(|m| m.clone_ref(py)));
        match &self.backend {
            Backend::Sqlite(pool) => {
                let pool2 = pool.clone();
                pool.pin(Box::new(move |pinned| {
                    let core = EngineCore {
                        backend: Backend::Sqlite(pool2),
                        dialect,
                        url,
                        observer,
                        pin: Some(Arc::new(PinState {
                            running: Default::default(),
                            pin: Pin::Sqlite(pinned),
                            owner: AtomicU64::new(0),
                            tainted: Default::default(),
                        })),
                        identity,
                    };
                    completer.complete(Ok(Box::new(move |py: Python<'_>| Ok(Py::new(py, core)?.into_any()))));
                }))?;
            }
            Backend::Postgres(pool) => {
                let pool = pool.clone();
                let task = async move {
                    let result = pool.acquire().await.map(|lease| {
                        let slot = Arc::new(tokio::sync::Mutex::new(Some(lease)));
                        let core = EngineCore {
                            backend: Backend::Postgres(pool),
                            dialect,
                            url,
                            observer,
                            pin: Some(Arc::new(PinState {
                                running: Default::default(),
                                pin: Pin::Postgres(slot),
                                owner: AtomicU64::new(0),
                                tainted: Default::default(),
                            })),
                            identity,
                        };
                        Box::new(move |py: Python<'_>| Ok(Py::new(py, core)?.into_any())) as Payload
                    });
                    completer.complete(result);
                };
                Python::attach(|py| bridge::start(py, &pending, task))?;
            }
        }
        Ok(pending)
    }

    /// Gives a pinned connection back to the pool, rolling back what is still open.
    fn release(&self) -> PyResult<Pending> {
        let Some(pin) = &self.pin else {
            return Ok(bridge::ready(Ok(Box::new(|py: Python<'_>| Ok(py.None())))));
        };
        let (pending, completer) = bridge::pending();
        match &pin.pin {
            Pin::Sqlite(p) => {
                // Runs after everything queued on the connection; then the worker rolls
                // back whatever is left open and rejoins the pool.
                let job: sqlite::Job =
                    Box::new(move |_| completer.complete(Ok(Box::new(|py: Python<'_>| Ok(py.None())))));
                if p.submit(job).is_err() {
                    return Ok(bridge::ready(Ok(Box::new(|py: Python<'_>| Ok(py.None())))));
                }
                p.release();
            }
            Pin::Postgres(slot) => {
                let slot = slot.clone();
                let tainted = pin.tainted.clone();
                let task = async move {
                    if let Some(mut lease) = slot.lock().await.take() {
                        let mut clean = !tainted.load(Ordering::SeqCst);
                        if lease.conn().in_transaction() {
                            let rollback = Request::Control { sql: "ROLLBACK".into() };
                            let undone = postgres::run(lease.conn(), rollback, &Observer::default()).await;
                            clean = clean && undone.is_ok() && !lease.conn().in_transaction();
                        }
                        // Only a connection known to be idle, outside any transaction, and
                        // with no cancel request in flight goes back to the pool.
                        if !clean {
                            lease.discard();
                        }
                    }
                    completer.complete(Ok(Box::new(|py: Python<'_>| Ok(py.None()))));
                };
                Python::attach(|py| bridge::start(py, &pending, task))?;
            }
        }
        Ok(pending)
    }

    /// Transaction control on a pinned core: BEGIN, COMMIT, ROLLBACK, SAVEPOINT name, ...
    fn control(&self, sql: String) -> PyResult<Pending> {
        if self.pin.is_none() {
            return Err(
                Error::interface("transaction control needs a session's own connection (session.begin())").into()
            );
        }
        self.submit(Request::Control { sql }, finish_none)
    }

    #[getter]
    fn pinned(&self) -> bool {
        self.pin.is_some()
    }

    /// A log of every statement this engine runs while it is open (see `QueryLog`).
    fn query_log(&self) -> QueryLog {
        QueryLog { observer: self.observer.clone(), entries: Default::default(), id: std::sync::Mutex::new(None) }
    }

    fn __repr__(&self) -> String {
        format!("<EngineCore {}>", self.url)
    }
}

/// The statements an engine ran, recorded between `__enter__` and `__exit__`:
/// `with engine.query_log() as log: ...; len(log)`.
#[pyclass(module = "ormkit._ormkit")]
pub struct QueryLog {
    observer: Arc<Observer>,
    entries: Arc<std::sync::Mutex<Vec<LoggedQuery>>>,
    id: std::sync::Mutex<Option<u64>>,
}

#[pymethods]
impl QueryLog {
    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        let mut id = slf.id.lock().unwrap();
        if id.is_none() {
            *id = Some(slf.observer.open(slf.entries.clone()));
        }
        drop(id);
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        if let Some(id) = self.id.lock().unwrap().take() {
            self.observer.close(id);
        }
        false
    }

    fn __len__(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    /// The SQL of every statement, in order.
    #[getter]
    fn statements(&self) -> Vec<String> {
        self.entries.lock().unwrap().iter().map(|e| e.sql.to_string()).collect()
    }

    /// `(sql, milliseconds, rows)` per statement; for a batch, rows is how often it ran.
    #[getter]
    fn entries(&self) -> Vec<(String, f64, u64)> {
        self.entries.lock().unwrap().iter().map(|e| (e.sql.to_string(), e.micros as f64 / 1000.0, e.rows)).collect()
    }

    fn clear(&self) {
        self.entries.lock().unwrap().clear();
    }

    fn __repr__(&self) -> String {
        format!("<QueryLog {} statements>", self.__len__())
    }
}
