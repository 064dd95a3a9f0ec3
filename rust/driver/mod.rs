//! Database drivers behind one request/response interface, so the layers above never know
//! which database they talk to.

pub mod sqlite;

use std::sync::Arc;

use crate::compile::OutCol;
use crate::rows::RowSet;
use crate::value::Value;

/// One unit of work for a connection.
#[derive(Debug)]
pub enum Request {
    /// Run one statement and return its rows (or, for writes, the affected count).
    Query { sql: Arc<str>, params: Vec<Value>, out: Option<Arc<[OutCol]>> },
    /// Run one statement once per parameter row, inside one transaction, collecting rows.
    Batch { sql: Arc<str>, rows: Vec<Vec<Value>>, out: Option<Arc<[OutCol]>> },
    /// Run statements in order inside one transaction (DDL).
    Script { statements: Vec<String> },
}

pub type Response = RowSet;
