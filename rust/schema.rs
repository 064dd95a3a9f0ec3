//! Model metadata held in Rust: tables, columns, keys and relations, and the registry of models.
//!
//! Python sends each model's description once, at class creation; every plan and compiled
//! statement refers to models by their registry id.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use crate::errors::{Error, Result};
use crate::value::ColType;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FkAction {
    Cascade,
    SetNull,
    SetDefault,
    Restrict,
    NoAction,
}

impl FkAction {
    pub fn parse(s: &str) -> Option<FkAction> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "CASCADE" => FkAction::Cascade,
            "SET NULL" => FkAction::SetNull,
            "SET DEFAULT" => FkAction::SetDefault,
            "RESTRICT" => FkAction::Restrict,
            "NO ACTION" => FkAction::NoAction,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
pub struct ForeignKeySchema {
    pub table: String,
    pub column: String,
    pub on_delete: Option<FkAction>,
    pub on_update: Option<FkAction>,
}

#[derive(Clone, Debug)]
pub struct ColumnSchema {
    pub name: String,
    pub ty: ColType,
    pub nullable: bool,
    pub primary_key: bool,
    pub autoincrement: bool,
    pub unique: bool,
    pub index: bool,
    pub max_length: Option<u32>,
    pub foreign_key: Option<ForeignKeySchema>,
}

#[derive(Clone, Debug)]
pub struct RelationSchema {
    pub name: String,
    /// The related class's name, as written in the annotation.
    pub target: String,
    pub back_populates: Option<String>,
    pub lazy: String,
    pub uselist: Option<bool>,
    /// The association table of a many-to-many relation (a registered model's table).
    pub secondary: Option<String>,
    /// The foreign-key column to use when several could link the two models.
    pub foreign_key: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelKind {
    ManyToOne,
    OneToMany,
    ManyToMany,
}

/// The association table of a many-to-many relation.
#[derive(Clone, Debug)]
pub struct Secondary {
    pub model: Arc<ModelSchema>,
    /// Its column referencing the owner, and its column referencing the target.
    pub owner_fk: usize,
    pub target_fk: usize,
}

/// A relation with its join columns worked out.
#[derive(Clone, Debug)]
pub struct ResolvedRel {
    pub name: String,
    pub kind: RelKind,
    pub uselist: bool,
    pub target: Arc<ModelSchema>,
    /// Many-to-one: the owner's foreign key. Otherwise: the owner column it is referenced by.
    pub local_col: usize,
    /// Many-to-one: the referenced target column. One-to-many: the target's foreign key.
    /// Many-to-many: the target column the association table references.
    pub remote_col: usize,
    pub secondary: Option<Secondary>,
    pub back_populates: Option<String>,
    pub lazy: String,
}

#[derive(Debug)]
pub struct ModelSchema {
    pub id: u32,
    /// The Python class name, used in every message about this model.
    pub name: String,
    pub table: String,
    pub columns: Vec<ColumnSchema>,
    pub pk: usize,
    pub relations: Vec<RelationSchema>,
    /// The `deleted_at` column of a soft-deletable model.
    pub soft_delete: Option<usize>,
    by_name: HashMap<String, usize>,
    resolved: OnceLock<Arc<Vec<ResolvedRel>>>,
}

impl ModelSchema {
    pub fn new(
        name: String,
        table: String,
        columns: Vec<ColumnSchema>,
        relations: Vec<RelationSchema>,
    ) -> Result<ModelSchema> {
        if !is_identifier(&table) {
            return Err(Error::field(format!(
                "{name}: __tablename__ {table:?} is not a valid table name; use letters, digits and underscores"
            )));
        }
        let mut by_name = HashMap::new();
        for (i, c) in columns.iter().enumerate() {
            if !is_identifier(&c.name) {
                return Err(Error::field(format!("{name}.{}: not a valid column name", c.name)));
            }
            if by_name.insert(c.name.clone(), i).is_some() {
                return Err(Error::field(format!("{name}.{}: column declared twice", c.name)));
            }
        }
        let pks: Vec<usize> = columns.iter().enumerate().filter(|(_, c)| c.primary_key).map(|(i, _)| i).collect();
        let pk = match pks.as_slice() {
            [one] => *one,
            [] => {
                return Err(Error::field(format!(
                    "{name} has no primary key; declare one, e.g. id: Mapped[int] = mapped_column(primary_key=True)"
                )))
            }
            _ => {
                return Err(Error::field(format!(
                "{name} declares several primary key columns ({}); OrmKit supports one primary key column per model",
                pks.iter().map(|i| columns[*i].name.as_str()).collect::<Vec<_>>().join(", ")
            )))
            }
        };
        Ok(ModelSchema {
            id: 0,
            name,
            table,
            columns,
            pk,
            relations,
            soft_delete: None,
            by_name,
            resolved: OnceLock::new(),
        })
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn pk_column(&self) -> &ColumnSchema {
        &self.columns[self.pk]
    }

    /// Looks a column up by name, or fails with the error users see for a misspelt field.
    pub fn require_column(&self, name: &str) -> Result<usize> {
        self.column_index(name).ok_or_else(|| {
            Error::field(format!(
                "{} has no field {:?}; valid fields are: {}",
                self.name,
                name,
                self.column_names().join(", ")
            ))
        })
    }

    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    pub fn relation_index(&self, name: &str) -> Option<usize> {
        self.relations.iter().position(|r| r.name == name)
    }

    /// The relations with their join columns. Worked out on first use, when every model
    /// a relation names should exist; a missing or ambiguous link is an error naming both
    /// models.
    pub fn resolved_relations(&self) -> Result<Arc<Vec<ResolvedRel>>> {
        if let Some(r) = self.resolved.get() {
            return Ok(r.clone());
        }
        let rels = Arc::new(self.relations.iter().map(|r| resolve(self, r)).collect::<Result<Vec<_>>>()?);
        let _ = self.resolved.set(rels.clone());
        Ok(rels)
    }

    pub fn require_relation(&self, name: &str) -> Result<usize> {
        self.relation_index(name).ok_or_else(|| {
            let names: Vec<&str> = self.relations.iter().map(|r| r.name.as_str()).collect();
            Error::field(format!(
                "{} has no relationship {:?}; its relationships are: {}",
                self.name,
                name,
                if names.is_empty() { "(none)".to_string() } else { names.join(", ") }
            ))
        })
    }
}

fn resolve(owner: &ModelSchema, r: &RelationSchema) -> Result<ResolvedRel> {
    let who = format!("relationship {}.{}", owner.name, r.name);
    let target = by_name(&r.target).ok_or_else(|| {
        Error::field(format!("{who}: no model named {:?} is defined (is its module imported?)", r.target))
    })?;
    let fk_to = |m: &ModelSchema, table: &str| -> Vec<usize> {
        m.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.foreign_key.as_ref().is_some_and(|f| f.table == table))
            .filter(|(_, c)| r.foreign_key.as_ref().is_none_or(|k| *k == c.name))
            .map(|(i, _)| i)
            .collect()
    };
    let referenced = |m: &ModelSchema, via: &ColumnSchema| -> Result<usize> {
        let fk = via.foreign_key.as_ref().expect("filtered on foreign keys");
        m.column_index(&fk.column).ok_or_else(|| {
            Error::field(format!(
                "{who}: ForeignKey(\"{}.{}\") names a column {} does not have",
                fk.table, fk.column, m.name
            ))
        })
    };
    let base = |kind, uselist, local_col, remote_col, secondary| ResolvedRel {
        name: r.name.clone(),
        kind,
        uselist,
        target: target.clone(),
        local_col,
        remote_col,
        secondary,
        back_populates: r.back_populates.clone(),
        lazy: r.lazy.clone(),
    };
    if let Some(sec) = &r.secondary {
        let s = by_table(sec).ok_or_else(|| {
            Error::field(format!(
                "{who}: secondary={sec:?} is not the table of any model; declare the association table as a model"
            ))
        })?;
        let owner_fks = fk_to(&s, &owner.table);
        let target_fks = fk_to(&s, &target.table);
        let (o, t) = match (owner_fks.as_slice(), target_fks.as_slice()) {
            ([o], [t]) if o != t => (*o, *t),
            _ => {
                return Err(Error::field(format!(
                    "{who}: association table {sec:?} needs exactly one ForeignKey to {:?} ({}) and one to {:?} ({})",
                    owner.table, owner.name, target.table, target.name
                )))
            }
        };
        let local = referenced(owner, &s.columns[o])?;
        let remote = referenced(&target, &s.columns[t])?;
        let secondary = Secondary { model: s, owner_fk: o, target_fk: t };
        return Ok(base(RelKind::ManyToMany, r.uselist.unwrap_or(true), local, remote, Some(secondary)));
    }
    let on_owner = fk_to(owner, &target.table);
    let on_target = if target.table == owner.table { on_owner.clone() } else { fk_to(&target, &owner.table) };
    let wants_list = r.uselist == Some(true);
    let self_ref = target.table == owner.table;
    let kind = match (on_owner.len(), on_target.len()) {
        (0, 0) if r.foreign_key.is_some() => {
            return Err(Error::field(format!(
                "{who}: foreign_keys={:?} is not a column of {} or {} with a ForeignKey to the other; name one of those columns",
                r.foreign_key.as_deref().unwrap_or_default(),
                owner.name,
                target.name
            )))
        }
        (0, 0) => {
            return Err(Error::field(format!(
                "{who}: no ForeignKey links {} and {}; add ForeignKey(\"{}.{}\") to one of them, or pass secondary=\"<association table>\"",
                owner.name,
                target.name,
                owner.table,
                owner.pk_column().name
            )))
        }
        (1, _) if self_ref => {
            if wants_list {
                RelKind::OneToMany
            } else {
                RelKind::ManyToOne
            }
        }
        (1, 0) => RelKind::ManyToOne,
        (0, 1) => RelKind::OneToMany,
        (1, 1) if wants_list => RelKind::OneToMany,
        (1, 1) => RelKind::ManyToOne,
        _ => {
            return Err(Error::field(format!(
                "{who}: several foreign keys link {} and {}; choose one with relationship(foreign_keys=\"<column>\")",
                owner.name, target.name
            )))
        }
    };
    match kind {
        RelKind::ManyToOne => {
            if wants_list {
                return Err(Error::field(format!(
                    "{who}: {} holds the foreign key, so each {} has one {}; annotate it Mapped[{}] (not a list)",
                    owner.name, owner.name, target.name, target.name
                )));
            }
            let fk = on_owner[0];
            Ok(base(RelKind::ManyToOne, false, fk, referenced(&target, &owner.columns[fk])?, None))
        }
        _ => {
            let fk = on_target[0];
            let local = referenced(owner, &target.columns[fk])?;
            Ok(base(RelKind::OneToMany, r.uselist.unwrap_or(true), local, fk, None))
        }
    }
}

pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    s.len() <= 63 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

struct Registry {
    models: Vec<Arc<ModelSchema>>,
    by_table: HashMap<String, u32>,
    by_name: HashMap<String, u32>,
}

fn registry() -> &'static RwLock<Registry> {
    static REG: OnceLock<RwLock<Registry>> = OnceLock::new();
    REG.get_or_init(|| RwLock::new(Registry { models: Vec::new(), by_table: HashMap::new(), by_name: HashMap::new() }))
}

/// Registers a model. A table name may be registered again (a module reloaded, a test
/// redefining a model); the newest definition wins for DDL, older handles keep working.
pub fn register(mut schema: ModelSchema) -> Result<Arc<ModelSchema>> {
    let mut reg = registry().write().unwrap();
    check_foreign_keys(&schema, &reg)?;
    schema.id = reg.models.len() as u32;
    let schema = Arc::new(schema);
    reg.by_table.insert(schema.table.clone(), schema.id);
    reg.by_name.insert(schema.name.clone(), schema.id);
    reg.models.push(schema.clone());
    Ok(schema)
}

fn check_foreign_keys(schema: &ModelSchema, reg: &Registry) -> Result<()> {
    for c in &schema.columns {
        let Some(fk) = &c.foreign_key else { continue };
        let target_has = |col: &str| -> Option<bool> {
            if fk.table == schema.table {
                return Some(schema.column_index(col).is_some());
            }
            let id = reg.by_table.get(&fk.table)?;
            Some(reg.models[*id as usize].column_index(col).is_some())
        };
        if target_has(&fk.column) == Some(false) {
            return Err(Error::field(format!(
                "{}.{}: ForeignKey(\"{}.{}\") names a column that table {:?} does not have",
                schema.name, c.name, fk.table, fk.column, fk.table
            )));
        }
    }
    Ok(())
}

pub fn get(id: u32) -> Arc<ModelSchema> {
    registry().read().unwrap().models[id as usize].clone()
}

/// The newest model registered under a class name.
pub fn by_name(name: &str) -> Option<Arc<ModelSchema>> {
    let reg = registry().read().unwrap();
    reg.by_name.get(name).map(|id| reg.models[*id as usize].clone())
}

pub fn by_table(table: &str) -> Option<Arc<ModelSchema>> {
    let reg = registry().read().unwrap();
    reg.by_table.get(table).map(|id| reg.models[*id as usize].clone())
}

/// The current model of every registered table, parents before children (foreign-key order).
pub fn all_current() -> Vec<Arc<ModelSchema>> {
    let reg = registry().read().unwrap();
    let mut current: Vec<Arc<ModelSchema>> = reg.by_table.values().map(|id| reg.models[*id as usize].clone()).collect();
    current.sort_by_key(|m| m.id);
    current
}

/// Orders models so that every table comes after the tables its foreign keys reference.
/// References outside the given set are the caller's to check.
pub fn dependency_order(models: &[Arc<ModelSchema>]) -> Result<Vec<Arc<ModelSchema>>> {
    let index: HashMap<&str, usize> = models.iter().enumerate().map(|(i, m)| (m.table.as_str(), i)).collect();
    let mut state = vec![0u8; models.len()]; // 0 new, 1 visiting, 2 done
    let mut out = Vec::with_capacity(models.len());
    fn visit(
        i: usize,
        models: &[Arc<ModelSchema>],
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        out: &mut Vec<Arc<ModelSchema>>,
    ) -> Result<()> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                return Err(Error::programming(format!(
                    "foreign keys form a cycle through table {:?}; break it with a nullable key added after creation",
                    models[i].table
                )))
            }
            _ => {}
        }
        state[i] = 1;
        for c in &models[i].columns {
            if let Some(fk) = &c.foreign_key {
                if fk.table != models[i].table {
                    if let Some(j) = index.get(fk.table.as_str()) {
                        visit(*j, models, index, state, out)?;
                    }
                }
            }
        }
        state[i] = 2;
        out.push(models[i].clone());
        Ok(())
    }
    for i in 0..models.len() {
        visit(i, models, &index, &mut state, &mut out)?;
    }
    Ok(out)
}
