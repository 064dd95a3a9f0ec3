//! SQLite through rusqlite: opening, PRAGMAs, binding, row decoding, and the worker pool.
//!
//! Each connection lives on its own thread and takes jobs from a shared queue, so a long
//! statement never runs on the event loop's thread.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use super::{Observer, Request, Response};
use crate::compile::Columns;
use crate::errors::{Error, Kind, Result};
use crate::rows::RowSet;
use crate::value::{text_format, ColType, Value};

#[derive(Clone, Debug)]
pub struct SqliteConfig {
    /// A file path, or `None` for a private in-memory database.
    pub path: Option<String>,
    pub pragmas: Vec<(String, String)>,
    pub pool_size: usize,
}

/// PRAGMAs applied to every connection unless the engine overrides them.
pub fn default_pragmas(memory: bool) -> Vec<(String, String)> {
    let mut p = vec![("foreign_keys".to_string(), "ON".to_string()), ("busy_timeout".to_string(), "5000".to_string())];
    if !memory {
        p.push(("journal_mode".into(), "WAL".into()));
        p.push(("synchronous".into(), "NORMAL".into()));
    }
    p
}

impl SqliteConfig {
    /// Parses `sqlite:///relative.db`, `sqlite:////absolute.db`, `sqlite::memory:`.
    pub fn from_url(url: &str) -> Result<SqliteConfig> {
        let rest = url.strip_prefix("sqlite:").ok_or_else(|| Error::interface(format!("not a SQLite URL: {url:?}")))?;
        let path = match rest {
            ":memory:" | "///:memory:" => None,
            r if r.starts_with("///") && r.len() > 3 => Some(r[3..].to_string()),
            _ => {
                return Err(Error::interface(format!(
                    "SQLite URL {url:?}: use sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite::memory:"
                )))
            }
        };
        if let Some(p) = &path {
            if p.is_empty() {
                return Err(Error::interface(format!("SQLite URL {url:?} names no file")));
            }
        }
        let memory = path.is_none();
        Ok(SqliteConfig { path, pragmas: default_pragmas(memory), pool_size: if memory { 1 } else { 4 } })
    }

    /// Sets a PRAGMA, replacing the default of the same name. PRAGMA arguments cannot be
    /// bound, and SQLite ignores unknown names and bad values silently, so both are checked
    /// here against the PRAGMAs an engine may set.
    pub fn set_pragma(&mut self, name: &str, value: &str) -> Result<()> {
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_ascii_lowercase();
        let Some((_, rule)) = PRAGMAS.iter().find(|(n, _)| *n == name) else {
            return Err(Error::interface(format!(
                "unknown or unsupported PRAGMA {name:?}; supported: {}",
                PRAGMAS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            )));
        };
        let ok = match rule {
            Rule::Int => value.parse::<i64>().is_ok(),
            Rule::Bool => matches!(value.as_str(), "on" | "off" | "true" | "false" | "yes" | "no" | "1" | "0"),
            Rule::OneOf(choices) => choices.contains(&value.as_str()),
        };
        if !ok {
            let expected = match rule {
                Rule::Int => "an integer".to_string(),
                Rule::Bool => "on or off".to_string(),
                Rule::OneOf(choices) => format!("one of {}", choices.join(", ")),
            };
            return Err(Error::interface(format!("PRAGMA {name}={value:?} is not valid; expected {expected}")));
        }
        self.pragmas.retain(|(n, _)| *n != name);
        self.pragmas.push((name, value));
        Ok(())
    }
}

enum Rule {
    Int,
    Bool,
    OneOf(&'static [&'static str]),
}

