"""The simple API of AsyncSession: insert, insert_all, get, get_or_raise, update, remove,
bulk_update, execute_raw, and the spec's "Simple API" walk-through."""

import pytest

from ormkit import (
    AsyncSession,
    Base,
    BigInteger,
    FieldError,
    IntegrityError,
    Mapped,
    NoResultFound,
    OrmKitError,
    ValueTypeError,
    mapped_column,
)
from tests.models import Order, Post, User


def _ph(engine, n: int) -> str:
    return "?" if engine.dialect == "sqlite" else f"${n}"


# ---------------------------------------------------------------- insert


async def test_insert_returns_the_instance_with_id(session, reader):
    u = User(name="Alice", email="alice@example.com", age=30)
    assert u.id is None
    got = await session.insert(u)
    assert got is u
    assert isinstance(u.id, int) and u.id > 0
    row = await reader.get(User, u.id)
    assert (row.name, row.email, row.age, row.role, row.vip, row.metadata) == (
        "Alice",
        "alice@example.com",
        30,
        "member",
        False,
        {},
    )


async def test_insert_ids_increase(session):
    a = await session.insert(User(name="A", email="a@x"))
    b = await session.insert(User(name="B", email="b@x"))
    assert b.id > a.id


async def test_insert_with_explicit_id(session, reader):
    u = await session.insert(User(id=4242, name="A", email="a@x"))
    assert u.id == 4242
    assert (await reader.get(User, 4242)).name == "A"
    nxt = await session.insert(User(name="B", email="b@x"))
    assert nxt.id != 4242


async def test_insert_float_and_int_defaults(session, reader):
    o = await session.insert(Order(status="new", amount=9.5))
    got = await reader.get(Order, o.id)
    assert (got.status, got.amount, got.quantity) == ("new", 9.5, 1)


async def test_insert_same_instance_twice_is_a_conflict(session):
    u = await session.insert(User(name="A", email="a@x"))
    with pytest.raises(IntegrityError):
        await session.insert(u)
    assert await session.query(User).count() == 1


async def test_failed_insert_leaves_no_id_and_session_usable(session):
    await session.insert(User(name="A", email="dup@x"))
    u = User(name="B", email="dup@x")
    with pytest.raises(IntegrityError):
        await session.insert(u)
    assert u.id is None
    ok = await session.insert(User(name="C", email="c@x"))
    assert ok.id is not None
    assert await session.query(User).count() == 2


async def test_insert_non_model_rejected(session):
    with pytest.raises(TypeError):
        await session.insert(object())


# ---------------------------------------------------------------- insert_all


async def test_insert_all_1000_rows_fills_ids_in_order(session):
    users = [User(name=f"user{i:04d}", email=f"u{i}@x", age=i % 100) for i in range(1000)]
    result = await session.insert_all(users)
    assert len(result) == 1000
    assert all(r is u for r, u in zip(result, users, strict=True))
    ids = [u.id for u in users]
    assert all(isinstance(i, int) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert ids == list(range(ids[0], ids[0] + 1000))  # a fresh table hands out consecutive ids
    rows = await session.query(User).order_by("id").values_list("id", "name")
    assert rows == [(u.id, u.name) for u in users]
    assert await session.query(User).count() == 1000


class SKeyed(Base):
    """Mapped onto tables created by hand below, whose integer key may not be SQLite's rowid."""

    __tablename__ = "s_keyed"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    v: Mapped[str]


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE s_keyed (id BIGINT PRIMARY KEY, v TEXT NOT NULL)",  # a key, not the rowid
        "CREATE TABLE s_keyed (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",  # the rowid (SQLite)
        "CREATE TABLE s_keyed (id INTEGER NOT NULL, v TEXT NOT NULL, PRIMARY KEY (id)) WITHOUT ROWID",
    ],
)
async def test_insert_all_keys_whatever_the_table_declares(engine, session, reader, ddl):
    """insert_all hands back the keys as stored however the key column was declared (on SQLite
    an INTEGER PRIMARY KEY is read through the rowid, anything else through RETURNING)."""
    if "WITHOUT ROWID" in ddl and engine.dialect != "sqlite":
        ddl = ddl.replace(" WITHOUT ROWID", "")
    await session.execute_raw("DROP TABLE s_keyed")  # create_all made it; declare it by hand
    await session.execute_raw(ddl)
    objs = [SKeyed(id=1000 + 7 * i, v=f"v{i}") for i in range(200)]
    with engine.query_log() as log:
        await session.insert_all(objs)
    assert [o.id for o in objs] == [1000 + 7 * i for i in range(200)]
    rowid = engine.dialect == "sqlite" and "INTEGER PRIMARY KEY" in ddl
    assert any("RETURNING" in q for q in log.statements) is not rowid
    got = await reader.query(SKeyed).order_by("id").values_list("id", "v")
    assert got == [(1000 + 7 * i, f"v{i}") for i in range(200)]


