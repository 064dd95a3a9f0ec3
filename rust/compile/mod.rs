//! Plans to SQL: each statement kind is turned into a sea-query statement and rendered for
//! one dialect. The result is cached per dialect by shape, so a shape is compiled once.
//!
//! Values never reach sea-query. Every place a value goes gets a *marker* (the slot number
//! and how the value must be transformed), and after rendering the markers are read back in
//! placeholder order into [`Compiled::binds`].

mod cond;
pub mod ddl;
pub mod load;
mod select;
mod write;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use sea_query::{Expr, PostgresQueryBuilder, QueryStatementWriter, SqliteQueryBuilder, Value as SqValue};

use crate::errors::{Error, Result};
use crate::plan::{Slot, Statement};
use crate::value::{ColType, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// How a bound value is rewritten for the place it is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Transform {
    None = 0,
    /// `%v%`, `v%`, `%v`, `v` with LIKE wildcards in `v` escaped by backslash.
    LikeContains = 1,
    LikeStarts = 2,
    LikeEnds = 3,
    LikeExact = 4,
    /// `*v*`, `v*`, `*v` with GLOB wildcards in `v` escaped (SQLite's case-sensitive match).
    GlobContains = 5,
    GlobStarts = 6,
    GlobEnds = 7,
    /// Not a plan value: SQLite's `LIMIT -1` (no limit), needed before a bare OFFSET.
    NoLimit = 8,
}

impl Transform {
    fn from_u8(v: u8) -> Option<Transform> {
        Some(match v {
            0 => Transform::None,
            1 => Transform::LikeContains,
            2 => Transform::LikeStarts,
            3 => Transform::LikeEnds,
            4 => Transform::LikeExact,
            5 => Transform::GlobContains,
            6 => Transform::GlobStarts,
            7 => Transform::GlobEnds,
            8 => Transform::NoLimit,
            _ => return None,
        })
    }

    pub fn apply(self, v: &Value) -> Value {
        let Value::Text(s) = v else {
            return match self {
                Transform::NoLimit => Value::Int(-1),
                _ => v.clone(),
            };
        };
        match self {
            Transform::None => v.clone(),
            Transform::LikeContains => Value::Text(format!("%{}%", like_escape(s))),
            Transform::LikeStarts => Value::Text(format!("{}%", like_escape(s))),
            Transform::LikeEnds => Value::Text(format!("%{}", like_escape(s))),
            Transform::LikeExact => Value::Text(like_escape(s)),
            Transform::GlobContains => Value::Text(format!("*{}*", glob_escape(s))),
            Transform::GlobStarts => Value::Text(format!("{}*", glob_escape(s))),
            Transform::GlobEnds => Value::Text(format!("*{}", glob_escape(s))),
            Transform::NoLimit => Value::Int(-1),
        }
    }
}

fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '*' => out.push_str("[*]"),
            '?' => out.push_str("[?]"),
            '[' => out.push_str("[[]"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bind {
    pub slot: Slot,
    pub transform: Transform,
}

/// How to read one output column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutCol {
    pub name: String,
    /// `None`: whatever the database returns (aggregates of mixed type, raw SQL).
    pub ty: Option<ColType>,
}

/// Names and read types of a statement's output columns, cheap to share with each result.
#[derive(Clone, Debug, Default)]
pub struct Columns {
    pub names: Arc<[String]>,
    pub types: Arc<[Option<ColType>]>,
}

impl From<Vec<OutCol>> for Columns {
    fn from(out: Vec<OutCol>) -> Self {
        Columns {
            names: out.iter().map(|c| c.name.clone()).collect::<Vec<_>>().into(),
            types: out.iter().map(|c| c.ty).collect::<Vec<_>>().into(),
        }
    }
}

#[derive(Debug)]
pub struct Compiled {
    pub sql: Arc<str>,
    pub binds: Vec<Bind>,
    pub out: Columns,
}

impl Compiled {
    /// The bound values for one execution, in placeholder order.
    pub fn params(&self, values: &[Value]) -> Vec<Value> {
        Self::params_of(&self.binds, values)
    }

    pub fn params_of(binds: &[Bind], values: &[Value]) -> Vec<Value> {
        binds
            .iter()
            .map(|b| match b.transform {
                Transform::NoLimit => Value::Int(-1),
                Transform::None => values[b.slot as usize].clone(),
                t => t.apply(&values[b.slot as usize]),
            })
            .collect()
    }
}

