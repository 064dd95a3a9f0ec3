//! Condition trees and lookups to SQL, with the per-dialect forms of pattern and JSON lookups.

use sea_query::{Alias, Condition, Expr, ExprTrait};

use super::{custom, marker, Dialect, Transform};
use crate::plan::{AggFn, Cond, JsonKind, Op, Slot, Target};
use crate::schema::ModelSchema;
use crate::value::ColType;

pub(crate) fn col(schema: &ModelSchema, i: usize) -> Expr {
    Expr::col(Alias::new(schema.columns[i].name.as_str()))
}

pub(crate) fn condition(d: Dialect, schema: &ModelSchema, c: &Cond) -> Condition {
    match c {
        Cond::And(items) if items.is_empty() => Condition::all().add(constant(true)),
        Cond::Or(items) if items.is_empty() => Condition::all().add(constant(false)),
        Cond::And(items) => items.iter().fold(Condition::all(), |acc, i| acc.add(condition(d, schema, i))),
        Cond::Or(items) => items.iter().fold(Condition::any(), |acc, i| acc.add(condition(d, schema, i))),
        Cond::Not(inner) => Condition::all().add(condition(d, schema, inner)).not(),
        Cond::Const(b) => Condition::all().add(constant(*b)),
        Cond::Leaf { target, op, slots } => Condition::all().add(leaf(d, schema, target, *op, slots)),
    }
}

fn constant(b: bool) -> Expr {
    Expr::cust(if b { "1 = 1" } else { "1 = 0" })
}

pub(crate) fn aggregate(d: Dialect, schema: &ModelSchema, f: AggFn, c: Option<usize>) -> Expr {
    let Some(c) = c else {
        return Expr::cust("COUNT(*)");
    };
    let e = col(schema, c);
    let ty = schema.columns[c].ty;
    match (f, d) {
        (AggFn::Count, _) => custom(d, "COUNT({0})", &[e]),
        (AggFn::Avg, Dialect::Postgres) => custom(d, "CAST(AVG({0}) AS DOUBLE PRECISION)", &[e]),
        (AggFn::Avg, Dialect::Sqlite) => custom(d, "AVG({0})", &[e]),
        // PostgreSQL sums integers as NUMERIC; keep an integer result an integer.
        (AggFn::Sum, Dialect::Postgres) if matches!(ty, ColType::Integer | ColType::BigInteger | ColType::Bool) => {
            custom(d, "CAST(SUM({0}) AS BIGINT)", &[e])
        }
        (AggFn::Sum, _) => custom(d, "SUM({0})", &[e]),
        (AggFn::Min, _) => custom(d, "MIN({0})", &[e]),
        (AggFn::Max, _) => custom(d, "MAX({0})", &[e]),
    }
}

/// The SQLite JSON path for the key slots: `'$."k1"."k2"'`, built from bound keys.
fn sqlite_path(keys: usize) -> String {
    let mut p = String::from("'$.\"' || {1} || '\"'");
    for i in 1..keys {
        p.push_str(&format!(" || '.\"' || {{{}}} || '\"'", i + 1));
    }
    p
}

fn pg_keys(keys: usize) -> String {
    (1..=keys).map(|i| format!("{{{i}}}")).collect::<Vec<_>>().join(", ")
}

/// The left-hand side of a JSON-path comparison. Values of another JSON type than the
/// comparand read as NULL, so both databases agree whatever the documents hold.
fn json_lhs(d: Dialect, schema: &ModelSchema, c: usize, key_slots: &[Slot], kind: Option<JsonKind>) -> Expr {
    let mut exprs = vec![col(schema, c)];
    exprs.extend(key_slots.iter().map(|s| marker(*s, Transform::None)));
    let n = key_slots.len();
    let template = match d {
        Dialect::Sqlite => {
            let p = sqlite_path(n);
            let types = match kind {
                None => return custom(d, &format!("json_extract({{0}}, {p})"), &exprs),
                Some(JsonKind::Text) => "= 'text'",
                Some(JsonKind::Int) | Some(JsonKind::Float) => "IN ('integer', 'real')",
                Some(JsonKind::Bool) => "IN ('true', 'false')",
            };
            format!("(CASE WHEN json_type({{0}}, {p}) {types} THEN json_extract({{0}}, {p}) END)")
        }
        Dialect::Postgres => {
            let k = pg_keys(n);
            let e = format!("jsonb_extract_path({{0}}, {k})");
            let t = format!("jsonb_extract_path_text({{0}}, {k})");
            match kind {
                None => t,
                Some(JsonKind::Text) => {
                    format!("(CASE WHEN jsonb_typeof({e}) = 'string' THEN {t} END)")
                }
                Some(JsonKind::Int) => {
                    format!("(CASE WHEN jsonb_typeof({e}) = 'number' THEN CAST({t} AS NUMERIC) END)")
                }
                Some(JsonKind::Float) => {
                    format!("(CASE WHEN jsonb_typeof({e}) = 'number' THEN CAST({t} AS DOUBLE PRECISION) END)")
                }
                Some(JsonKind::Bool) => {
                    format!("(CASE WHEN jsonb_typeof({e}) = 'boolean' THEN CAST({t} AS BOOLEAN) END)")
                }
            }
        }
    };
    custom(d, &template, &exprs)
}

