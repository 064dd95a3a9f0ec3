//! Golden SQL for both dialects, side by side.

use super::*;
use crate::plan::lookup::Lookup;
use crate::plan::{Cond, OrderItem, Params, SelectShape, Statement};
use crate::schema::{self, ColumnSchema, ForeignKeySchema, ModelSchema};
use crate::value::ColType;
use std::sync::Arc;

fn column(name: &str, ty: ColType) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        ty,
        nullable: false,
        primary_key: false,
        autoincrement: false,
        unique: false,
        index: false,
        max_length: None,
        foreign_key: None,
    }
}

fn users() -> Arc<ModelSchema> {
    if let Some(m) = schema::by_table("golden_users") {
        return m;
    }
    let mut id = column("id", ColType::Integer);
    id.primary_key = true;
    id.autoincrement = true;
    let mut name = column("name", ColType::Text);
    name.max_length = Some(100);
    let mut email = column("email", ColType::Text);
    email.unique = true;
    let mut age = column("age", ColType::Integer);
    age.nullable = true;
    age.index = true;
    let meta = column("metadata", ColType::Json);
    let m = ModelSchema::new("User".into(), "golden_users".into(), vec![id, name, email, age, meta], vec![]).unwrap();
    schema::register(m).unwrap()
}

fn posts() -> Arc<ModelSchema> {
    users();
    if let Some(m) = schema::by_table("golden_posts") {
        return m;
    }
    let mut id = column("id", ColType::Integer);
    id.primary_key = true;
    id.autoincrement = true;
    let mut author = column("author_id", ColType::Integer);
    author.foreign_key = Some(ForeignKeySchema {
        table: "golden_users".into(),
        column: "id".into(),
        on_delete: Some(crate::schema::FkAction::Cascade),
        on_update: None,
    });
    let m = ModelSchema::new(
        "Post".into(),
        "golden_posts".into(),
        vec![id, column("title", ColType::Text), author],
        vec![],
    )
    .unwrap();
    schema::register(m).unwrap()
}

fn filter(m: &ModelSchema, params: &mut Params, key: &str, vals: Vec<Value>) -> Cond {
    Lookup::parse(m, key).unwrap().leaf(m, vals, params).unwrap()
}

fn both(stmt: &Statement) -> (String, String) {
    (
        compile_uncached(Dialect::Sqlite, stmt).unwrap().sql.to_string(),
        compile_uncached(Dialect::Postgres, stmt).unwrap().sql.to_string(),
    )
}

#[test]
fn select_filter_order_limit() {
    let m = users();
    let mut p = Params::default();
    let mut s = SelectShape::new(m.id);
    let a = filter(&m, &mut p, "age__gte", vec![Value::Int(30)]);
    let b = filter(&m, &mut p, "name__startswith", vec![Value::Text("user1".into())]);
    s.filter = Some(a.and(b));
    s.order = vec![OrderItem { col: 3, desc: true }];
    s.limit = Some(p.push(Value::Int(20)));
    s.offset = Some(p.push(Value::Int(10)));
    let stmt = Statement::Select(s);
    let (lite, pg) = both(&stmt);
    assert_eq!(
        lite,
        r#"SELECT "id", "name", "email", "age", "metadata" FROM "golden_users" WHERE "age" >= ? AND ("name" GLOB ?) ORDER BY "age" DESC NULLS FIRST LIMIT ? OFFSET ?"#
    );
    assert_eq!(
        pg,
        r#"SELECT "id", "name", "email", "age", "metadata" FROM "golden_users" WHERE "age" >= $1 AND ("name" LIKE $2 ESCAPE '\') ORDER BY "age" DESC LIMIT $3 OFFSET $4"#
    );
    let c = compile_uncached(Dialect::Sqlite, &stmt).unwrap();
    assert_eq!(c.params(&p.values), vec![Value::Int(30), Value::Text("user1*".into()), Value::Int(20), Value::Int(10)]);
    let c = compile_uncached(Dialect::Postgres, &stmt).unwrap();
    assert_eq!(c.params(&p.values)[1], Value::Text("user1%".into()));
}