/// The PRAGMAs an engine may set. `case_sensitive_like` is left out on purpose: the
/// lookups rely on LIKE's default rules.
const PRAGMAS: &[(&str, Rule)] = &[
    ("journal_mode", Rule::OneOf(&["delete", "truncate", "persist", "memory", "wal", "off"])),
    ("synchronous", Rule::OneOf(&["off", "normal", "full", "extra", "0", "1", "2", "3"])),
    ("foreign_keys", Rule::Bool),
    ("busy_timeout", Rule::Int),
    ("cache_size", Rule::Int),
    ("temp_store", Rule::OneOf(&["default", "file", "memory", "0", "1", "2"])),
    ("mmap_size", Rule::Int),
    ("locking_mode", Rule::OneOf(&["normal", "exclusive"])),
    ("auto_vacuum", Rule::OneOf(&["none", "full", "incremental", "0", "1", "2"])),
    ("wal_autocheckpoint", Rule::Int),
    ("journal_size_limit", Rule::Int),
    ("page_size", Rule::Int),
    ("recursive_triggers", Rule::Bool),
    ("secure_delete", Rule::Bool),
    ("cell_size_check", Rule::Bool),
    ("application_id", Rule::Int),
    ("user_version", Rule::Int),
];

pub fn open(cfg: &SqliteConfig) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    // An in-memory engine has exactly one connection (see `start`), so every session of the
    // engine shares one database.
    let conn = match &cfg.path {
        Some(p) => Connection::open_with_flags(p, flags),
        None => Connection::open_with_flags(":memory:", flags),
    }
    .map_err(|e| {
        let mut err = Error::from(e);
        err.message =
            format!("cannot open SQLite database {:?}: {}", cfg.path.as_deref().unwrap_or(":memory:"), err.message);
        err
    })?;
    conn.set_prepared_statement_cache_capacity(256);
    for (name, value) in &cfg.pragmas {
        if name == "busy_timeout" {
            let ms: u64 = value
                .parse()
                .map_err(|_| Error::interface(format!("PRAGMA busy_timeout={value:?}: expected milliseconds")))?;
            conn.busy_timeout(Duration::from_millis(ms))?;
            continue;
        }
        // PRAGMAs that report a value (journal_mode) return a row; ignore it.
        conn.query_row(&format!("PRAGMA {name} = {value}"), [], |_| Ok(())).or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(()),
            e => Err(Error::from(e)),
        })?;
    }
    Ok(conn)
}

struct Bound<'a>(&'a Value);

impl ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(*b as i64)),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Float(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Value::Json(j) => ToSqlOutput::Owned(SqlValue::Text(j.to_string())),
            Value::Date(d) => ToSqlOutput::Owned(SqlValue::Text(text_format::date(d))),
            Value::Time(t) => ToSqlOutput::Owned(SqlValue::Text(text_format::time(t))),
            Value::DateTime(t) => ToSqlOutput::Owned(SqlValue::Text(text_format::datetime(t))),
            Value::DateTimeTz(t) => ToSqlOutput::Owned(SqlValue::Text(text_format::datetime_tz(t))),
            Value::Decimal(d) => ToSqlOutput::Borrowed(ValueRef::Text(d.as_bytes())),
            Value::List(items) => ToSqlOutput::Owned(SqlValue::Text(json_list(items))),
        })
    }
}

/// A key list as the JSON array `json_each` reads. Each key is written as the column holds
/// it (dates and times as the text they are stored as); bytes, which JSON cannot hold, as
/// hex, which the query turns back into a blob.
fn json_list(items: &[Value]) -> String {
    let arr: Vec<serde_json::Value> = items
        .iter()
        .map(|v| match v {
            Value::Null => serde_json::Value::Null,
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Bool(b) => serde_json::Value::from(*b as i64),
            Value::Float(f) => serde_json::Value::from(*f),
            Value::Text(s) | Value::Decimal(s) => serde_json::Value::from(s.as_str()),
            Value::Bytes(b) => serde_json::Value::from(b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
            Value::Json(j) => serde_json::Value::from(j.to_string()),
            Value::Date(d) => serde_json::Value::from(text_format::date(d)),
            Value::Time(t) => serde_json::Value::from(text_format::time(t)),
            Value::DateTime(t) => serde_json::Value::from(text_format::datetime(t)),
            Value::DateTimeTz(t) => serde_json::Value::from(text_format::datetime_tz(t)),
            Value::List(items) => serde_json::Value::from(json_list(items)),
        })
        .collect();
    serde_json::Value::Array(arr).to_string()
}

fn dynamic(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Text(t) => Value::Text(crate::value::text_of(t)),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    }
}

