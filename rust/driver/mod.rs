//! Database drivers behind one request/response interface, so the layers above never know
//! which database they talk to.

pub mod sqlite;

use std::sync::Arc;

use crate::compile::Columns;
use crate::rows::RowSet;
use crate::value::Value;

/// One unit of work for a connection.
#[derive(Debug)]
pub enum Request {
    /// Run one statement and return its rows (or, for writes, the affected count).
    Query {
        sql: Arc<str>,
        params: Vec<Value>,
        columns: Option<Columns>,
    },
    /// Run each statement once per parameter row, all inside one transaction, collecting
    /// the rows they return in order.
    Batch {
        groups: Vec<(Arc<str>, Vec<Vec<Value>>)>,
        columns: Option<Columns>,
    },
    /// Run statements in order inside one transaction (DDL).
    Script { statements: Vec<String> },
}

pub type Response = RowSet;
