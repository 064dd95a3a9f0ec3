//! Database drivers behind one request/response interface, so the layers above never know
//! which database they talk to.

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use crate::compile::Columns;
use crate::rows::RowSet;
use crate::value::Value;

/// One unit of work for a connection.
#[derive(Debug)]
pub enum Request {
    /// Run one statement and return its rows (or, for writes, the affected count).
    Query { sql: Arc<str>, params: Vec<Value>, columns: Option<Columns> },
    /// Run each statement once per parameter row, all inside one transaction, collecting
    /// the rows they return in order.
    Batch { groups: Vec<(Arc<str>, Vec<Vec<Value>>)>, columns: Option<Columns> },
    /// Run statements in order inside one transaction (DDL).
    Script { statements: Vec<String> },
}

pub type Response = RowSet;

/// The one tokio runtime, created on first use. Two workers: PostgreSQL I/O is light, and
/// the machine's other core belongs to Python.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ormkit-tokio")
            .enable_all()
            .build()
            .expect("cannot start the tokio runtime")
    })
}