/// Reads a stored value as the column's declared type. A value that does not fit the type
/// (written by raw SQL, say) is returned as stored rather than failing the whole query.
fn decode(v: ValueRef<'_>, ty: Option<ColType>) -> Value {
    let Some(ty) = ty else { return dynamic(v) };
    match (ty, v) {
        (_, ValueRef::Null) => Value::Null,
        (ColType::Bool, ValueRef::Integer(i)) => Value::Bool(i != 0),
        (ColType::Float, ValueRef::Integer(i)) => Value::Float(i as f64),
        (ColType::DateTime, ValueRef::Text(t)) => std::str::from_utf8(t)
            .ok()
            .and_then(text_format::parse_datetime)
            .map(Value::DateTime)
            .unwrap_or_else(|| dynamic(v)),
        (ColType::DateTimeTz, ValueRef::Text(t)) => std::str::from_utf8(t)
            .ok()
            .and_then(text_format::parse_datetime_tz)
            .map(Value::DateTimeTz)
            .unwrap_or_else(|| dynamic(v)),
        (ColType::Date, ValueRef::Text(t)) => {
            std::str::from_utf8(t).ok().and_then(text_format::parse_date).map(Value::Date).unwrap_or_else(|| dynamic(v))
        }
        (ColType::Time, ValueRef::Text(t)) => {
            std::str::from_utf8(t).ok().and_then(text_format::parse_time).map(Value::Time).unwrap_or_else(|| dynamic(v))
        }
        (ColType::Json, ValueRef::Text(t)) => serde_json::from_slice(t).map(Value::Json).unwrap_or_else(|_| dynamic(v)),
        _ => dynamic(v),
    }
}

fn columns_of(stmt: &rusqlite::Statement<'_>, known: &Option<Columns>) -> Columns {
    match known {
        Some(c) if c.names.len() == stmt.column_count() => c.clone(),
        _ => {
            let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
            let types = vec![None; names.len()];
            Columns { names: names.into(), types: types.into() }
        }
    }
}

fn bind_all(stmt: &mut rusqlite::Statement<'_>, params: &[Value]) -> Result<()> {
    let expected = stmt.parameter_count();
    if expected != params.len() {
        return Err(Error::programming(format!(
            "the statement has {expected} placeholder(s) but {} parameter(s) were given",
            params.len()
        )));
    }
    for (i, p) in params.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, Bound(p))?;
    }
    Ok(())
}

/// A prepared statement with its parameters bound, for stepping by hand.
pub fn prepare_bound<'c>(conn: &'c Connection, sql: &str, params: &[Value]) -> Result<rusqlite::Statement<'c>> {
    let mut stmt = conn.prepare(sql)?;
    bind_all(&mut stmt, params)?;
    Ok(stmt)
}

/// Appends one row's values, read by the column types.
pub fn decode_row(row: &rusqlite::Row<'_>, types: &[Option<ColType>], out: &mut Vec<Value>) -> Result<()> {
    for (c, ty) in types.iter().enumerate() {
        out.push(decode(row.get_ref(c)?, *ty));
    }
    Ok(())
}

fn step_into(
    stmt: &mut rusqlite::Statement<'_>,
    columns: &Columns,
    values: &mut Vec<Value>,
    mut chunks: Option<&mut super::Chunks<'_>>,
) -> Result<usize> {
    let types = &columns.types;
    let width = types.len();
    let mut rows = stmt.raw_query();
    let mut count = 0;
    while let Some(row) = rows.next()? {
        for (c, ty) in types.iter().enumerate().take(width) {
            values.push(decode(row.get_ref(c)?, *ty));
        }
        count += 1;
        if let Some(c) = chunks.as_deref_mut() {
            if c.full(values) {
                c.send(columns, values);
            }
        }
    }
    if let Some(c) = chunks {
        c.finish(columns, values);
    }
    Ok(count)
}

