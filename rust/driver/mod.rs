//! Database drivers behind one request/response interface, so the layers above never know
//! which database they talk to.

pub mod pgsock;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use crate::compile::Columns;
use crate::rows::RowSet;

use crate::value::Value;

/// One unit of work for a connection.
#[derive(Clone, Debug)]
pub enum Request {
    /// Run one statement and return its rows (or, for writes, the affected count).
    Query { sql: Arc<str>, params: Vec<Value>, columns: Option<Columns> },
    /// Run each statement once per parameter row, all inside one transaction, collecting
    /// the rows they return in order.
    Batch { groups: Vec<(Arc<str>, Vec<Vec<Value>>)>, columns: Option<Columns>, rowid: Option<Box<RowidInsert>> },
    /// Run statements in order inside one transaction (DDL).
    Script { statements: Vec<String> },
    /// Run a query and the queries loading its relations, each keyed by rows of an earlier
    /// one (see `compile::load`). With `progress`, rows go there in chunks as they are read
    /// and the response holds none of them.
    Load { units: Vec<LoadUnit>, progress: Option<Progress> },
    /// Transaction control (BEGIN, COMMIT, SAVEPOINT ...) on a pinned connection.
    Control { sql: String },
    /// Run statements in order inside one transaction, where a parameter may be a value an
    /// earlier statement returned (a generated key). Answers each statement's rows.
    Writes { ops: Vec<WriteOp> },
}

/// SQLite: the groups of a `Batch` are INSERTs returning an `INTEGER PRIMARY KEY`; when the
/// table's key is indeed the rowid, `plain` (the same INSERTs without RETURNING) run instead
/// and the key is read with `last_insert_rowid()`, which spares SQLite collecting a result.
#[derive(Clone, Debug)]
pub struct RowidInsert {
    pub table: String,
    pub pk: String,
    pub plain: Vec<Arc<str>>,
}

/// One statement of a `Writes` request.
#[derive(Clone, Debug)]
pub struct WriteOp {
    pub sql: Arc<str>,
    pub params: Vec<Value>,
    pub columns: Option<Columns>,
    /// `(param, op, column)`: before running, set parameter `param` to column `column` of
    /// the first row op `op` returned.
    pub fixups: Vec<(usize, usize, usize)>,
}

/// The parameters of `op` with its fix-ups applied from earlier results.
pub(crate) fn write_params(op: &WriteOp, done: &[RowSet]) -> crate::errors::Result<Vec<Value>> {
    let mut params = op.params.clone();
    for (param, from, col) in &op.fixups {
        let rows = &done[*from];
        if rows.is_empty() {
            return Err(crate::errors::Error::internal("a statement returned no key for a later one"));
        }
        params[*param] = rows.row(0)[*col].clone();
    }
    Ok(params)
}

/// One statement of a relation load.
#[derive(Clone, Debug)]
pub struct LoadUnit {
    pub sql: Arc<str>,
    pub params: Vec<Value>,
    pub columns: Columns,
    /// `(unit, column)`: bind the distinct values of that column of that earlier unit's rows
    /// as this unit's first parameter. No keys, no query.
    pub source: Option<(usize, usize)>,
    /// Rows already at hand (loading relations of existing instances): not queried.
    pub given: Option<RowSet>,
}

#[derive(Debug)]
pub enum Response {
    Rows(RowSet),
    Units(Vec<RowSet>),
}

impl Response {
    pub fn rows(self) -> RowSet {
        match self {
            Response::Rows(r) => r,
            Response::Units(mut u) => u.drain(..).next().unwrap_or_default(),
        }
    }

    pub fn units(self) -> Vec<RowSet> {
        match self {
            Response::Rows(r) => vec![r],
            Response::Units(u) => u,
        }
    }
}

/// The largest result vector reserved up front from a size hint (values, not bytes).
pub(crate) const SIZE_HINT_CAP: usize = 1 << 20;

/// A result smaller than its vector (sized from last time's) keeps no unused room for as
/// long as it lives.
pub(crate) fn fit(values: &mut Vec<Value>) {
    if values.len() * 2 < values.capacity() {
        values.shrink_to_fit();
    }
}