async def test_insert_all_is_all_or_nothing(session):
    await session.insert(User(name="X", email="dup@x"))
    batch = [User(name="a", email="a@x"), User(name="b", email="dup@x"), User(name="c", email="c@x")]
    with pytest.raises(IntegrityError):
        await session.insert_all(batch)
    assert await session.query(User).count() == 1
    assert [u.id for u in batch] == [None, None, None]
    # usable afterwards
    again = await session.insert_all([User(name="a", email="a@x"), User(name="c", email="c@x")])
    assert all(u.id for u in again)
    assert await session.query(User).count() == 3


async def test_insert_all_type_error_rolls_back(session):
    batch = [User(name="a", email="a@x"), User(name="b", email="b@x", age="old")]
    with pytest.raises(ValueTypeError, match=r"User\.age"):
        await session.insert_all(batch)
    assert await session.query(User).count() == 0


async def test_insert_all_empty_and_generator(session):
    assert await session.insert_all([]) == []
    got = await session.insert_all(User(name=f"g{i}", email=f"g{i}@x") for i in range(3))
    assert [u.name for u in got] == ["g0", "g1", "g2"] and all(u.id for u in got)


async def test_insert_all_mixed_models_rejected(session):
    with pytest.raises(TypeError):
        await session.insert_all([User(name="a", email="a@x"), Order(status="s", amount=1.0)])
    assert await session.query(User).count() == 0


async def test_insert_all_with_foreign_keys(session):
    u = await session.insert(User(name="A", email="a@x"))
    posts = await session.insert_all([Post(title=f"p{i}", author_id=u.id) for i in range(5)])
    assert [p.title for p in await session.query(Post).order_by("id").all()] == [p.title for p in posts]
    with pytest.raises(IntegrityError):
        await session.insert_all([Post(title="ok", author_id=u.id), Post(title="bad", author_id=u.id + 99)])
    assert await session.query(Post).count() == 5


# ---------------------------------------------------------------- get / get_or_raise


async def test_get(session, reader):
    u = await session.insert(User(name="A", email="a@x", metadata={"plan": "pro"}))
    got = await reader.get(User, u.id)
    assert isinstance(got, User)
    assert got.id == u.id and got.name == "A" and got.metadata == {"plan": "pro"}
    assert await reader.get(User, u.id + 1000) is None


async def test_get_wrong_pk_type(session, reader):
    with pytest.raises(ValueTypeError, match=r"User\.id"):
        await reader.get(User, "abc")


async def test_get_or_raise(session):
    u = await session.insert(User(name="A", email="a@x"))
    assert (await session.get_or_raise(User, u.id)).name == "A"
    with pytest.raises(NoResultFound) as ei:
        await session.get_or_raise(User, 987654)
    assert "User" in str(ei.value) and "987654" in str(ei.value)


# ---------------------------------------------------------------- update


