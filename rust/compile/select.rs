//! SELECT statements: model rows, projections, aggregates, and counts over subqueries.

use sea_query::{Alias, Expr, NullOrdering, Order, Query, SelectStatement};

use super::cond::{aggregate, col, condition};
use super::{marker_u64, render, Compiled, Dialect, OutCol, Transform};
use crate::errors::Result;
use crate::plan::{AggFn, ProjItem, Projection, SelectShape, Wrap};
use crate::schema::{self, ModelSchema};
use crate::value::ColType;

fn agg_out_type(schema: &ModelSchema, f: AggFn, c: Option<usize>) -> Option<ColType> {
    match (f, c) {
        (AggFn::Count, _) => Some(ColType::BigInteger),
        (AggFn::Avg, _) => Some(ColType::Float),
        (AggFn::Sum, Some(c)) => match schema.columns[c].ty {
            ColType::Integer | ColType::BigInteger | ColType::Bool => Some(ColType::BigInteger),
            ColType::Float => Some(ColType::Float),
            _ => None,
        },
        (AggFn::Min | AggFn::Max, Some(c)) => Some(schema.columns[c].ty),
        _ => None,
    }
}

fn agg_name(f: AggFn, c: Option<usize>, schema: &ModelSchema) -> String {
    let f = match f {
        AggFn::Count => "count",
        AggFn::Sum => "sum",
        AggFn::Avg => "avg",
        AggFn::Min => "min",
        AggFn::Max => "max",
    };
    match c {
        Some(c) => format!("{f}__{}", schema.columns[c].name),
        None => f.to_string(),
    }
}

/// Adds one ORDER BY term. NULLs sort as PostgreSQL sorts them (last ascending, first
/// descending) on both databases, so a query returns the same order everywhere.
pub(crate) fn order_by<C: sea_query::IntoColumnRef>(
    d: Dialect,
    q: &mut SelectStatement,
    column: C,
    nullable: bool,
    desc: bool,
) {
    let order = if desc { Order::Desc } else { Order::Asc };
    if nullable && d == Dialect::Sqlite {
        let nulls = if desc { NullOrdering::First } else { NullOrdering::Last };
        q.order_by_with_nulls(column, order, nulls);
    } else {
        q.order_by(column, order);
    }
}

pub(crate) fn build(d: Dialect, schema: &ModelSchema, s: &SelectShape, out: &mut Vec<OutCol>) -> SelectStatement {
    let mut q = Query::select();
    q.from(Alias::new(schema.table.as_str()));
    match &s.projection {
        Projection::Model => {
            for c in &schema.columns {
                q.column(Alias::new(c.name.as_str()));
                out.push(OutCol { name: c.name.clone(), ty: Some(c.ty) });
            }
        }
        Projection::Items(items) => {
            for it in items {
                match it {
                    ProjItem::Col(c) => {
                        let cs = &schema.columns[*c];
                        q.column(Alias::new(cs.name.as_str()));
                        out.push(OutCol { name: cs.name.clone(), ty: Some(cs.ty) });
                    }
                    ProjItem::Agg(f, c) => {
                        let name = agg_name(*f, *c, schema);
                        q.expr_as(aggregate(d, schema, *f, *c), Alias::new(name.as_str()));
                        out.push(OutCol { name, ty: agg_out_type(schema, *f, *c) });
                    }
                }
            }
            if items.is_empty() {
                q.expr(Expr::cust("1"));
                out.push(OutCol { name: "one".into(), ty: Some(ColType::Integer) });
            }
        }
    }
    if s.distinct {
        q.distinct();
    }
    if let Some(f) = &s.filter {
        q.cond_where(condition(d, schema, f));
    }
    if let Some(c) = s.deleted.cond(schema) {
        q.cond_where(condition(d, schema, &c));
    }
    for g in &s.group_by {
        q.add_group_by([col(schema, *g)]);
    }
    if let Some(h) = &s.having {
        q.cond_having(condition(d, schema, h));
    }
    for o in &s.order {
        let c = &schema.columns[o.col];
        order_by(d, &mut q, Alias::new(c.name.as_str()), c.nullable, o.desc);
    }
    match (s.limit, s.offset) {
        (Some(l), off) => {
            q.limit(marker_u64(l, Transform::None));
            if let Some(o) = off {
                q.offset(marker_u64(o, Transform::None));
            }
        }
        (None, Some(o)) => {
            if d == Dialect::Sqlite {
                q.limit(marker_u64(0, Transform::NoLimit));
            }
            q.offset(marker_u64(o, Transform::None));
        }
        (None, None) => {}
    }
    q
}

pub(crate) fn compile(d: Dialect, s: &SelectShape) -> Result<Compiled> {
    let schema = schema::get(s.model);
    let mut out = Vec::new();
    let inner = build(d, &schema, s, &mut out);
    let Some(wrap) = &s.wrap else {
        let (sql, binds) = render(d, &inner)?;
        return Ok(Compiled { sql: sql.into(), binds, out: out.into() });
    };
    let (expr, name, ty) = match wrap {
        Wrap::Count => (Expr::cust("COUNT(*)"), "count".to_string(), Some(ColType::BigInteger)),
        Wrap::Agg(f, c) => {
            let e = aggregate(d, &schema, *f, Some(*c));
            (e, agg_name(*f, Some(*c), &schema), agg_out_type(&schema, *f, Some(*c)))
        }
    };
    let mut outer = Query::select();
    outer.expr_as(expr, Alias::new(name.as_str())).from_subquery(inner, Alias::new("sub"));
    let (sql, binds) = render(d, &outer)?;
    Ok(Compiled { sql: sql.into(), binds, out: vec![OutCol { name, ty }].into() })
}
