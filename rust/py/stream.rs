//! Streaming a model query in batches: a stepping statement on SQLite, a portal inside a
//! transaction on PostgreSQL. Each batch is fetched when Python asks for it, so memory
//! holds one batch at a time; dropping the stream ends the statement and frees the
//! connection.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

use super::engine::EngineCore;
use super::identity::IdentityMap;
use super::model::ModelHandle;
use crate::bridge::{self, Completer, Payload, Pending};
use crate::compile::Columns;
use crate::errors::{Error, Result};
use crate::rows::RowSet;
use crate::value::Value;

type BatchFinish = Box<dyn FnOnce(Python<'_>, RowSet) -> PyResult<Py<PyAny>> + Send>;
type Ask = (Completer, BatchFinish);

enum Channel {
    Sqlite(std::sync::mpsc::Sender<Ask>),
    Postgres(tokio::sync::mpsc::UnboundedSender<Ask>),
}

#[pyclass(module = "ormkit._ormkit")]
pub struct StreamCore {
    channel: Mutex<Option<Channel>>,
    model: Py<ModelHandle>,
    /// The session's identity map: streamed objects are tracked like any others (weakly, so
    /// memory still holds about one batch).
    identity: Option<Py<IdentityMap>>,
    /// The statement's task, when the stream was made with no event loop running: it
    /// starts with the first batch asked for.
    deferred: Mutex<Option<crate::bridge::Task>>,
}

fn deliver(completer: Completer, finish: BatchFinish, rows: Result<RowSet>) {
    completer.complete(rows.map(|r| Box::new(move |py: Python<'_>| finish(py, r)) as Payload));
}

/// Serves batches of one SQLite statement until the asking side hangs up.
fn sqlite_stream(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value],
    columns: &Columns,
    batch: usize,
    asks: std::sync::mpsc::Receiver<Ask>,
) {
    let mut stmt = match crate::driver::sqlite::prepare_bound(conn, sql, params) {
        Ok(s) => s,
        Err(e) => {
            while let Ok((c, f)) = asks.recv() {
                deliver(c, f, Err(e.clone()));
            }
            return;
        }
    };
    let mut rows = stmt.raw_query();
    let mut finished = false;
    while let Ok((completer, finish)) = asks.recv() {
        if finished {
            deliver(completer, finish, Ok(RowSet { columns: columns.clone(), ..Default::default() }));
            continue;
        }
        let mut out = RowSet { columns: columns.clone(), ..Default::default() };
        let result = (|| -> Result<()> {
            for _ in 0..batch {
                match rows.next()? {
                    Some(row) => crate::driver::sqlite::decode_row(row, &columns.types, &mut out.values)?,
                    None => {
                        finished = true;
                        break;
                    }
                }
            }
            Ok(())
        })();
        deliver(completer, finish, result.map(|_| out));
    }
}

impl StreamCore {
    pub fn start(
        engine: &EngineCore,
        model: Py<ModelHandle>,
        sql: Arc<str>,
        params: Vec<Value>,
        columns: Columns,
        batch: usize,
    ) -> PyResult<StreamCore> {
        let identity = Python::attach(|py| engine.identity(py));
        let mut deferred = None;
        let channel = match engine.backend_for_stream() {
            super::engine::StreamTarget::Sqlite(pool) => {
                let (tx, rx) = std::sync::mpsc::channel::<Ask>();
                pool.submit(Box::new(move |conn| sqlite_stream(conn, &sql, &params, &columns, batch, rx)))?;
                Channel::Sqlite(tx)
            }
            super::engine::StreamTarget::Postgres(pool) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Ask>();
                let task = async move {
                    let mut lease = match pool.acquire().await {
                        Ok(l) => l,
                        Err(e) => {
                            while let Some((c, f)) = rx.recv().await {
                                deliver(c, f, Err(e.clone()));
                            }
                            return;
                        }
                    };
                    let served = crate::driver::postgres::stream(
                        lease.conn(),
                        &sql,
                        &params,
                        &columns,
                        batch,
                        &mut rx,
                        |(c, f), rows| deliver(c, f, rows),
                    )
                    .await;
                    if served.is_err() {
                        lease.discard();
                    }
                };
                deferred = Python::attach(|py| crate::bridge::spawn(py, Box::pin(task)))?;
                Channel::Postgres(tx)
            }
            super::engine::StreamTarget::Pinned => {
                return Err(Error::interface(
                    "stream() runs on a connection of its own; call it outside session.begin()",
                )
                .into())
            }
        };
        Ok(StreamCore { channel: Mutex::new(Some(channel)), model, identity, deferred: Mutex::new(deferred) })
    }
}

#[pymethods]
impl StreamCore {
    /// The next batch of instances; an empty list when the rows are exhausted.
    fn next_batch(&self, py: Python<'_>) -> PyResult<Pending> {
        let deferred = self.deferred.lock().unwrap().take();
        if let Some(task) = deferred {
            if let Some(task) = bridge::spawn(py, task)? {
                *self.deferred.lock().unwrap() = Some(task);
                return Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "a stream is read inside a running event loop (async for)",
                ));
            }
        }
        let (pending, completer) = bridge::pending();
        let model = self.model.clone_ref(py);
        let identity = self.identity.as_ref().map(|m| m.clone_ref(py));
        let finish: BatchFinish = Box::new(move |py, rows| {
            Ok(model.get().instances_in(py, rows, identity.as_ref().map(|m| m.get()))?.into_any().unbind())
        });
        let channel = self.channel.lock().unwrap();
        let sent = match channel.as_ref() {
            Some(Channel::Sqlite(tx)) => tx.send((completer, finish)).is_ok(),
            Some(Channel::Postgres(tx)) => tx.send((completer, finish)).is_ok(),
            None => false,
        };
        if !sent {
            return Err(Error::interface("the stream is closed").into());
        }
        Ok(pending)
    }

    /// Ends the statement and gives the connection back.
    fn close(&self) {
        self.channel.lock().unwrap().take();
    }
}