async def test_update_sets_attributes_and_persists(session, reader):
    u = await session.insert(User(name="Alice", email="a@x", age=25))
    other = await session.insert(User(name="Bob", email="b@x", age=40))
    got = await session.update(u, name="Alicia", age=26, metadata={"plan": "premium"})
    assert got is u
    assert (u.name, u.age, u.metadata) == ("Alicia", 26, {"plan": "premium"})
    row = await reader.get(User, u.id)
    assert (row.name, row.age, row.email, row.metadata) == ("Alicia", 26, "a@x", {"plan": "premium"})
    untouched = await reader.get(User, other.id)
    assert (untouched.name, untouched.age) == ("Bob", 40)


async def test_update_to_none_on_nullable(session, reader):
    u = await session.insert(User(name="A", email="a@x", age=5))
    await session.update(u, age=None)
    assert u.age is None and (await reader.get(User, u.id)).age is None


async def test_update_of_removed_row_raises_no_result_found(session, reader):
    u = await session.insert(User(name="A", email="a@x"))
    assert await session.remove(u) is True
    with pytest.raises(NoResultFound):
        await session.update(u, name="B")
    assert await reader.get(User, u.id) is None


async def test_update_unknown_field(session):
    u = await session.insert(User(name="A", email="a@x"))
    with pytest.raises(FieldError, match="nope"):
        await session.update(u, nope=1)
    assert u.name == "A" and not hasattr(u, "nope")


async def test_update_wrong_type_leaves_row_and_instance(session, reader):
    u = await session.insert(User(name="A", email="a@x", age=3))
    with pytest.raises(ValueTypeError, match=r"User\.age"):
        await session.update(u, age="old")
    assert u.age == 3
    assert (await reader.get(User, u.id)).age == 3


async def test_update_unique_violation(session, reader):
    await session.insert(User(name="A", email="a@x"))
    b = await session.insert(User(name="B", email="b@x"))
    with pytest.raises(IntegrityError):
        await session.update(b, email="a@x")
    assert (await reader.get(User, b.id)).email == "b@x"


async def test_update_never_inserted_instance(session):
    with pytest.raises(OrmKitError):
        await session.update(User(name="A", email="a@x"), name="B")


# ---------------------------------------------------------------- remove


async def test_remove_returns_true_then_false(session, reader):
    u = await session.insert(User(name="A", email="a@x"))
    keep = await session.insert(User(name="B", email="b@x"))
    assert await session.remove(u) is True
    assert await reader.get(User, u.id) is None
    assert await session.remove(u) is False
    assert await reader.get(User, keep.id) is not None
    assert await session.query(User).count() == 1


async def test_remove_cascades_to_posts(session):
    u = await session.insert(User(name="A", email="a@x"))
    await session.insert_all([Post(title="p1", author_id=u.id), Post(title="p2", author_id=u.id)])
    assert await session.remove(u) is True
    assert await session.query(Post).count() == 0


# ---------------------------------------------------------------- bulk_update


async def test_bulk_update_returns_count_and_persists(session):
    await session.insert_all(
        [User(name=f"u{i}", email=f"u{i}@x", age=i, role="guest" if i % 2 else "member") for i in range(10)]
    )
    n = await session.bulk_update(User, {"role": "admin", "vip": True}, role="guest")
    assert n == 5
    assert await session.query(User).filter(role="admin", vip=True).count() == 5
    assert await session.query(User).filter(role="guest").count() == 0
    assert await session.query(User).filter(role="member", vip=False).count() == 5


async def test_bulk_update_with_lookups(session):
    await session.insert_all([User(name=f"u{i}", email=f"u{i}@x", age=i) for i in range(10)])
    assert await session.bulk_update(User, {"role": "young"}, age__lt=3) == 3
    assert await session.bulk_update(User, {"role": "mid"}, age__gte=3, age__lt=6) == 3
    assert await session.bulk_update(User, {"role": "none"}, age__gt=100) == 0
    roles = await session.query(User).order_by("age").values_list("role", flat=True)
    assert roles == ["young"] * 3 + ["mid"] * 3 + ["member"] * 4


