//! INSERT, UPDATE and DELETE statements.

use sea_query::{Alias, OnConflict, Query, ReturningClause};

use super::cond::condition;
use super::{custom, marker, render, Columns, Compiled, Dialect, OutCol, Transform};
use crate::errors::{Error, Result};
use crate::plan::{DeleteShape, InsertShape, UpdateShape, UpsertShape};
use crate::schema::{self, ModelSchema};
use crate::value::ColType;

fn returning(schema: &ModelSchema, cols: &[usize]) -> (ReturningClause, Vec<OutCol>) {
    let names: Vec<Alias> = cols.iter().map(|c| Alias::new(schema.columns[*c].name.as_str())).collect();
    let out = cols
        .iter()
        .map(|c| OutCol { name: schema.columns[*c].name.clone(), ty: Some(schema.columns[*c].ty) })
        .collect();
    (Query::returning().columns(names), out)
}

pub(crate) fn insert(d: Dialect, s: &InsertShape) -> Result<Compiled> {
    let schema = schema::get(s.model);
    let mut q = Query::insert();
    q.into_table(Alias::new(schema.table.as_str()));
    let ncols = s.cols.len() as u32;
    if s.arrays {
        if d != Dialect::Postgres || ncols == 0 {
            return Err(Error::internal("array inserts are for PostgreSQL rows with columns"));
        }
        // SELECT unnest($1), unnest($2), ...: set-returning functions in one select list
        // advance together, giving one row per array position.
        let mut sel = Query::select();
        for (i, c) in s.cols.iter().enumerate() {
            let template = format!("unnest(CAST({{0}} AS {}[]))", pg_type(schema.columns[*c].ty));
            sel.expr(custom(d, &template, &[marker(i as u32, Transform::None)]));
        }
        q.columns(s.cols.iter().map(|c| Alias::new(schema.columns[*c].name.as_str())));
        q.select_from(sel).map_err(|e| Error::internal(e.to_string()))?;
    } else if ncols == 0 {
        // Every column takes its default: only the primary key is generated.
        q.or_default_values();
    } else {
        q.columns(s.cols.iter().map(|c| Alias::new(schema.columns[*c].name.as_str())));
        for r in 0..s.rows {
            let row = (0..ncols).map(|i| marker(r * ncols + i, Transform::None));
            q.values(row).map_err(|e| Error::internal(e.to_string()))?;
        }
    }
    let mut out = vec![];
    if !s.returning.is_empty() {
        let (clause, o) = returning(&schema, &s.returning);
        q.returning(clause);
        out = o;
    }
    let (sql, binds) = render(d, &q)?;
    Ok(Compiled { sql: sql.into(), binds, out: out.into() })
}

pub(crate) fn upsert(d: Dialect, s: &UpsertShape) -> Result<Compiled> {
    let schema = schema::get(s.model);
    let name = |c: usize| Alias::new(schema.columns[c].name.as_str());
    let mut q = Query::insert();
    q.into_table(Alias::new(schema.table.as_str()));
    q.columns(s.cols.iter().map(|c| name(*c)));
    q.values((0..s.cols.len()).map(|i| marker(i as u32, Transform::None)))
        .map_err(|e| Error::internal(e.to_string()))?;
    let mut on_conflict = OnConflict::column(name(s.conflict));
    if s.update.is_empty() {
        // Nothing to change: set the key to itself, so RETURNING still yields the stored row.
        on_conflict.update_column(name(s.conflict));
    } else {
        on_conflict.update_columns(s.update.iter().map(|c| name(*c)));
    }
    q.on_conflict(on_conflict);
    let all: Vec<usize> = (0..schema.columns.len()).collect();
    let (clause, out) = returning(&schema, &all);
    q.returning(clause);
    let (sql, binds) = render(d, &q)?;
    Ok(Compiled { sql: sql.into(), binds, out: out.into() })
}

/// PostgreSQL's name for a column type, for casts.
pub(crate) fn pg_type(t: ColType) -> &'static str {
    match t {
        ColType::Integer => "INTEGER",
        ColType::BigInteger => "BIGINT",
        ColType::Float => "DOUBLE PRECISION",
        ColType::Text => "TEXT",
        ColType::Bool => "BOOLEAN",
        ColType::Bytes => "BYTEA",
        ColType::DateTime => "TIMESTAMP",
        ColType::DateTimeTz => "TIMESTAMPTZ",
        ColType::Date => "DATE",
        ColType::Time => "TIME",
        ColType::Json => "JSONB",
    }
}

pub(crate) fn update(d: Dialect, s: &UpdateShape) -> Result<Compiled> {
    let schema = schema::get(s.model);
    let mut q = Query::update();
    q.table(Alias::new(schema.table.as_str()));
    for (c, slot) in &s.sets {
        q.value(Alias::new(schema.columns[*c].name.as_str()), marker(*slot, Transform::None));
    }
    if let Some(f) = &s.filter {
        q.cond_where(condition(d, &schema, f));
    }
    let (sql, binds) = render(d, &q)?;
    Ok(Compiled { sql: sql.into(), binds, out: Columns::default() })
}

pub(crate) fn delete(d: Dialect, s: &DeleteShape) -> Result<Compiled> {
    let schema = schema::get(s.model);
    let mut q = Query::delete();
    q.from_table(Alias::new(schema.table.as_str()));
    if let Some(f) = &s.filter {
        q.cond_where(condition(d, &schema, f));
    }
    let (sql, binds) = render(d, &q)?;
    Ok(Compiled { sql: sql.into(), binds, out: Columns::default() })
}