thread_local! {
    /// Values each statement returned last time on this connection's thread: the next
    /// result's vector starts at that size instead of growing (and copying) its way there.
    static SIZES: std::cell::RefCell<std::collections::HashMap<Arc<str>, usize>> = Default::default();
}

fn size_hint(sql: &Arc<str>) -> usize {
    SIZES.with(|m| m.borrow().get(sql).copied().unwrap_or(0)).min(super::SIZE_HINT_CAP)
}

fn note_size(sql: &Arc<str>, n: usize) {
    SIZES.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= 256 && !m.contains_key(sql) {
            m.clear();
        }
        m.insert(sql.clone(), n);
    });
}

fn query(
    conn: &Connection,
    sql: &Arc<str>,
    params: &[Value],
    known: &Option<Columns>,
    obs: &Observer,
) -> Result<RowSet> {
    query_into(conn, sql, params, known, obs, None)
}

/// `query`, sending the rows to `chunks` as they are read when it is given (the result
/// then holds none).
fn query_into(
    conn: &Connection,
    sql: &Arc<str>,
    params: &[Value],
    known: &Option<Columns>,
    obs: &Observer,
    chunks: Option<&mut super::Chunks<'_>>,
) -> Result<RowSet> {
    let started = std::time::Instant::now();
    let mut stmt = conn.prepare_cached(sql)?;
    bind_all(&mut stmt, params)?;
    let columns = columns_of(&stmt, known);
    let hint = size_hint(sql);
    let mut values = Vec::with_capacity(chunks.as_ref().map_or(hint, |c| hint.min(c.capacity())));
    let count = step_into(&mut stmt, &columns, &mut values, chunks)?;
    note_size(sql, count * columns.types.len());
    super::fit(&mut values);
    let affected = if stmt.readonly() { 0 } else { conn.changes() };
    obs.record(sql, started, count as u64);
    Ok(RowSet { columns, values, affected })
}

/// Runs `f` inside a transaction, or a savepoint if one is already open.
fn in_transaction<T>(conn: &Connection, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let outer = conn.is_autocommit();
    conn.execute_batch(if outer { "BEGIN IMMEDIATE" } else { "SAVEPOINT ormkit_batch" })?;
    match f() {
        Ok(v) => {
            conn.execute_batch(if outer { "COMMIT" } else { "RELEASE ormkit_batch" })?;
            Ok(v)
        }
        Err(e) => {
            let undo = if outer { "ROLLBACK" } else { "ROLLBACK TO ormkit_batch; RELEASE ormkit_batch" };
            let _ = conn.execute_batch(undo);
            Err(e)
        }
    }
}

pub fn run(conn: &Connection, req: Request, obs: &Observer) -> Result<Response> {
    match req {
        Request::Writes { ops } => in_transaction(conn, || {
            let mut done: Vec<RowSet> = Vec::with_capacity(ops.len());
            for op in &ops {
                let params = super::write_params(op, &done)?;
                done.push(query(conn, &op.sql, &params, &op.columns, obs)?);
            }
            Ok(Response::Units(done))
        }),
        Request::Load { units, progress } => {
            let mut keys = super::SourceKeys::new(&units);
            let mut done: Vec<RowSet> = Vec::with_capacity(units.len());
            for (i, unit) in units.into_iter().enumerate() {
                let columns = Some(unit.columns.clone());
                let rows = match (unit.given, keys.params(&unit.source, &unit.params)) {
                    (Some(given), _) => given,
                    (None, Some(params)) => {
                        let width = unit.columns.names.len();
                        let mut chunks = progress.as_ref().map(|p| super::Chunks::new(p, &mut keys, i, width));
                        query_into(conn, &unit.sql, &params, &columns, obs, chunks.as_mut())?
                    }
                    (None, None) => RowSet { columns: unit.columns.clone(), ..Default::default() },
                };
                keys.gather(i, &rows);
                done.push(rows);
            }
            Ok(Response::Units(done))
        }
        other => run_one(conn, other, obs).map(Response::Rows),
    }
}