async def test_bulk_update_without_filters_updates_all(session):
    await session.insert_all([User(name=f"u{i}", email=f"u{i}@x") for i in range(4)])
    assert await session.bulk_update(User, {"age": 1}) == 4
    assert await session.query(User).filter(age=1).count() == 4


async def test_bulk_update_errors(session):
    await session.insert(User(name="A", email="a@x", age=1))
    with pytest.raises(FieldError):
        await session.bulk_update(User, {"nope": 1})
    with pytest.raises(FieldError):
        await session.bulk_update(User, {"name": "x"}, nope=1)
    with pytest.raises(ValueTypeError, match=r"User\.age"):
        await session.bulk_update(User, {"age": "x"})
    with pytest.raises(ValueTypeError, match=r"User\.name"):
        await session.bulk_update(User, {"name": None})
    assert (await session.query(User).one()).name == "A"


# ---------------------------------------------------------------- execute_raw


async def test_execute_raw(engine, session):
    await session.insert_all([User(name="Alice", email="a@x", age=30), User(name="Bob", email="b@x", age=12)])
    result = await session.execute_raw(f"SELECT * FROM t_users WHERE age > {_ph(engine, 1)}", [18])
    rows = result.all()
    assert [(row["name"], row["age"]) for row in rows] == [("Alice", 30)]
    result = await session.execute_raw("SELECT id, name FROM t_users ORDER BY id", [])
    assert [t[1] for t in result.tuples()] == ["Alice", "Bob"]
    assert result.column("name") == ["Alice", "Bob"]
    r = await session.execute_raw(f"UPDATE t_users SET age = age + 1 WHERE name = {_ph(engine, 1)}", ["Bob"])
    assert r.rowcount == 1
    assert (await session.query(User).filter(name="Bob").one()).age == 13


# ---------------------------------------------------------------- the spec's walk-through


async def test_spec_simple_api_sequence(engine, reader):
    session = AsyncSession(engine)

    # Insert - returns model with generated ID
    user = await session.insert(User(name="Alice", email="alice@example.com"))
    assert isinstance(user.id, int)
    first_id = user.id

    # Query with Django-style filters
    assert await session.query(User).filter(age__gte=18).all() == []  # age is NULL
    await session.update(user, age=25)
    adults = await session.query(User).filter(age__gte=18).all()
    assert [a.email for a in adults] == ["alice@example.com"]
    user = await session.query(User).filter(email="alice@example.com").first()
    assert user.name == "Alice" and user.id == first_id

    # Get by primary key
    user = await reader.get(User, first_id)
    assert user.email == "alice@example.com"

    # Update
    await session.update(user, name="Alicia", age=26)
    assert (user.name, user.age) == ("Alicia", 26)
    again = await reader.get(User, first_id)
    assert (again.name, again.age) == ("Alicia", 26)

    # Delete
    assert await session.remove(user) is True
    assert await reader.get(User, first_id) is None
    assert await session.query(User).count() == 0

    # insert_all from the Batch Operations section
    users = await session.insert_all(
        [
            User(name="User1", email="user1@example.com"),
            User(name="User2", email="user2@example.com"),
            User(name="User3", email="user3@example.com"),
        ]
    )
    assert [u.name for u in users] == ["User1", "User2", "User3"]
    assert len({u.id for u in users}) == 3
    assert await session.query(User).count() == 3


async def test_session_as_context_manager(engine):
    async with AsyncSession(engine) as session:
        u = await session.insert(User(name="A", email="a@x"))
    assert (await AsyncSession(engine).get(User, u.id)).name == "A"


def test_session_requires_engine():
    with pytest.raises(TypeError):
        AsyncSession("sqlite::memory:")
