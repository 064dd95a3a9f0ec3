//! Django-style lookups (`age__gte`, `metadata__settings__theme`) parsed against a model.
//!
//! Parsing happens before any SQL exists, so a misspelt field or operator fails with a
//! `FieldError` that names the model, the field and the valid choices.

use super::{Cond, JsonKind, Op, Params, Target};
use crate::errors::{Error, Result};
use crate::schema::ModelSchema;
use crate::value::{ColType, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupOp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    NotIn,
    Like,
    ILike,
    Contains,
    IContains,
    StartsWith,
    IStartsWith,
    EndsWith,
    IEndsWith,
    IExact,
    IsNull,
    Range,
}

pub const LOOKUP_NAMES: &[(&str, LookupOp)] = &[
    ("exact", LookupOp::Eq),
    ("eq", LookupOp::Eq),
    ("ne", LookupOp::Ne),
    ("gt", LookupOp::Gt),
    ("gte", LookupOp::Gte),
    ("lt", LookupOp::Lt),
    ("lte", LookupOp::Lte),
    ("in", LookupOp::In),
    ("notin", LookupOp::NotIn),
    ("like", LookupOp::Like),
    ("ilike", LookupOp::ILike),
    ("contains", LookupOp::Contains),
    ("icontains", LookupOp::IContains),
    ("startswith", LookupOp::StartsWith),
    ("istartswith", LookupOp::IStartsWith),
    ("endswith", LookupOp::EndsWith),
    ("iendswith", LookupOp::IEndsWith),
    ("iexact", LookupOp::IExact),
    ("isnull", LookupOp::IsNull),
    ("range", LookupOp::Range),
];

fn lookup_op(name: &str) -> Option<LookupOp> {
    LOOKUP_NAMES.iter().find(|(n, _)| *n == name).map(|(_, op)| *op)
}

fn lookup_list() -> String {
    LOOKUP_NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

impl LookupOp {
    fn is_pattern(self) -> bool {
        matches!(
            self,
            LookupOp::Like
                | LookupOp::ILike
                | LookupOp::Contains
                | LookupOp::IContains
                | LookupOp::StartsWith
                | LookupOp::IStartsWith
                | LookupOp::EndsWith
                | LookupOp::IEndsWith
                | LookupOp::IExact
        )
    }
}

/// A parsed lookup key.
#[derive(Clone, Debug)]
pub struct Lookup {
    pub col: usize,
    pub json_keys: Vec<String>,
    pub op: LookupOp,
    /// The key as the user wrote it, for messages.
    pub key: String,
}

/// What Python value the operand must be converted from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A value of the column's type.
    Column(ColType),
    /// A JSON scalar: str, int, float, bool (or None).
    JsonScalar,
    /// A str pattern.
    Text,
    /// A bool flag (`isnull`).
    Flag,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    One,
    List,
    Pair,
}