fn run_one(conn: &Connection, req: Request, obs: &Observer) -> Result<RowSet> {
    match req {
        Request::Query { sql, params, columns } => query(conn, &sql, &params, &columns, obs),
        Request::Batch { groups, columns, rowid } => in_transaction(conn, || {
            let mut out = RowSet::default();
            let total: usize = groups.iter().map(|g| g.1.len()).sum();
            if let Some(ri) = rowid.as_ref().filter(|_| total >= ROWID_BATCH_MIN) {
                if is_rowid_alias(conn, &ri.table, &ri.pk)? {
                    out.columns =
                        Columns { names: vec![ri.pk.clone()].into(), types: vec![Some(ColType::Integer)].into() };
                    out.values.reserve(total);
                    for ((_, rows), sql) in groups.iter().zip(&ri.plain) {
                        let started = std::time::Instant::now();
                        let mut stmt = conn.prepare_cached(sql)?;
                        for params in rows {
                            bind_all(&mut stmt, params)?;
                            stmt.raw_execute()?;
                            out.values.push(Value::Int(conn.last_insert_rowid()));
                        }
                        out.affected += rows.len() as u64;
                        obs.record(sql, started, rows.len() as u64);
                    }
                    return Ok(out);
                }
            }
            for (sql, rows) in &groups {
                let started = std::time::Instant::now();
                let mut stmt = conn.prepare_cached(sql)?;
                out.columns = columns_of(&stmt, &columns);
                out.values.reserve(rows.len() * out.columns.types.len());
                for params in rows {
                    bind_all(&mut stmt, params)?;
                    step_into(&mut stmt, &out.columns, &mut out.values, None)?;
                    out.affected += conn.changes();
                }
                obs.record(sql, started, rows.len() as u64);
            }
            Ok(out)
        }),
        Request::Script { statements } => in_transaction(conn, || {
            for s in &statements {
                let started = std::time::Instant::now();
                conn.execute_batch(s)?;
                obs.record(&Arc::from(s.as_str()), started, 0);
            }
            Ok(RowSet::default())
        }),
        Request::Control { sql } => {
            let started = std::time::Instant::now();
            conn.execute_batch(&sql)?;
            obs.record(&Arc::from(sql.as_str()), started, 0);
            Ok(RowSet::default())
        }
        Request::Load { .. } | Request::Writes { .. } => unreachable!("handled by run"),
    }
}

/// Below this many rows the rowid check costs more than RETURNING does.
const ROWID_BATCH_MIN: usize = 64;

/// True when `pk` is `table`'s `INTEGER PRIMARY KEY`, i.e. an alias of the rowid: one key
/// column declared exactly INTEGER, and no index of its own (a DESC key, a non-alias key and
/// a WITHOUT ROWID table all have one).
fn is_rowid_alias(conn: &Connection, table: &str, pk: &str) -> Result<bool> {
    let sql = "SELECT (SELECT count(*) FROM pragma_table_info(?1) WHERE pk > 0) = 1 \
               AND (SELECT count(*) FROM pragma_table_info(?1) WHERE pk = 1 AND name = ?2 AND upper(type) = 'INTEGER') = 1 \
               AND NOT EXISTS (SELECT 1 FROM pragma_index_list(?1) WHERE origin = 'pk')";
    let mut stmt = conn.prepare_cached(sql)?;
    Ok(stmt.query_row(rusqlite::params![table, pk], |r| r.get::<_, bool>(0))?)
}