fn leaf(d: Dialect, schema: &ModelSchema, target: &Target, op: Op, slots: &[Slot]) -> Expr {
    let (lhs, rest, json_kind) = match target {
        Target::Column(c) => (col(schema, *c), slots, None),
        Target::Json { col: c, keys, kind } => {
            let (keys, rest) = slots.split_at(*keys as usize);
            let kind_for_lhs = if matches!(op, Op::IsNull(_)) { None } else { Some(*kind) };
            (json_lhs(d, schema, *c, keys, kind_for_lhs), rest, Some(*kind))
        }
        Target::Agg(f, c) => (aggregate(d, schema, *f, *c), slots, None),
    };
    // PostgreSQL cannot infer a parameter's type inside the JSON expressions; say it.
    let val = |i: usize, t: Transform| -> Expr {
        let m = marker(rest[i], t);
        match (d, json_kind) {
            (Dialect::Postgres, Some(JsonKind::Text)) => custom(d, "CAST({0} AS TEXT)", &[m]),
            (Dialect::Postgres, Some(JsonKind::Int)) => custom(d, "CAST({0} AS BIGINT)", &[m]),
            (Dialect::Postgres, Some(JsonKind::Float)) => custom(d, "CAST({0} AS DOUBLE PRECISION)", &[m]),
            (Dialect::Postgres, Some(JsonKind::Bool)) => custom(d, "CAST({0} AS BOOLEAN)", &[m]),
            _ => m,
        }
    };
    let pattern = |sqlite_op: &str, pg_op: &str, sqlite_t: Transform, pg_t: Transform| -> Expr {
        let (op, t) = match d {
            Dialect::Sqlite => (sqlite_op, sqlite_t),
            Dialect::Postgres => (pg_op, pg_t),
        };
        let escape = if op == "GLOB" { "" } else { " ESCAPE '\\'" };
        custom(d, &format!("{{0}} {op} {{1}}{escape}"), &[lhs.clone(), val(0, t)])
    };
    use Transform as T;
    match op {
        Op::Eq => lhs.eq(val(0, T::None)),
        Op::Ne => lhs.ne(val(0, T::None)),
        Op::Gt => lhs.gt(val(0, T::None)),
        Op::Gte => lhs.gte(val(0, T::None)),
        Op::Lt => lhs.lt(val(0, T::None)),
        Op::Lte => lhs.lte(val(0, T::None)),
        Op::In(0) => constant(false),
        Op::NotIn(0) => constant(true),
        Op::In(n) => lhs.is_in((0..n as usize).map(|i| val(i, T::None))),
        Op::NotIn(n) => lhs.is_not_in((0..n as usize).map(|i| val(i, T::None))),
        Op::IsNull(true) => lhs.is_null(),
        Op::IsNull(false) => lhs.is_not_null(),
        Op::Range => lhs.between(val(0, T::None), val(1, T::None)),
        Op::Like => pattern("LIKE", "LIKE", T::None, T::None),
        // SQLite's LIKE already ignores ASCII case; PostgreSQL needs ILIKE.
        Op::ILike => pattern("LIKE", "ILIKE", T::None, T::None),
        Op::IExact => pattern("LIKE", "ILIKE", T::LikeExact, T::LikeExact),
        // SQLite's LIKE ignores case, so the case-sensitive lookups use GLOB there.
        Op::Contains => pattern("GLOB", "LIKE", T::GlobContains, T::LikeContains),
        Op::StartsWith => pattern("GLOB", "LIKE", T::GlobStarts, T::LikeStarts),
        Op::EndsWith => pattern("GLOB", "LIKE", T::GlobEnds, T::LikeEnds),
        Op::IContains => pattern("LIKE", "ILIKE", T::LikeContains, T::LikeContains),
        Op::IStartsWith => pattern("LIKE", "ILIKE", T::LikeStarts, T::LikeStarts),
        Op::IEndsWith => pattern("LIKE", "ILIKE", T::LikeEnds, T::LikeEnds),
    }
}
