//! INSERT, UPDATE and DELETE statements.

use sea_query::{Alias, Query, ReturningClause};

use super::cond::condition;
use super::{marker, render, Columns, Compiled, Dialect, OutCol, Transform};
use crate::errors::{Error, Result};
use crate::plan::{DeleteShape, InsertShape, UpdateShape};
use crate::schema::{self, ModelSchema};

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
    if ncols == 0 {
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