pub type Job = Box<dyn FnOnce(&Connection) + Send>;

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
    alive: usize,
    on_exit: Vec<Box<dyn FnOnce() + Send>>,
}

struct PoolInner {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// One connection per worker. A worker locks its own to run a job; the event loop's
    /// thread may borrow an unlocked one to run a short statement inline.
    slots: Vec<Arc<Mutex<Option<Connection>>>>,
    /// Statements that ran past the inline budget, and how many of their next runs go
    /// straight to a worker.
    slow: Mutex<std::collections::HashMap<Arc<str>, Backoff>>,
    /// The channels of pinned connections, so that closing the pool can end them.
    pins: Mutex<Vec<std::sync::Weak<PinChannel>>>,
}

type PinChannel = Mutex<Option<std::sync::mpsc::Sender<Job>>>;

/// How long a statement may run inline on the event loop's thread before it is stopped
/// and handed to a worker instead.
const INLINE_BUDGET: std::time::Duration = std::time::Duration::from_micros(1500);
/// Batches with more rows than this never run inline.
const INLINE_BATCH_ROWS: usize = 64;

/// A statement stopped at the inline budget skips inline for this many runs, twice as many
/// after each further stop, up to the cap. Its first run is often the slow one (the
/// statement is prepared, the pages are read from disk): a mark that never lapsed would
/// send a query that takes 100 µs through a worker thread forever. One that is slow every
/// time is tried inline once per 4,096 runs at most, each try costing at most the budget.
const FIRST_SKIP: u32 = 16;
const MAX_SKIP: u32 = 4096;

#[derive(Clone, Copy)]
struct Backoff {
    skip: u32,
    next: u32,
}

/// The statement that identifies a request for the slow list.
fn request_key(req: &Request) -> Option<Arc<str>> {
    match req {
        Request::Query { sql, .. } => Some(sql.clone()),
        Request::Load { units, .. } => units.first().map(|u| u.sql.clone()),
        Request::Writes { ops } if ops.len() <= INLINE_BATCH_ROWS => ops.first().map(|o| o.sql.clone()),
        Request::Batch { groups, .. } if groups.iter().map(|g| g.1.len()).sum::<usize>() <= INLINE_BATCH_ROWS => {
            groups.first().map(|g| g.0.clone())
        }
        _ => None,
    }
}

/// A fixed set of connection threads sharing one job queue.
#[derive(Clone)]
pub struct SqlitePool {
    inner: Arc<PoolInner>,
}

impl SqlitePool {
    /// Opens every connection (blocking; call it off the event loop) and starts the workers.
    pub fn start(cfg: &SqliteConfig) -> Result<SqlitePool> {
        let size = if cfg.path.is_none() { 1 } else { cfg.pool_size.max(1) };
        let conns = (0..size).map(|_| open(cfg)).collect::<Result<Vec<_>>>()?;
        let slots: Vec<_> = conns.into_iter().map(|c| Arc::new(Mutex::new(Some(c)))).collect();
        let inner = Arc::new(PoolInner {
            queue: Mutex::new(Queue { jobs: VecDeque::new(), closed: false, alive: size, on_exit: vec![] }),
            ready: Condvar::new(),
            slots: slots.clone(),
            slow: Default::default(),
            pins: Default::default(),
        });
        for (i, slot) in slots.into_iter().enumerate() {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(format!("ormkit-sqlite-{i}"))
                .spawn(move || worker(inner, slot))
                .map_err(|e| Error::operational(format!("cannot start a SQLite worker thread: {e}")))?;
        }
        Ok(SqlitePool { inner })
    }