#[test]
fn q_tree_or_not_in() {
    let m = users();
    let mut p = Params::default();
    let a = filter(&m, &mut p, "age__gt", vec![Value::Int(18)]);
    let b = filter(&m, &mut p, "name__in", vec![Value::Text("a".into()), Value::Text("b".into())]);
    let c = filter(&m, &mut p, "email__isnull", vec![Value::Bool(true)]);
    let mut s = SelectShape::new(m.id);
    s.filter = Some(Cond::Or(vec![a, Cond::Not(Box::new(Cond::And(vec![b, c])))]));
    let (lite, pg) = both(&Statement::Select(s));
    assert!(lite.ends_with(r#"WHERE "age" > ? OR (NOT ("name" IN (?, ?) AND "email" IS NULL))"#), "{lite}");
    assert!(pg.ends_with(r#"WHERE "age" > $1 OR (NOT ("name" IN ($2, $3) AND "email" IS NULL))"#), "{pg}");
}

#[test]
fn json_path_lookups() {
    let m = users();
    let mut p = Params::default();
    let mut s = SelectShape::new(m.id);
    s.filter = Some(filter(&m, &mut p, "metadata__settings__theme", vec![Value::Text("dark".into())]));
    let (lite, pg) = both(&Statement::Select(s));
    assert!(
        lite.ends_with(r#"WHERE ((CASE WHEN json_type("metadata", '$."' || ? || '"' || '."' || ? || '"') = 'text' THEN json_extract("metadata", '$."' || ? || '"' || '."' || ? || '"') END)) = ?"#),
        "{lite}"
    );
    assert!(
        pg.ends_with(r#"WHERE ((CASE WHEN jsonb_typeof(jsonb_extract_path("metadata", $1, $2)) = 'string' THEN jsonb_extract_path_text("metadata", $3, $4) END)) = (CAST($5 AS TEXT))"#),
        "{pg}"
    );
    let c = compile_uncached(Dialect::Sqlite, &Statement::Select(SelectShape { ..SelectShape::new(m.id) })).unwrap();
    assert!(c.binds.is_empty());
}

#[test]
fn pattern_lookups_per_dialect() {
    let m = users();
    for (key, lite_op, pg_op) in [
        ("name__contains", "GLOB ?", "LIKE $1 ESCAPE '\\'"),
        ("name__icontains", "LIKE ? ESCAPE '\\'", "ILIKE $1 ESCAPE '\\'"),
        ("name__ilike", "LIKE ? ESCAPE '\\'", "ILIKE $1 ESCAPE '\\'"),
        ("name__like", "LIKE ? ESCAPE '\\'", "LIKE $1 ESCAPE '\\'"),
    ] {
        let mut p = Params::default();
        let mut s = SelectShape::new(m.id);
        s.filter = Some(filter(&m, &mut p, key, vec![Value::Text("a%_*".into())]));
        let (lite, pg) = both(&Statement::Select(s));
        assert!(lite.ends_with(&format!("WHERE \"name\" {lite_op}")), "{key}: {lite}");
        assert!(pg.ends_with(&format!("WHERE \"name\" {pg_op}")), "{key}: {pg}");
    }
    assert_eq!(Transform::LikeContains.apply(&Value::Text("a%_\\".into())), Value::Text("%a\\%\\_\\\\%".into()));
    assert_eq!(Transform::GlobStarts.apply(&Value::Text("a*?[".into())), Value::Text("a[*][?][[]*".into()));
}

#[test]
fn empty_in_is_false() {
    let m = users();
    let mut p = Params::default();
    let mut s = SelectShape::new(m.id);
    s.filter = Some(filter(&m, &mut p, "age__in", vec![]));
    let (lite, _) = both(&Statement::Select(s));
    assert!(lite.ends_with("WHERE 1 = 0"), "{lite}");
}

#[test]
fn unknown_field_and_lookup_are_field_errors() {
    let m = users();
    let e = Lookup::parse(&m, "foo__gt").unwrap_err();
    assert_eq!(e.kind, crate::errors::Kind::Field);
    assert!(e.message.contains("User has no field \"foo\""), "{}", e.message);
    assert!(e.message.contains("name"));
    let e = Lookup::parse(&m, "age__regexx").unwrap_err();
    assert!(e.message.contains("unknown lookup \"regexx\""), "{}", e.message);
    assert!(Lookup::parse(&m, "age__contains").is_err());
}

#[test]
fn insert_update_delete() {
    let m = users();
    let ins = Statement::Insert(crate::plan::InsertShape {
        model: m.id,
        cols: vec![1, 2],
        rows: 2,
        returning: vec![0],
        arrays: false,
    });
    let (lite, pg) = both(&ins);
    assert_eq!(lite, r#"INSERT INTO "golden_users" ("name", "email") VALUES (?, ?), (?, ?) RETURNING "id""#);
    assert_eq!(pg, r#"INSERT INTO "golden_users" ("name", "email") VALUES ($1, $2), ($3, $4) RETURNING "id""#);
    let mut p = Params::default();
    let set = p.push(Value::Text("x".into()));
    let f = filter(&m, &mut p, "id", vec![Value::Int(1)]);
    let upd =
        Statement::Update(crate::plan::UpdateShape { model: m.id, sets: vec![(1, set)], filter: Some(f.clone()) });
    let (lite, pg) = both(&upd);
    assert_eq!(lite, r#"UPDATE "golden_users" SET "name" = ? WHERE "id" = ?"#);
    assert_eq!(pg, r#"UPDATE "golden_users" SET "name" = $1 WHERE "id" = $2"#);
    let del = Statement::Delete(crate::plan::DeleteShape { model: m.id, filter: Some(f) });
    let (lite, pg) = both(&del);
    assert_eq!(lite, r#"DELETE FROM "golden_users" WHERE "id" = ?"#);
    assert_eq!(pg, r#"DELETE FROM "golden_users" WHERE "id" = $1"#);
}

#[test]
fn count_of_limited_query_wraps() {
    let m = users();
    let mut p = Params::default();
    let mut s = SelectShape::new(m.id);
    s.projection = crate::plan::Projection::Items(vec![]);
    s.limit = Some(p.push(Value::Int(5)));
    s.wrap = Some(crate::plan::Wrap::Count);
    let (lite, pg) = both(&Statement::Select(s));
    assert_eq!(lite, r#"SELECT COUNT(*) AS "count" FROM (SELECT 1 FROM "golden_users" LIMIT ?) AS "sub""#);
    assert_eq!(pg, r#"SELECT COUNT(*) AS "count" FROM (SELECT 1 FROM "golden_users" LIMIT $1) AS "sub""#);
}

#[test]
fn ddl() {
    let u = users();
    let p = posts();
    let lite = ddl::create_all(Dialect::Sqlite, &[p.clone(), u.clone()]).unwrap();
    let pg = ddl::create_all(Dialect::Postgres, &[p.clone(), u.clone()]).unwrap();
    assert_eq!(
        lite[0],
        r#"CREATE TABLE IF NOT EXISTS "golden_users" ( "id" integer PRIMARY KEY, "name" VARCHAR(100) NOT NULL, "email" TEXT NOT NULL UNIQUE, "age" INTEGER NULL, "metadata" JSON_TEXT NOT NULL )"#
    );
    assert_eq!(lite[1], r#"CREATE INDEX IF NOT EXISTS "ix_golden_users_age" ON "golden_users" ("age")"#);
    assert!(
        lite[2].contains(r#"FOREIGN KEY ("author_id") REFERENCES "golden_users" ("id") ON DELETE CASCADE"#),
        "{}",
        lite[2]
    );
    assert_eq!(
        pg[0],
        r#"CREATE TABLE IF NOT EXISTS "golden_users" ( "id" integer PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY, "name" varchar(100) NOT NULL, "email" text NOT NULL UNIQUE, "age" integer NULL, "metadata" JSONB NOT NULL )"#
    );
    let drops = ddl::drop_all(Dialect::Sqlite, &[u, p]).unwrap();
    assert_eq!(drops, vec![r#"DROP TABLE IF EXISTS "golden_posts""#, r#"DROP TABLE IF EXISTS "golden_users""#]);
}

#[test]
fn upsert_sql() {
    let m = users();
    let stmt =
        Statement::Upsert(crate::plan::UpsertShape { model: m.id, cols: vec![1, 2], conflict: 2, update: vec![1] });
    let (lite, pg) = both(&stmt);
    assert_eq!(
        lite,
        r#"INSERT INTO "golden_users" ("name", "email") VALUES (?, ?) ON CONFLICT ("email") DO UPDATE SET "name" = "excluded"."name" RETURNING "id", "name", "email", "age", "metadata""#
    );
    assert_eq!(
        pg,
        r#"INSERT INTO "golden_users" ("name", "email") VALUES ($1, $2) ON CONFLICT ("email") DO UPDATE SET "name" = "excluded"."name" RETURNING "id", "name", "email", "age", "metadata""#
    );
}
