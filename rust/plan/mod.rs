//! Query plans: what to read or write, as plain data with the values kept apart.
//!
//! A plan is a *shape* (which columns, which operators, how the conditions nest) plus the
//! list of bound values the shape's slots refer to. Two queries that differ only in their
//! values share a shape, so the compiler caches SQL by shape.

pub mod load;
pub mod lookup;

use crate::value::Value;

/// Index into a plan's value list.
pub type Slot = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AggFn {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

impl AggFn {
    pub fn parse(s: &str) -> Option<AggFn> {
        Some(match s {
            "count" => AggFn::Count,
            "sum" => AggFn::Sum,
            "avg" => AggFn::Avg,
            "min" => AggFn::Min,
            "max" => AggFn::Max,
            _ => return None,
        })
    }
}

/// The SQL type a JSON comparand has; PostgreSQL needs it to compare inside JSONB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JsonKind {
    Text,
    Int,
    Float,
    Bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Column(usize),
    /// A path inside a JSON column; the first `keys` slots of the leaf hold the path keys.
    Json {
        col: usize,
        keys: u8,
        kind: JsonKind,
    },
    /// An aggregate, for `having`; `None` column means `COUNT(*)`.
    Agg(AggFn, Option<usize>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In(u32),
    NotIn(u32),
    Like,
    ILike,
    Contains,
    IContains,
    StartsWith,
    IStartsWith,
    EndsWith,
    IEndsWith,
    IExact,
    IsNull(bool),
    Range,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Cond {
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Leaf { target: Target, op: Op, slots: Vec<Slot> },
    Const(bool),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProjItem {
    Col(usize),
    Agg(AggFn, Option<usize>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Projection {
    /// Every column of the model, in declaration order: rows become model instances.
    Model,
    Items(Vec<ProjItem>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OrderItem {
    pub col: usize,
    pub desc: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SelectShape {
    pub model: u32,
    pub projection: Projection,
    pub filter: Option<Cond>,
    pub order: Vec<OrderItem>,
    pub limit: Option<Slot>,
    pub offset: Option<Slot>,
    pub distinct: bool,
    pub group_by: Vec<usize>,
    pub having: Option<Cond>,
    /// Wrap the select and compute this over its rows (count of a limited or grouped query).
    pub wrap: Option<Wrap>,
    /// Relations loaded with the rows (model selects only).
    pub loads: Vec<load::LoadNode>,
    /// Soft-deleted rows of a soft-deletable model: hidden (default), included, or only.
    pub deleted: Deleted,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Deleted {
    #[default]
    Hidden,
    Included,
    Only,
}

impl Deleted {
    /// The condition this adds for `model`, if it is soft-deletable.
    pub fn cond(self, model: &crate::schema::ModelSchema) -> Option<Cond> {
        let col = model.soft_delete?;
        let is_null = match self {
            Deleted::Hidden => true,
            Deleted::Only => false,
            Deleted::Included => return None,
        };
        Some(Cond::Leaf { target: Target::Column(col), op: Op::IsNull(is_null), slots: vec![] })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Wrap {
    Count,
    Agg(AggFn, usize),
}

impl SelectShape {
    pub fn new(model: u32) -> Self {
        SelectShape {
            model,
            projection: Projection::Model,
            filter: None,
            order: Vec::new(),
            limit: None,
            offset: None,
            distinct: false,
            group_by: Vec::new(),
            having: None,
            wrap: None,
            loads: Vec::new(),
            deleted: Deleted::Hidden,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InsertShape {
    pub model: u32,
    /// Columns given a value, in order; every row binds one slot per column.
    pub cols: Vec<usize>,
    pub rows: u32,
    pub returning: Vec<usize>,
    /// PostgreSQL only: one array parameter per column holds every row's value, so any
    /// number of rows is one statement of one shape.
    pub arrays: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpdateShape {
    pub model: u32,
    pub sets: Vec<(usize, Slot)>,
    pub filter: Option<Cond>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeleteShape {
    pub model: u32,
    pub filter: Option<Cond>,
}

/// `INSERT ... ON CONFLICT (conflict) DO UPDATE SET update... RETURNING *`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpsertShape {
    pub model: u32,
    pub cols: Vec<usize>,
    pub conflict: usize,
    pub update: Vec<usize>,
}

/// Every statement the compiler knows; the cache key is `(dialect, Statement)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Statement {
    Select(SelectShape),
    Insert(InsertShape),
    Update(UpdateShape),
    Delete(DeleteShape),
    Upsert(UpsertShape),
}

/// Values collected while building a plan; slots index into `values`.
#[derive(Clone, Debug, Default)]
pub struct Params {
    pub values: Vec<Value>,
}

impl Params {
    pub fn push(&mut self, v: Value) -> Slot {
        self.values.push(v);
        (self.values.len() - 1) as Slot
    }
}

impl Cond {
    /// `a AND b`, flattening nested ANDs so equal trees get equal shapes.
    pub fn and(self, other: Cond) -> Cond {
        match (self, other) {
            (Cond::And(mut a), Cond::And(b)) => {
                a.extend(b);
                Cond::And(a)
            }
            (Cond::And(mut a), b) => {
                a.push(b);
                Cond::And(a)
            }
            (a, b) => Cond::And(vec![a, b]),
        }
    }

    pub fn and_opt(base: Option<Cond>, other: Cond) -> Cond {
        match base {
            Some(b) => b.and(other),
            None => other,
        }
    }
}