    /// Runs `req` right here if a connection is free and the statement is not known to be
    /// slow. A run that exceeds the budget is interrupted (SQLite undoes the statement) and
    /// `Err(req)` hands it back for a worker; so is a request that cannot run inline.
    pub fn try_inline(&self, req: Request, obs: &Observer) -> std::result::Result<Result<Response>, Request> {
        let Some(key) = request_key(&req) else { return Err(req) };
        let marked = match self.inner.slow.lock().unwrap().get_mut(&key) {
            Some(b) if b.skip > 0 => {
                b.skip -= 1;
                return Err(req);
            }
            Some(_) => true,
            None => false,
        };
        for slot in &self.inner.slots {
            let Ok(guard) = slot.try_lock() else { continue };
            let Some(conn) = guard.as_ref() else { return Err(req) };
            if !conn.is_autocommit() {
                continue;
            }
            let deadline = std::time::Instant::now() + INLINE_BUDGET;
            let over = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = over.clone();
            let budget = conn.progress_handler(
                1000,
                Some(move || {
                    let late = std::time::Instant::now() > deadline;
                    if late {
                        flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    late
                }),
            );
            if budget.is_err() {
                return Err(req);
            }
            let (scratch, log) = obs.scratch();
            // Inline, rows are not streamed: a run stopped at the budget goes to a worker
            // and starts over, so nothing may have been handed on yet.
            let result = run(conn, req.without_progress(), &scratch);
            let _ = conn.progress_handler(0, None::<fn() -> bool>);
            if over.load(std::sync::atomic::Ordering::Relaxed) && result.is_err() {
                let mut slow = self.inner.slow.lock().unwrap();
                let b = slow.entry(key).or_insert(Backoff { skip: 0, next: FIRST_SKIP });
                b.skip = b.next;
                b.next = (b.next * 2).min(MAX_SKIP);
                return Err(req);
            }
            if marked {
                self.inner.slow.lock().unwrap().remove(&key);
            }
            obs.keep(log);
            return Ok(result);
        }
        Err(req)
    }

    pub fn submit(&self, job: Job) -> Result<()> {
        let mut q = self.inner.queue.lock().unwrap();
        if q.closed {
            return Err(Error::new(Kind::Interface, "the engine is disposed; create a new engine"));
        }
        q.jobs.push_back(job);
        drop(q);
        self.inner.ready.notify_one();
        Ok(())
    }

    /// Takes one connection out of the shared queue for a session's transaction: the worker
    /// that picks this up serves only the returned `Pinned` until it is released (or
    /// dropped), then rolls back anything left open and rejoins the pool.
    pub fn pin(&self, on_ready: Box<dyn FnOnce(Pinned) + Send>) -> Result<()> {
        let inner = self.inner.clone();
        self.submit(Box::new(move |conn| {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let channel = Arc::new(Mutex::new(Some(tx)));
            {
                let mut pins = inner.pins.lock().unwrap();
                pins.retain(|w| w.strong_count() > 0);
                pins.push(Arc::downgrade(&channel));
            }
            drop(inner);
            on_ready(Pinned { tx: channel });
            while let Ok(job) = rx.recv() {
                job(conn);
            }
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }))
    }

    /// Stops taking jobs; the workers finish what is queued, close their connections, and
    /// the last one to exit calls `on_done`.
    pub fn close(&self, on_done: Box<dyn FnOnce() + Send>) {
        // Sessions still holding a connection lose it: their transactions roll back.
        for pin in self.inner.pins.lock().unwrap().drain(..) {
            if let Some(channel) = pin.upgrade() {
                channel.lock().unwrap().take();
            }
        }
        let mut q = self.inner.queue.lock().unwrap();
        q.closed = true;
        if q.alive == 0 {
            drop(q);
            on_done();
            return;
        }
        q.on_exit.push(on_done);
        drop(q);
        self.inner.ready.notify_all();
    }
}

/// A connection reserved for one session.
pub struct Pinned {
    tx: Arc<PinChannel>,
}

impl Pinned {
    pub fn submit(&self, job: Job) -> Result<()> {
        let tx = self.tx.lock().unwrap();
        let tx = tx
            .as_ref()
            .ok_or_else(|| Error::interface("the session's connection was released; start a new transaction"))?;
        tx.send(job).map_err(|_| Error::interface("the session's connection is gone"))
    }