/// The marker standing in for slot `slot` until rendering is done.
pub(crate) fn marker(slot: Slot, t: Transform) -> Expr {
    Expr::val(SqValue::BigInt(Some(((slot as i64) << 8) | t as i64)))
}

pub(crate) fn marker_u64(slot: Slot, t: Transform) -> u64 {
    ((slot as u64) << 8) | t as u64
}

fn read_markers(values: sea_query::Values) -> Result<Vec<Bind>> {
    values
        .0
        .into_iter()
        .map(|v| {
            let raw = match v {
                SqValue::BigInt(Some(n)) => n as u64,
                SqValue::BigUnsigned(Some(n)) => n,
                other => return Err(Error::internal(format!("compiler emitted a literal value {other:?}"))),
            };
            let transform = Transform::from_u8((raw & 0xff) as u8)
                .ok_or_else(|| Error::internal("compiler emitted an unknown marker"))?;
            Ok(Bind { slot: (raw >> 8) as Slot, transform })
        })
        .collect()
}

pub(crate) fn render<S: QueryStatementWriter>(d: Dialect, stmt: &S) -> Result<(String, Vec<Bind>)> {
    let (sql, values) = match d {
        Dialect::Sqlite => stmt.build(SqliteQueryBuilder),
        Dialect::Postgres => stmt.build(PostgresQueryBuilder),
    };
    Ok((sql, read_markers(values)?))
}

/// A custom SQL fragment written once for both dialects: `{0}`, `{1}` name the expressions,
/// may repeat, and become `?` (SQLite, one expression per use) or `$n` (PostgreSQL).
pub(crate) fn custom(d: Dialect, template: &str, exprs: &[Expr]) -> Expr {
    let mut out = String::with_capacity(template.len() + 8);
    let mut used = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map(|c| open + c).expect("unclosed {} in template");
        let idx: usize = rest[open + 1..close].parse().expect("bad index in template");
        match d {
            Dialect::Sqlite => {
                out.push('?');
                used.push(exprs[idx].clone());
            }
            Dialect::Postgres => out.push_str(&format!("${}", idx + 1)),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    let exprs = match d {
        Dialect::Sqlite => used,
        Dialect::Postgres => exprs.to_vec(),
    };
    Expr::cust_with_exprs(out, exprs)
}

type CacheMap = HashMap<Statement, Arc<Compiled>>;

fn cache(d: Dialect) -> &'static RwLock<CacheMap> {
    static SQLITE: OnceLock<RwLock<CacheMap>> = OnceLock::new();
    static POSTGRES: OnceLock<RwLock<CacheMap>> = OnceLock::new();
    let cell = match d {
        Dialect::Sqlite => &SQLITE,
        Dialect::Postgres => &POSTGRES,
    };
    cell.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Past this many shapes the cache starts over; shapes are few in real programs, so this
/// only guards against a program that generates unbounded `IN` list lengths.
const CACHE_LIMIT: usize = 4096;

/// `compile`, kept in `cell` by a caller that runs the same statement again and again (a
/// query object, a model's `get`): the shape cache's hashing and locking are then paid once.
pub fn compile_in(
    cell: &std::sync::OnceLock<Arc<Compiled>>,
    d: Dialect,
    stmt: impl FnOnce() -> Statement,
) -> Result<Arc<Compiled>> {
    if let Some(c) = cell.get() {
        return Ok(c.clone());
    }
    let c = compile(d, &stmt())?;
    Ok(cell.get_or_init(|| c).clone())
}

/// Compiles a statement, or returns the cached SQL for its shape.
pub fn compile(d: Dialect, stmt: &Statement) -> Result<Arc<Compiled>> {
    if let Some(c) = cache(d).read().unwrap().get(stmt) {
        return Ok(c.clone());
    }
    let compiled = Arc::new(compile_uncached(d, stmt)?);
    let mut w = cache(d).write().unwrap();
    if w.len() >= CACHE_LIMIT {
        w.clear();
    }
    w.insert(stmt.clone(), compiled.clone());
    Ok(compiled)
}

pub fn compile_uncached(d: Dialect, stmt: &Statement) -> Result<Compiled> {
    match stmt {
        Statement::Select(s) => select::compile(d, s),
        Statement::Insert(s) => write::insert(d, s),
        Statement::Update(s) => write::update(d, s),
        Statement::Delete(s) => write::delete(d, s),
        Statement::Upsert(s) => write::upsert(d, s),
    }
}

#[cfg(test)]
mod tests;