/// Receives a load's rows, `(unit, rows)`, in chunks while the driver is still reading the
/// rest: the event loop's thread turns one chunk into objects while the next is read.
#[derive(Clone)]
pub struct Progress(pub Arc<dyn Fn(usize, RowSet) + Send + Sync>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

impl Request {
    /// The same request answering with all its rows at once.
    pub fn without_progress(&self) -> Request {
        match self {
            Request::Load { units, .. } => Request::Load { units: units.clone(), progress: None },
            other => other.clone(),
        }
    }
}

/// The key lists a load's units bind: the distinct non-NULL values, in first-seen order, of
/// the columns later units are keyed by, gathered as the earlier units' rows go past.
pub(crate) struct SourceKeys {
    wanted: Vec<(usize, usize)>,
    seen: Vec<crate::rows::FastSet<crate::rows::Key>>,
    keys: Vec<Vec<Value>>,
}

impl SourceKeys {
    pub fn new(units: &[LoadUnit]) -> SourceKeys {
        let mut wanted: Vec<(usize, usize)> = Vec::new();
        for u in units {
            if let Some(src) = u.source {
                if !wanted.contains(&src) {
                    wanted.push(src);
                }
            }
        }
        let n = wanted.len();
        SourceKeys { wanted, seen: (0..n).map(|_| Default::default()).collect(), keys: vec![Vec::new(); n] }
    }

    pub fn gather(&mut self, unit: usize, rows: &RowSet) {
        let w = rows.width();
        if w == 0 {
            return;
        }
        for (i, &(u, col)) in self.wanted.iter().enumerate() {
            if u != unit {
                continue;
            }
            for row in rows.values.chunks(w) {
                let v = &row[col];
                if let Some(k) = crate::rows::Key::of(v) {
                    if self.seen[i].insert(k) {
                        self.keys[i].push(v.clone());
                    }
                }
            }
        }
    }

    /// The parameters a unit binds, with its key list filled in; `None` when there are no
    /// keys, so nothing to load.
    pub fn params(&self, source: &Option<(usize, usize)>, params: &[Value]) -> Option<Vec<Value>> {
        match source {
            None => Some(params.to_vec()),
            Some(src) => {
                let i = self.wanted.iter().position(|w| w == src)?;
                if self.keys[i].is_empty() {
                    return None;
                }
                let mut params = params.to_vec();
                params[0] = Value::List(self.keys[i].clone());
                Some(params)
            }
        }
    }
}

/// Where a driver sends a unit's rows while it reads them: chunks start small, so the
/// loop's thread starts early, and grow, so a large result costs few wake-ups.
pub(crate) struct Chunks<'a> {
    progress: &'a Progress,
    keys: &'a mut SourceKeys,
    unit: usize,
    width: usize,
    next: usize,
    sent: bool,
}

const FIRST_CHUNK_ROWS: usize = 256;
const MAX_CHUNK_ROWS: usize = 1024;

impl<'a> Chunks<'a> {
    pub fn new(progress: &'a Progress, keys: &'a mut SourceKeys, unit: usize, width: usize) -> Chunks<'a> {
        Chunks { progress, keys, unit, width, next: FIRST_CHUNK_ROWS, sent: false }
    }

    /// Room for the next chunk's values.
    pub fn capacity(&self) -> usize {
        self.next * self.width
    }

    pub fn full(&self, values: &[Value]) -> bool {
        values.len() >= self.next * self.width
    }

    /// At the end of the rows: the last chunk goes the way of the others. A result smaller
    /// than one chunk stays in `values`, to come with the response, so that a short query
    /// wakes the loop once.
    pub fn finish(&mut self, columns: &Columns, values: &mut Vec<Value>) {
        if self.sent {
            self.send(columns, values);
        }
    }

    /// Sends the values read so far (if any) and leaves `values` ready for the next chunk.
    pub fn send(&mut self, columns: &Columns, values: &mut Vec<Value>) {
        if values.is_empty() {
            return;
        }
        self.sent = true;
        self.next = (self.next * 2).min(MAX_CHUNK_ROWS);
        let chunk = std::mem::replace(values, Vec::with_capacity(self.next * self.width));
        let rows = RowSet { columns: columns.clone(), values: chunk, affected: 0 };
        self.keys.gather(self.unit, &rows);
        (self.progress.0)(self.unit, rows);
    }
}

/// The one tokio runtime: a single thread, started on first use, that does all PostgreSQL
/// I/O. One thread keeps a query's tasks (the caller's and the connection's) together, so a
/// round trip costs no hand-offs between runtime threads; the Python side, holding the GIL,
/// is the busier party anyway.
pub fn runtime() -> &'static tokio::runtime::Handle {
    static RT: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("cannot start the tokio runtime");
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("ormkit-tokio".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .expect("cannot start the tokio thread");
        handle
    })
}

/// One executed statement, as the query log shows it.
#[derive(Clone, Debug)]
pub struct LoggedQuery {
    pub sql: Arc<str>,
    pub micros: u64,
    /// Rows returned, or for a batch the number of times the statement ran.
    pub rows: u64,
}

/// The entries of one open query log.
pub type LogBuffer = Arc<std::sync::Mutex<Vec<LoggedQuery>>>;

/// Receives every statement an engine runs while a query log is open. Cheap when none is.
#[derive(Default)]
pub struct Observer {
    active: std::sync::atomic::AtomicUsize,
    logs: std::sync::Mutex<Vec<(u64, LogBuffer)>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Observer {
    pub fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    pub fn record(&self, sql: &Arc<str>, started: std::time::Instant, rows: u64) {
        if !self.is_active() {
            return;
        }
        let entry = LoggedQuery { sql: sql.clone(), micros: started.elapsed().as_micros() as u64, rows };
        for (_, log) in self.logs.lock().unwrap().iter() {
            log.lock().unwrap().push(entry.clone());
        }
    }

    pub fn open(&self, log: LogBuffer) -> u64 {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.logs.lock().unwrap().push((id, log));
        self.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        id
    }

    /// A scratch observer for work that may be abandoned and run again: what it records
    /// reaches this one only through `keep`.
    pub fn scratch(&self) -> (Observer, Option<LogBuffer>) {
        let scratch = Observer::default();
        if !self.is_active() {
            return (scratch, None);
        }
        let buf = LogBuffer::default();
        scratch.open(buf.clone());
        (scratch, Some(buf))
    }

    pub fn keep(&self, buf: Option<LogBuffer>) {
        let Some(buf) = buf else { return };
        for e in buf.lock().unwrap().drain(..) {
            for (_, log) in self.logs.lock().unwrap().iter() {
                log.lock().unwrap().push(e.clone());
            }
        }
    }

    pub fn close(&self, id: u64) {
        let mut logs = self.logs.lock().unwrap();
        let before = logs.len();
        logs.retain(|(i, _)| *i != id);
        if logs.len() < before {
            self.active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