    /// Hands the connection back to the pool once the queued jobs ran.
    pub fn release(&self) {
        self.tx.lock().unwrap().take();
    }
}

fn worker(inner: Arc<PoolInner>, slot: Arc<Mutex<Option<Connection>>>) {
    loop {
        let job = {
            let mut q = inner.queue.lock().unwrap();
            loop {
                if let Some(j) = q.jobs.pop_front() {
                    break Some(j);
                }
                if q.closed {
                    break None;
                }
                q = inner.ready.wait(q).unwrap();
            }
        };
        let Some(job) = job else { break };
        let guard = slot.lock().unwrap();
        if let Some(conn) = guard.as_ref() {
            job(conn);
        }
    }
    // Closes the connection.
    slot.lock().unwrap().take();
    let callbacks = {
        let mut q = inner.queue.lock().unwrap();
        q.alive -= 1;
        if q.alive == 0 {
            std::mem::take(&mut q.on_exit)
        } else {
            vec![]
        }
    };
    for cb in callbacks {
        cb();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(SqliteConfig::from_url("sqlite:///a/b.db").unwrap().path.as_deref(), Some("a/b.db"));
        assert_eq!(SqliteConfig::from_url("sqlite:////tmp/x.db").unwrap().path.as_deref(), Some("/tmp/x.db"));
        assert_eq!(SqliteConfig::from_url("sqlite::memory:").unwrap().path, None);
        assert!(SqliteConfig::from_url("postgres://x").is_err());
    }

    #[test]
    fn pragma_values_are_checked() {
        let mut c = SqliteConfig::from_url("sqlite::memory:").unwrap();
        assert!(c.set_pragma("journal_mode", "delete").is_ok());
        assert!(c.set_pragma("journal_mode", "x; DROP TABLE t").is_err());
    }

    #[test]
    fn batch_rolls_back_on_error() {
        let cfg = SqliteConfig::from_url("sqlite::memory:").unwrap();
        let conn = open(&cfg).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)").unwrap();
        let sql: Arc<str> = "INSERT INTO t (v) VALUES (?)".into();
        let rows = vec![vec![Value::Text("a".into())], vec![Value::Text("a".into())]];
        let err = run_one(
            &conn,
            Request::Batch { groups: vec![(sql, rows)], columns: None, rowid: None },
            &Observer::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind, Kind::Integrity);
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn a_statement_stopped_at_the_inline_budget_comes_back_inline_later() {
        let pool = SqlitePool::start(&SqliteConfig::from_url("sqlite::memory:").unwrap()).unwrap();
        let obs = Observer::default();
        let sql: Arc<str> =
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) SELECT count(*) FROM c".into();
        let count = |n: i64| Request::Query { sql: sql.clone(), params: vec![Value::Int(n)], columns: None };
        // Far past the budget: stopped, and handed back for a worker.
        assert!(pool.try_inline(count(50_000_000), &obs).is_err());
        // The next runs skip the inline attempt, however short they are...
        for _ in 0..FIRST_SKIP {
            assert!(pool.try_inline(count(10), &obs).is_err());
        }
        // ...then it is tried inline again, and once it finishes in time the mark is gone.
        for _ in 0..3 {
            let Ok(done) = pool.try_inline(count(10), &obs) else { panic!("not run inline") };
            let rows = done.unwrap().rows();
            assert_eq!(rows.values, vec![Value::Int(10)]);
        }
        // Stopped twice in a row: twice as many runs skip it.
        assert!(pool.try_inline(count(50_000_000), &obs).is_err());
        for _ in 0..FIRST_SKIP {
            assert!(pool.try_inline(count(10), &obs).is_err());
        }
        assert!(pool.try_inline(count(50_000_000), &obs).is_err());
        for _ in 0..2 * FIRST_SKIP {
            assert!(pool.try_inline(count(10), &obs).is_err());
        }
        assert!(pool.try_inline(count(10), &obs).is_ok());
    }
}
