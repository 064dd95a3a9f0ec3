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
    pub target: String,
    pub back_populates: Option<String>,
    pub lazy: String,
    pub uselist: Option<bool>,
    pub secondary: Option<String>,
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
    by_name: HashMap<String, usize>,
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
        Ok(ModelSchema { id: 0, name, table, columns, pk, relations, by_name })
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
}

fn registry() -> &'static RwLock<Registry> {
    static REG: OnceLock<RwLock<Registry>> = OnceLock::new();
    REG.get_or_init(|| RwLock::new(Registry { models: Vec::new(), by_table: HashMap::new() }))
}

/// Registers a model. A table name may be registered again (a module reloaded, a test
/// redefining a model); the newest definition wins for DDL, older handles keep working.
pub fn register(mut schema: ModelSchema) -> Result<Arc<ModelSchema>> {
    let mut reg = registry().write().unwrap();
    check_foreign_keys(&schema, &reg)?;
    schema.id = reg.models.len() as u32;
    let schema = Arc::new(schema);
    reg.by_table.insert(schema.table.clone(), schema.id);
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
