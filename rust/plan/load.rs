//! Relationship-loading options: which relations a query loads, how, and below what.

use crate::errors::{Error, Result};
use crate::schema::ModelSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// One extra `IN` query per level.
    Selectin,
    /// A LEFT OUTER JOIN in the parent's query.
    Joined,
    /// Not loaded: an empty collection or None.
    NoLoad,
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Strategy> {
        Some(match s {
            "selectin" => Strategy::Selectin,
            "joined" => Strategy::Joined,
            "noload" => Strategy::NoLoad,
            _ => return None,
        })
    }
}

/// One relation to load, by its index in the owning model's relations.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoadNode {
    pub rel: usize,
    pub strategy: Strategy,
    pub children: Vec<LoadNode>,
}

/// Adds the path `segments` (relation name and strategy per level) under `nodes`, resolving
/// names from `model` down. A later option for the same relation changes its strategy.
pub fn add_path(nodes: &mut Vec<LoadNode>, model: &ModelSchema, segments: &[(String, Strategy)]) -> Result<()> {
    let Some(((name, strategy), rest)) = segments.split_first() else { return Ok(()) };
    let rel = model.require_relation(name)?;
    let resolved = model.resolved_relations()?;
    let target = resolved[rel].target.clone();
    let pos = match nodes.iter().position(|n| n.rel == rel) {
        Some(p) => {
            nodes[p].strategy = *strategy;
            p
        }
        None => {
            nodes.push(LoadNode { rel, strategy: *strategy, children: vec![] });
            nodes.len() - 1
        }
    };
    if !rest.is_empty() && *strategy == Strategy::NoLoad {
        return Err(Error::field(format!("{}.{}: nothing below a noload() relation can be loaded", model.name, name)));
    }
    add_path(&mut nodes[pos].children, &target, rest)
}

/// The loads a model asks for by itself (`lazy="selectin"`, `"joined"`, `"noload"`).
pub fn defaults(model: &ModelSchema) -> Result<Vec<LoadNode>> {
    let mut nodes = Vec::new();
    for (i, r) in model.relations.iter().enumerate() {
        let strategy = match r.lazy.as_str() {
            "selectin" => Strategy::Selectin,
            "joined" => Strategy::Joined,
            "noload" => Strategy::NoLoad,
            _ => continue,
        };
        model.resolved_relations()?;
        nodes.push(LoadNode { rel: i, strategy, children: vec![] });
    }
    Ok(nodes)
}
