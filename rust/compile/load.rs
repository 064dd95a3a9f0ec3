//! Relationship loading: a query with load options becomes *units*, each one SQL statement.
//!
//! A unit is a base select (the user's query, or the rows related to a set of keys) with
//! every `joinedload` below it folded in as LEFT OUTER JOINs. Each `selectinload` starts a
//! new unit whose keys come from its parent unit's rows, bound as one parameter (a JSON
//! array on SQLite, an array on PostgreSQL), so no key count ever hits a parameter limit
//! and every key count shares one statement.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use sea_query::{Alias, Expr, ExprTrait, JoinType, Order, Query, SelectStatement};

use super::{custom, marker, render, select, Bind, Columns, Dialect, OutCol, Transform};
use crate::errors::{Error, Result};
use crate::plan::load::{LoadNode, Strategy};
use crate::plan::SelectShape;
use crate::schema::{self, ModelSchema, RelKind, ResolvedRel};
use crate::value::ColType;

/// A model's columns inside a unit's rows.
#[derive(Clone, Debug)]
pub struct Seg {
    pub model: u32,
    pub offset: usize,
}

#[derive(Debug)]
pub struct CompiledUnit {
    pub sql: Arc<str>,
    /// For the root unit: into the query's values. For a keyed unit: slot 0 is the key list.
    pub binds: Vec<Bind>,
    pub columns: Columns,
    pub segs: Vec<Seg>,
    /// Where a keyed unit's keys come from: the parent unit and a column of its rows.
    pub source: Option<(usize, usize)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeKind {
    Joined,
    Selectin,
    NoLoad,
}

/// How loaded rows attach to their parents.
#[derive(Debug)]
pub struct Edge {
    pub kind: EdgeKind,
    /// The attribute on the parent, and whether it holds a list.
    pub name: String,
    pub uselist: bool,
    /// The child's attribute pointing back at the parent, when that attribute is scalar.
    pub back: Option<String>,
    pub parent: (usize, usize),
    pub child: (usize, usize),
    /// Selectin: the parent row's key column and the child row's matching column.
    pub parent_key: usize,
    pub child_match: usize,
}

#[derive(Debug)]
pub struct CompiledLoad {
    pub units: Vec<CompiledUnit>,
    pub edges: Vec<Edge>,
}

enum Base<'a> {
    Root(&'a SelectShape),
    Keyed(&'a ResolvedRel),
}

struct Builder {
    d: Dialect,
    units: Vec<Option<CompiledUnit>>,
    edges: Vec<Edge>,
}

struct Join {
    parent_seg: usize,
    rel: ResolvedRel,
}

fn scalar_back(rel: &ResolvedRel, owner: &ModelSchema) -> Result<Option<String>> {
    let Some(back) = &rel.back_populates else { return Ok(None) };
    let target = &rel.target;
    let idx = target.relation_index(back).ok_or_else(|| {
        Error::field(format!(
            "relationship {}.{}: back_populates={back:?} names no relationship of {}",
            owner.name, rel.name, target.name
        ))
    })?;
    let back_rel = &target.resolved_relations()?[idx];
    Ok((!back_rel.uselist).then(|| back.clone()))
}

fn alias(i: usize) -> Alias {
    Alias::new(format!("t{i}"))
}

impl Builder {
    fn unit(
        &mut self,
        base: Base<'_>,
        model: &Arc<ModelSchema>,
        loads: &[LoadNode],
        source: Option<(usize, usize)>,
    ) -> Result<usize> {
        let me = self.units.len();
        self.units.push(None);
        let mut segs = vec![Seg { model: model.id, offset: 0 }];
        // The key a keyed unit matches its parent by, right after the first segment.
        let extra = matches!(base, Base::Keyed(r) if r.kind == RelKind::ManyToMany) as usize;
        let mut width = model.columns.len() + extra;
        let mut joins: Vec<Join> = Vec::new();
        let mut keyed_children: Vec<(usize, Arc<ModelSchema>, ResolvedRel, &LoadNode)> = Vec::new();
        let mut stack: Vec<(usize, Arc<ModelSchema>, &[LoadNode])> = vec![(0, model.clone(), loads)];
        while let Some((seg, owner, nodes)) = stack.pop() {
            let rels = owner.resolved_relations()?;
            // lazy="noload" holds at every depth: related objects get their empty value too.
            for (i, r) in owner.relations.iter().enumerate() {
                if r.lazy == "noload" && !nodes.iter().any(|n| n.rel == i) && (seg > 0 || extra > 0 || source.is_some())
                {
                    self.edges.push(Edge {
                        kind: EdgeKind::NoLoad,
                        name: r.name.clone(),
                        uselist: rels[i].uselist,
                        back: None,
                        parent: (me, seg),
                        child: (me, seg),
                        parent_key: 0,
                        child_match: 0,
                    });
                }
            }
            for node in nodes {
                let rel = rels[node.rel].clone();
                let back = scalar_back(&rel, &owner)?;
                let parent_key = segs[seg].offset + rel.local_col;
                match node.strategy {
                    Strategy::NoLoad => self.edges.push(Edge {
                        kind: EdgeKind::NoLoad,
                        name: rel.name.clone(),
                        uselist: rel.uselist,
                        back: None,
                        parent: (me, seg),
                        child: (me, seg),
                        parent_key,
                        child_match: 0,
                    }),
                    Strategy::Joined => {
                        let child_seg = segs.len();
                        segs.push(Seg { model: rel.target.id, offset: width });
                        width += rel.target.columns.len();
                        self.edges.push(Edge {
                            kind: EdgeKind::Joined,
                            name: rel.name.clone(),
                            uselist: rel.uselist,
                            back,
                            parent: (me, seg),
                            child: (me, child_seg),
                            parent_key,
                            child_match: 0,
                        });
                        joins.push(Join { parent_seg: seg, rel: rel.clone() });
                        stack.push((child_seg, rel.target.clone(), &node.children));
                    }
                    Strategy::Selectin => keyed_children.push((seg, owner.clone(), rel, node)),
                }
            }
        }
        let unit = self.render_unit(&base, model, &segs, extra, &joins, source)?;
        self.units[me] = Some(unit);
        for (seg, owner, rel, node) in keyed_children {
            let parent_key = self.units[me].as_ref().expect("built above").segs[seg].offset + rel.local_col;
            let back = scalar_back(&rel, &owner)?;
            let child = self.unit(Base::Keyed(&rel), &rel.target, &node.children, Some((me, parent_key)))?;
            let child_match = match rel.kind {
                RelKind::ManyToMany => rel.target.columns.len(),
                _ => rel.remote_col,
            };
            self.edges.push(Edge {
                kind: EdgeKind::Selectin,
                name: rel.name.clone(),
                uselist: rel.uselist,
                back,
                parent: (me, seg),
                child: (child, 0),
                parent_key,
                child_match,
            });
        }
        Ok(me)
    }

    fn keyed_base(&self, rel: &ResolvedRel) -> SelectStatement {
        let d = self.d;
        let target = &rel.target;
        let t = Alias::new(target.table.as_str());
        let mut q = Query::select();
        q.from(t.clone());
        for c in &target.columns {
            q.column((t.clone(), Alias::new(c.name.as_str())));
        }
        let keys = marker(0, Transform::None);
        // SQLite gets the keys as a JSON array, which holds no blobs: the driver writes bytes
        // keys as hex, turned back into blobs here.
        let in_keys = |column: Expr, ty: ColType| match (d, ty) {
            (Dialect::Sqlite, ColType::Bytes) => {
                custom(d, "{0} IN (SELECT unhex(value) FROM json_each({1}))", &[column, keys.clone()])
            }
            (Dialect::Sqlite, _) => custom(d, "{0} IN (SELECT value FROM json_each({1}))", &[column, keys.clone()]),
            (Dialect::Postgres, _) => custom(d, "{0} = ANY({1})", &[column, keys.clone()]),
        };
        match (&rel.kind, &rel.secondary) {
            (RelKind::ManyToMany, Some(sec)) => {
                let s = Alias::new(sec.model.table.as_str());
                let owner_fk = Alias::new(sec.model.columns[sec.owner_fk].name.as_str());
                let target_fk = Alias::new(sec.model.columns[sec.target_fk].name.as_str());
                q.expr_as(Expr::col((s.clone(), owner_fk.clone())), Alias::new("ormkit_owner_key"));
                q.inner_join(
                    s.clone(),
                    Expr::col((s.clone(), target_fk))
                        .equals((t.clone(), Alias::new(target.columns[rel.remote_col].name.as_str()))),
                );
                q.and_where(in_keys(Expr::col((s, owner_fk)), sec.model.columns[sec.owner_fk].ty));
            }
            _ => {
                let remote = &target.columns[rel.remote_col];
                q.and_where(in_keys(Expr::col((t.clone(), Alias::new(remote.name.as_str()))), remote.ty));
            }
        }
        // Soft-deleted children are not loaded.
        if let Some(col) = target.soft_delete {
            q.and_where(Expr::col((t.clone(), Alias::new(target.columns[col].name.as_str()))).is_null());
        }
        // No ORDER BY: the loader puts each parent's children in key order itself, which
        // spares the database a sort of every related row.
        q
    }

    fn render_unit(
        &self,
        base: &Base<'_>,
        model: &ModelSchema,
        segs: &[Seg],
        extra: usize,
        joins: &[Join],
        source: Option<(usize, usize)>,
    ) -> Result<CompiledUnit> {
        let d = self.d;
        let mut out: Vec<OutCol> = Vec::new();
        let base_stmt = match base {
            Base::Root(shape) => select::build(d, model, shape, &mut out),
            Base::Keyed(rel) => {
                out.extend(model.columns.iter().map(|c| OutCol { name: c.name.clone(), ty: Some(c.ty) }));
                if extra == 1 {
                    let sec = rel.secondary.as_ref().expect("many-to-many has a secondary");
                    let c = &sec.model.columns[sec.owner_fk];
                    out.push(OutCol { name: "ormkit_owner_key".into(), ty: Some(c.ty) });
                }
                self.keyed_base(rel)
            }
        };
        if joins.is_empty() {
            let (sql, binds) = render(d, &base_stmt)?;
            return Ok(CompiledUnit { sql: sql.into(), binds, columns: out.into(), segs: segs.to_vec(), source });
        }
        let mut q = Query::select();
        for o in &out {
            q.column((alias(0), Alias::new(o.name.as_str())));
        }
        q.from_subquery(base_stmt, alias(0));
        for (j, join) in joins.iter().enumerate() {
            let seg = j + 1;
            let rel = &join.rel;
            let target = &rel.target;
            for c in &target.columns {
                q.column((alias(seg), Alias::new(c.name.as_str())));
                out.push(OutCol { name: c.name.clone(), ty: Some(c.ty) });
            }
            let parent_model = schema::get(segs[join.parent_seg].model);
            let local = (alias(join.parent_seg), Alias::new(parent_model.columns[rel.local_col].name.as_str()));
            let remote = (alias(seg), Alias::new(target.columns[rel.remote_col].name.as_str()));
            let table = Alias::new(target.table.as_str());
            match &rel.secondary {
                Some(sec) => {
                    let s = Alias::new(format!("s{seg}"));
                    let owner_fk = Alias::new(sec.model.columns[sec.owner_fk].name.as_str());
                    let target_fk = Alias::new(sec.model.columns[sec.target_fk].name.as_str());
                    q.join_as(
                        JoinType::LeftJoin,
                        Alias::new(sec.model.table.as_str()),
                        s.clone(),
                        Expr::col((s.clone(), owner_fk)).equals(local),
                    );
                    q.join_as(
                        JoinType::LeftJoin,
                        table,
                        alias(seg),
                        join_on(Expr::col(remote).equals((s, target_fk)), target, seg),
                    );
                }
                None => {
                    q.join_as(
                        JoinType::LeftJoin,
                        table,
                        alias(seg),
                        join_on(Expr::col(remote).equals(local), target, seg),
                    );
                }
            }
        }
        // The join must not reorder the base rows: repeat the base order, then keep each
        // parent's children in key order.
        match base {
            Base::Root(shape) => {
                for o in &shape.order {
                    let c = &model.columns[o.col];
                    select::order_by(d, &mut q, (alias(0), Alias::new(c.name.as_str())), c.nullable, o.desc);
                }
                q.order_by((alias(0), Alias::new(model.pk_column().name.as_str())), Order::Asc);
            }
            Base::Keyed(_) => {
                q.order_by((alias(0), Alias::new(model.pk_column().name.as_str())), Order::Asc);
            }
        }
        for (j, join) in joins.iter().enumerate() {
            let pk = join.rel.target.pk_column().name.as_str();
            q.order_by((alias(j + 1), Alias::new(pk)), Order::Asc);
        }
        let (sql, binds) = render(d, &q)?;
        Ok(CompiledUnit { sql: sql.into(), binds, columns: out.into(), segs: segs.to_vec(), source })
    }
}

/// A join condition that also leaves out soft-deleted rows of the joined model.
fn join_on(on: Expr, target: &ModelSchema, seg: usize) -> Expr {
    match target.soft_delete {
        Some(col) => on.and(Expr::col((alias(seg), Alias::new(target.columns[col].name.as_str()))).is_null()),
        None => on,
    }
}

/// Compiles a model query with its load options.
pub fn compile_load(d: Dialect, shape: &SelectShape) -> Result<Arc<CompiledLoad>> {
    type Cache = RwLock<HashMap<SelectShape, Arc<CompiledLoad>>>;
    static SQLITE: OnceLock<Cache> = OnceLock::new();
    static POSTGRES: OnceLock<Cache> = OnceLock::new();
    let cache = match d {
        Dialect::Sqlite => &SQLITE,
        Dialect::Postgres => &POSTGRES,
    }
    .get_or_init(|| RwLock::new(HashMap::new()));
    if let Some(c) = cache.read().unwrap().get(shape) {
        return Ok(c.clone());
    }
    let model = schema::get(shape.model);
    let mut b = Builder { d, units: Vec::new(), edges: Vec::new() };
    b.unit(Base::Root(shape), &model, &shape.loads, None)?;
    let compiled = Arc::new(CompiledLoad {
        units: b.units.into_iter().map(|u| u.expect("every unit is built")).collect(),
        edges: b.edges,
    });
    let mut w = cache.write().unwrap();
    if w.len() >= 1024 {
        w.clear();
    }
    w.insert(shape.clone(), compiled.clone());
    Ok(compiled)
}