impl Lookup {
    pub fn parse(schema: &ModelSchema, key: &str) -> Result<Lookup> {
        let mut parts = key.split("__");
        let field = parts.next().unwrap_or_default();
        let col = schema.require_column(field)?;
        let rest: Vec<&str> = parts.collect();
        let ty = schema.columns[col].ty;
        let (json_keys, op) = if ty == ColType::Json {
            match rest.split_last() {
                None => (vec![], LookupOp::Eq),
                Some((last, init)) => match lookup_op(last) {
                    Some(op) => (init.iter().map(|s| s.to_string()).collect(), op),
                    None => (rest.iter().map(|s| s.to_string()).collect(), LookupOp::Eq),
                },
            }
        } else {
            match rest.as_slice() {
                [] => (vec![], LookupOp::Eq),
                [name] => match lookup_op(name) {
                    Some(op) => (vec![], op),
                    None => {
                        return Err(Error::field(format!(
                            "{}.{}: unknown lookup {:?} in {:?}; valid lookups are: {}",
                            schema.name,
                            field,
                            name,
                            key,
                            lookup_list()
                        )))
                    }
                },
                _ => {
                    return Err(Error::field(format!(
                        "{}.{}: {:?} is not a valid lookup; {} is a {} column, so only one lookup may follow it (one of: {})",
                        schema.name,
                        field,
                        key,
                        field,
                        ty.python_name(),
                        lookup_list()
                    )))
                }
            }
        };
        for k in &json_keys {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(Error::field(format!(
                    "{}.{}: JSON key {:?} in {:?} must be letters, digits, '_' or '-'",
                    schema.name, field, k, key
                )));
            }
        }
        if json_keys.len() > 32 {
            return Err(Error::field(format!("{}.{}: JSON path {:?} is too deep", schema.name, field, key)));
        }
        let lk = Lookup { col, json_keys, op, key: key.to_string() };
        let text_like = ty == ColType::Text || (ty == ColType::Json && !lk.json_keys.is_empty());
        if op.is_pattern() && !text_like {
            return Err(Error::field(format!(
                "{}.{}: the {:?} lookup needs a text column, but {} is {}",
                schema.name,
                field,
                rest.last().unwrap_or(&""),
                field,
                ty.python_name()
            )));
        }
        if ty == ColType::Json
            && lk.json_keys.is_empty()
            && !matches!(op, LookupOp::Eq | LookupOp::Ne | LookupOp::IsNull)
        {
            return Err(Error::field(format!(
                "{}.{}: a whole JSON column supports exact, ne and isnull; name a key path for other lookups (e.g. {}__key__gt=1)",
                schema.name, field, field
            )));
        }
        Ok(lk)
    }

    pub fn expect(&self, schema: &ModelSchema) -> (Expect, Arity) {
        let arity = match self.op {
            LookupOp::In | LookupOp::NotIn => Arity::List,
            LookupOp::Range => Arity::Pair,
            _ => Arity::One,
        };
        let ty = schema.columns[self.col].ty;
        let expect = if self.op == LookupOp::IsNull {
            Expect::Flag
        } else if self.op.is_pattern() {
            Expect::Text
        } else if !self.json_keys.is_empty() {
            Expect::JsonScalar
        } else {
            Expect::Column(ty)
        };
        (expect, arity)
    }

    /// Builds the condition leaf, storing path keys and operands as bound values.
    pub fn leaf(&self, schema: &ModelSchema, operands: Vec<Value>, params: &mut Params) -> Result<Cond> {
        let name = || format!("{}.{}", schema.name, schema.columns[self.col].name);
        let mut flag = None;
        if self.op == LookupOp::IsNull {
            match operands.as_slice() {
                [Value::Bool(b)] => flag = Some(*b),
                _ => return Err(Error::value_type(format!("{}: {} expects True or False", name(), self.key))),
            }
        }
        // `field=None` and `field__ne=None` mean IS NULL / IS NOT NULL, as in Django.
        let single = !matches!(self.op, LookupOp::In | LookupOp::NotIn | LookupOp::Range);
        if single && operands.len() == 1 && operands[0].is_null() {
            match self.op {
                LookupOp::Eq => flag = Some(true),
                LookupOp::Ne => flag = Some(false),
                LookupOp::IsNull => {}
                _ => {
                    return Err(Error::value_type(format!(
                        "{}: {} cannot compare with None; use {}__isnull=True",
                        name(),
                        self.key,
                        schema.columns[self.col].name
                    )))
                }
            }
        }
        let kind = if self.json_keys.is_empty() {
            None
        } else if flag.is_some() || self.op.is_pattern() {
            Some(JsonKind::Text)
        } else {
            let mut kind = None;
            for v in &operands {
                let k = match v {
                    Value::Text(_) => JsonKind::Text,
                    Value::Int(_) => JsonKind::Int,
                    Value::Float(_) => JsonKind::Float,
                    Value::Bool(_) => JsonKind::Bool,
                    _ => {
                        return Err(Error::value_type(format!(
                            "{}: {} compares a JSON value with str, int, float or bool values only",
                            name(),
                            self.key
                        )))
                    }
                };
                match kind {
                    None => kind = Some(k),
                    Some(prev) if prev == k => {}
                    Some(JsonKind::Int) | Some(JsonKind::Float) if matches!(k, JsonKind::Int | JsonKind::Float) => {
                        kind = Some(JsonKind::Float)
                    }
                    Some(_) => {
                        return Err(Error::value_type(format!(
                            "{}: the values of {} must all be of one JSON type",
                            name(),
                            self.key
                        )))
                    }
                }
            }
            Some(kind.unwrap_or(JsonKind::Text))
        };
        let target = match kind {
            None => Target::Column(self.col),
            Some(kind) => Target::Json { col: self.col, keys: self.json_keys.len() as u8, kind },
        };
        let mut slots: Vec<u32> = self.json_keys.iter().map(|k| params.push(Value::Text(k.clone()))).collect();
        if let Some(is_null) = flag {
            return Ok(Cond::Leaf { target, op: Op::IsNull(is_null), slots });
        }
        let n = operands.len() as u32;
        let op = match self.op {
            LookupOp::Eq => Op::Eq,
            LookupOp::Ne => Op::Ne,
            LookupOp::Gt => Op::Gt,
            LookupOp::Gte => Op::Gte,
            LookupOp::Lt => Op::Lt,
            LookupOp::Lte => Op::Lte,
            LookupOp::In => Op::In(n),
            LookupOp::NotIn => Op::NotIn(n),
            LookupOp::Like => Op::Like,
            LookupOp::ILike => Op::ILike,
            LookupOp::Contains => Op::Contains,
            LookupOp::IContains => Op::IContains,
            LookupOp::StartsWith => Op::StartsWith,
            LookupOp::IStartsWith => Op::IStartsWith,
            LookupOp::EndsWith => Op::EndsWith,
            LookupOp::IEndsWith => Op::IEndsWith,
            LookupOp::IExact => Op::IExact,
            LookupOp::Range => Op::Range,
            LookupOp::IsNull => unreachable!("handled above"),
        };
        if matches!(op, Op::Range) && n != 2 {
            return Err(Error::value_type(format!("{}: {} expects a pair (low, high)", name(), self.key)));
        }
        slots.extend(operands.into_iter().map(|v| params.push(v)));
        Ok(Cond::Leaf { target, op, slots })
    }
}
