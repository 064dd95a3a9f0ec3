"""Transactions, the unit of work, select(), upsert and soft delete, on both backends."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from ormkit import (
    AsyncSession,
    Base,
    FieldError,
    ForeignKey,
    IntegrityError,
    InterfaceError,
    Mapped,
    MultipleResultsFound,
    NoResultFound,
    SoftDeleteMixin,
    create_engine,
    joinedload,
    mapped_column,
    relationship,
    select,
    selectinload,
    session_context,
)
from tests.conftest import open_engine
from tests.models import Post, User


class Article(SoftDeleteMixin, Base):
    __tablename__ = "s_articles"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    views: Mapped[int] = mapped_column(default=0)


async def names(session) -> list[str]:
    return sorted(await session.query(User).values_list("name", flat=True))


async def second_engine(engine, tmp_path):
    """An independent engine on the same database as `engine`."""
    if engine.dialect == "sqlite":
        return await create_engine(engine.url)
    return await create_engine(engine.url)


# transactions


async def test_begin_commits_on_exit(session, engine):
    async with session.begin() as tx:
        tx.add(User(name="a", email="a@x"))
        await session.insert(User(name="b", email="b@x"))
        assert session.in_transaction
    assert not session.in_transaction
    other = await create_engine(engine.url)
    try:
        assert sorted(await AsyncSession(other).query(User).values_list("name", flat=True)) == ["a", "b"]
    finally:
        await other.dispose()


async def test_exception_rolls_back_everything_seen_from_another_engine(session, engine):
    await session.insert(User(name="kept", email="k@x"))
    with pytest.raises(RuntimeError, match="boom"):
        async with session.begin() as tx:
            tx.add(User(name="added", email="added@x"))
            await session.insert(User(name="inserted", email="i@x"))
            await session.query(User).filter(name="kept").update(age=99)
            raise RuntimeError("boom")
    other = await create_engine(engine.url)
    try:
        s2 = AsyncSession(other)
        assert await s2.query(User).values_list("name", flat=True) == ["kept"]
        assert (await s2.query(User).first()).age is None
    finally:
        await other.dispose()
    assert await names(session) == ["kept"]


async def test_session_context_commits_and_rolls_back(engine):
    async with session_context(engine) as s:
        await s.insert(User(name="ctx", email="ctx@x"))
    with pytest.raises(KeyError):
        async with session_context(engine) as s:
            await s.insert(User(name="gone", email="gone@x"))
            raise KeyError("x")
    assert await names(AsyncSession(engine)) == ["ctx"]


async def test_nested_begin_is_a_savepoint(session):
    async with session.begin():
        await session.insert(User(name="outer", email="o@x"))
        with pytest.raises(ValueError):
            async with session.begin():
                await session.insert(User(name="inner", email="in@x"))
                raise ValueError
        async with session.begin():
            await session.insert(User(name="inner2", email="in2@x"))
    assert await names(session) == ["inner2", "outer"]


async def test_simple_calls_join_the_transaction(session, engine):
    async with session.begin():
        u = await session.insert(User(name="t", email="t@x"))
        # the same connection sees its own uncommitted row
        assert (await session.get(User, u.id)).name == "t"
        assert await session.query(User).count() == 1
        other = await create_engine(engine.url, pragmas={"busy_timeout": 1} if engine.dialect == "sqlite" else None)
        try:
            # not yet visible outside the transaction
            assert await AsyncSession(other).query(User).count() == 0
        finally:
            await other.dispose()


async def test_integrity_error_inside_transaction_rolls_back(session):
    await session.insert(User(name="a", email="dup@x"))
    with pytest.raises(IntegrityError):
        async with session.begin():
            await session.insert(User(name="b", email="new@x"))
            await session.insert(User(name="c", email="dup@x"))
    assert await names(session) == ["a"]
    # the session works afterwards
    async with session.begin():
        await session.insert(User(name="d", email="d@x"))
    assert await names(session) == ["a", "d"]


async def test_using_a_session_from_two_tasks_raises(session):
    with pytest.raises(InterfaceError, match="two tasks"):
        async with session.begin():
            await asyncio.gather(session.query(User).count(), session.query(User).count())
    with pytest.raises(InterfaceError, match="two tasks"):
        async with session.begin():
            first = session.insert(User(name="a", email="a@x"))
            session.insert(User(name="b", email="b@x"))
    del first
    # the transaction was rolled back; the session is usable afterwards
    assert await session.query(User).count() == 0
    async with session.begin():
        await session.insert(User(name="c", email="c@x"))
    assert await names(session) == ["c"]


async def test_concurrent_transactions_on_one_engine_serialize_writes(engine):
    async def work(i: int) -> None:
        async with session_context(engine) as s:
            await s.insert(User(name=f"w{i}", email=f"w{i}@x"))
            n = await s.query(User).count()
            await s.query(User).filter(name=f"w{i}").update(age=n)

    await asyncio.gather(*(work(i) for i in range(4)))
    s = AsyncSession(engine)
    assert await s.query(User).count() == 4
    ages = await s.query(User).values_list("age", flat=True)
    assert all(a is not None and 1 <= a <= 4 for a in ages)


async def test_add_flush_commit_rollback(session):
    u = User(name="f", email="f@x")
    session.add(u)
    assert u.id is None
    await session.flush()
    assert isinstance(u.id, int)
    session.add_all([User(name="g", email="g@x"), User(name="h", email="h@x")])
    await session.rollback()
    await session.commit()
    assert await names(session) == ["f"]
    session.add(User(name="i", email="i@x", posts=[Post(title="p")]))
    await session.commit()
    users = await session.query(User).options(selectinload("posts")).filter(name="i").all()
    assert [p.title for p in users[0].posts] == ["p"]


async def test_session_as_context_manager_rolls_back_open_transaction(engine):
    async with AsyncSession(engine) as s:
        async with s.begin():
            await s.insert(User(name="x", email="x@x"))
    s2 = AsyncSession(engine)
    assert await s2.query(User).count() == 1
    s3 = AsyncSession(engine)
    await s3.begin().__aenter__()
    await s3.insert(User(name="y", email="y@x"))
    await s3.close()
    assert await s2.query(User).count() == 1
    with pytest.raises(InterfaceError):
        s3.query(User).count()


# select()


async def test_select_api(session):
    await session.insert_all(
        [User(name="Al", email="al@x", age=30), User(name="Bo", email="bo@x", age=12), User(name="Ann", email="an@x")]
    )
    r = await session.execute(select(User).where(User.age >= 18, User.name.like("A%")).order_by(User.age.desc()))
    assert [u.name for u in r.scalars().all()] == ["Al"]
    r = await session.execute(select(User).where((User.age < 18) | User.age.is_(None)).order_by(User.name))
    assert [u.name for u in r.scalars()] == ["Ann", "Bo"]
    r = await session.execute(select(User).where(User.name.in_(["Al", "Bo"]), User.age.is_not(None)).order_by("name"))
    assert [u.name for u in r.scalars()] == ["Al", "Bo"]
    r = await session.execute(select(User).where(~(User.name == "Al"), User.name != "Bo"))
    assert [u.name for u in r.scalars()] == ["Ann"]
    assert (await session.execute(select(User).where(User.name == "Bo"))).scalar_one().age == 12
    assert (await session.execute(select(User).where(User.name == "Zed"))).scalar_one_or_none() is None
    with pytest.raises(NoResultFound):
        (await session.execute(select(User).where(User.name == "Zed"))).scalar_one()
    with pytest.raises(MultipleResultsFound):
        (await session.execute(select(User))).scalar_one()
    r = await session.execute(select(User).order_by(User.name).limit(2).offset(1))
    assert [u.name for u in r.scalars()] == ["Ann", "Bo"]
    assert (await session.execute(select(User).order_by(User.name.asc()))).scalars().first().name == "Al"
    r = await session.execute(select(User).where(User.name.not_in(["Al"]), User.name.ilike("b%")))
    assert [u.name for u in r.scalars()] == ["Bo"]
    # select() and filter() compile to the same SQL
    a = select(User).where(User.age >= 18).to_query(session).sql()
    b = session.query(User).filter(Q_age_gte_18()).sql()
    assert a == b


def Q_age_gte_18():  # noqa: N802 - names the lookup it builds
    from ormkit import Q

    return Q(age__gte=18)


async def test_select_rejects_non_conditions(session):
    with pytest.raises(TypeError):
        select(User).where("age > 3")
    with pytest.raises(TypeError):
        select(42)


# upsert


async def test_upsert_inserts_then_updates(session):
    a = await session.upsert(User(email="alice@x", name="Alice"), conflict_target="email", update_fields=["name"])
    assert isinstance(a.id, int) and a.name == "Alice"
    b = await session.upsert(
        User(email="alice@x", name="Alicia", age=9), conflict_target="email", update_fields=["name"]
    )
    assert b.id == a.id and b.name == "Alicia"
    # the returned instance carries the row as stored: age was not in update_fields
    assert b.age is None
    assert await session.query(User).count() == 1
    users = await session.upsert_all(
        [User(email="alice@x", name="A2"), User(email="bob@x", name="Bob")],
        conflict_target="email",
        update_fields=["name"],
    )
    assert [u.name for u in users] == ["A2", "Bob"] and users[0].id == a.id
    assert sorted(await session.query(User).values_list("name", flat=True)) == ["A2", "Bob"]


async def test_upsert_onto_a_row_the_session_holds_answers_the_held_object(session, engine):
    """An upsert of another instance onto a row the session holds answers the session's object,
    which takes the row as stored (what the upsert wrote wins over its unflushed change) and
    whose later changes are written; the instance given carries the stored row but stays
    outside the session."""
    held = await session.insert(User(email="h@x", name="Held", age=1))
    held.age = 5
    given = User(email="h@x", name="Upserted", age=9)
    got = await session.upsert(given, conflict_target="email", update_fields=["name", "age"])
    assert got is held
    assert (held.name, held.age) == ("Upserted", 9)
    assert (given.id, given.name, given.age) == (held.id, "Upserted", 9)
    assert await session.get(User, held.id) is held
    with engine.query_log() as log:
        await session.commit()
    assert log.statements == []
    held.name = "Later"
    await session.commit()
    stored = await AsyncSession(engine).get(User, held.id)
    assert (stored.name, stored.age) == ("Later", 9)
    # Two instances onto one new row in one call: both answers are the first one, tracked.
    a, b = await session.upsert_all([User(email="n@x", name="A"), User(email="n@x", name="B")], "email")
    assert a is b and a.name == "B"
    a.name = "C"
    await session.commit()
    assert (await AsyncSession(engine).get(User, a.id)).name == "C"


async def test_upsert_onto_a_held_row_rolled_back_gives_both_objects_their_state_back(session, engine):
    """Rolled back, an upsert onto a row the session holds leaves the held object as the
    database has it again, and the instance given gets back the key it had (none)."""
    held = await session.insert(User(email="r@x", name="Held"))
    given = User(email="r@x", name="Upserted")
    with pytest.raises(RuntimeError):
        async with session.begin():
            assert await session.upsert(given, conflict_target="email") is held
            assert held.name == "Upserted" and given.id == held.id
            raise RuntimeError("undo")
    assert held.name == "Held" and given.id is None
    assert (await AsyncSession(engine).get(User, held.id)).name == "Held"
    with engine.query_log() as log:
        await session.commit()
    assert log.statements == []


async def test_upsert_rolled_back_leaves_the_object_new_with_the_key_it_had(session, engine):
    # Inserted by the upsert, then rolled back: the row is gone and the generated key with it.
    with pytest.raises(RuntimeError):
        async with session.begin():
            fresh = await session.upsert(User(email="new@x", name="New"), conflict_target="email")
            assert isinstance(fresh.id, int)
            raise RuntimeError("undo")
    assert fresh.id is None
    assert await session.query(User).count() == 0
    await session.insert(fresh)  # new to the session again: inserted afresh
    assert isinstance(fresh.id, int)

    # A row the session had not seen, changed by the upsert, then rolled back: the database
    # keeps the old values and the object is new to the session again (a key given stays).
    other = AsyncSession(engine)
    kept = await other.insert(User(email="old@x", name="Old"))
    with pytest.raises(RuntimeError):
        async with session.begin():
            u = await session.upsert(User(id=kept.id, email="old@x", name="Changed"), conflict_target="id")
            assert u.name == "Changed"
            raise RuntimeError("undo")
    assert u.id == kept.id
    assert (await AsyncSession(engine).get(User, kept.id)).name == "Old"
    assert await session.get(User, kept.id) is not u

    # An object the session tracked keeps being tracked, back at what the database holds.
    t = await session.get(User, kept.id)
    with pytest.raises(RuntimeError):
        async with session.begin():
            assert await session.upsert(t, conflict_target="id") is t
            t.name = "Renamed"
            await session.upsert(t, conflict_target="id")
            raise RuntimeError("undo")
    assert await session.get(User, kept.id) is t and t.name == "Old"


async def test_upsert_rolled_back_twice_on_one_row_and_over_a_tracked_object(session, engine):
    # Two objects upserted onto one new row: after the rollback neither keeps its key.
    with pytest.raises(RuntimeError):
        async with session.begin():
            a = await session.upsert(User(email="n@x", name="A"), conflict_target="email")
            b = await session.upsert(User(email="n@x", name="B"), conflict_target="email")
            assert a.id == b.id
            raise RuntimeError("undo")
    assert a.id is None and b.id is None
    (c, d) = await session.upsert_all([User(email="m@x", name="C"), User(email="m@x", name="D")], "email")
    assert c.id == d.id and await session.query(User).count() == 1

    # An upsert of another object onto a row the session tracks: the tracked one is back after
    # the rollback, and its later changes are written.
    x = await AsyncSession(engine).insert(User(email="x@x", name="X"))
    x = await session.get(User, x.id)
    with pytest.raises(RuntimeError):
        async with session.begin():
            await session.upsert(User(id=x.id, email="x@x", name="Other"), conflict_target="id")
            raise RuntimeError("undo")
    assert await session.get(User, x.id) is x and x.name == "X"
    x.name = "Changed"
    await session.commit()
    assert (await AsyncSession(engine).get(User, x.id)).name == "Changed"


async def test_insert_over_a_tracked_object_rolled_back_gives_it_back(session, engine):
    for insert in ("insert", "insert_all"):
        x = await session.insert(User(email=f"{insert}@x", name="X"))
        key = x.id
        with pytest.raises(RuntimeError):
            async with session.begin():
                await session.query(User).filter(id=key).delete()  # x stays in the session
                if insert == "insert":
                    await session.insert(User(id=key, email=f"{insert}@x", name="Y"))
                else:
                    await session.insert_all([User(id=key, email=f"{insert}@x", name="Y")])
                raise RuntimeError("undo")
        assert x.id == key and await session.get(User, key) is x and x.name == "X"


async def test_update_through_another_object_is_not_written_back_by_the_tracked_one(session, engine):
    x = await session.insert(User(email="u@x", name="X", age=1))
    other = await AsyncSession(engine).get(User, x.id)  # the same row, another object
    x.age = 2  # a change of x's own, not flushed yet
    await session.update(other, name="Renamed")
    assert x.name == "Renamed" and x.age == 2
    await session.commit()
    got = await AsyncSession(engine).get(User, x.id)
    assert (got.name, got.age) == ("Renamed", 2)


async def test_reinserting_the_tracked_object_rolled_back_keeps_it(session, engine):
    x = await session.insert(User(email="same@x", name="X"))
    key = x.id
    with pytest.raises(RuntimeError):
        async with session.begin():
            await session.query(User).filter(id=key).delete()  # x stays in the session
            await session.insert(x)  # the same object, inserted again
            raise RuntimeError("undo")
    assert x.id == key and await session.get(User, key) is x
    x.name = "Y"
    await session.commit()
    assert (await AsyncSession(engine).get(User, key)).name == "Y"


async def test_upsert_default_update_fields_and_errors(session):
    await session.upsert(User(email="c@x", name="C", age=1), conflict_target="email")
    c = await session.upsert(User(email="c@x", name="C2", age=2), conflict_target="email")
    assert (c.name, c.age) == ("C2", 2)
    with pytest.raises(FieldError, match="not unique"):
        await session.upsert(User(email="d@x", name="D"), conflict_target="name")
    with pytest.raises(FieldError):
        await session.upsert(User(email="d@x", name="D"), conflict_target="nope")
    with pytest.raises(FieldError):
        await session.upsert(User(email="d@x", name="D"), conflict_target="email", update_fields=["nope"])


# soft delete


async def test_soft_delete_restore_force_delete(session):
    a, b, c = await session.insert_all(
        [Article(title="a", views=1), Article(title="b", views=2), Article(title="c", views=3)]
    )
    await session.soft_delete(b)
    assert isinstance(b.deleted_at, dt.datetime)
    assert [x.title for x in await session.query(Article).order_by("id").all()] == ["a", "c"]
    assert await session.query(Article).count() == 2
    assert await session.query(Article).sum("views") == 4
    assert await session.get(Article, b.id) is None
    assert [x.title for x in await session.query(Article).with_deleted().order_by("id").all()] == ["a", "b", "c"]
    assert [x.title for x in await session.query(Article).only_deleted().all()] == ["b"]
    assert await session.query(Article).only_deleted().count() == 1
    await session.restore(b)
    assert b.deleted_at is None
    assert await session.query(Article).count() == 3
    await session.force_delete(c)
    assert await session.query(Article).with_deleted().count() == 2
    with pytest.raises(FieldError, match="soft-deletable"):
        session.query(User).with_deleted()
    with pytest.raises(TypeError):
        session.soft_delete(User(name="x", email="x"))


async def test_bulk_update_of_query_skips_soft_deleted(session):
    a, b = await session.insert_all([Article(title="a"), Article(title="b")])
    await session.soft_delete(a)
    assert await session.query(Article).update(views=7) == 1
    rows = await session.query(Article).with_deleted().order_by("id").values_list("views", flat=True)
    assert rows == [0, 7]


async def test_open_engine_helper_is_usable(backend, tmp_path):
    eng, cleanup = await open_engine(backend, tmp_path)
    try:
        await eng.create_all()
        assert await AsyncSession(eng).query(User).count() == 0
    finally:
        await cleanup()


# streaming


async def test_stream_yields_every_row_in_batches(session):
    await session.insert_all([User(name=f"u{i:04}", email=f"u{i}@x", age=i % 7) for i in range(2500)])
    seen = [u.name async for u in session.query(User).filter(age__gte=1).order_by("name").stream(batch_size=300)]
    expected = await session.query(User).filter(age__gte=1).order_by("name").values_list("name", flat=True)
    assert seen == expected and len(seen) > 2000
    assert [u async for u in session.query(User).filter(name="none").stream()] == []


async def test_breaking_out_of_a_stream_frees_the_connection(session, engine):
    await session.insert_all([User(name=f"u{i}", email=f"u{i}@x") for i in range(50)])
    for _ in range(12):  # more streams than connections: each must give its connection back
        stream = session.query(User).order_by("id").stream(batch_size=10)
        async for u in stream:
            if u.id >= 3:
                break
        await stream.aclose()
    assert await session.query(User).count() == 50
    with log_of(engine) as log:
        assert len([u async for u in session.query(User).stream(batch_size=20)]) == 50
    assert len(log) <= 1


def log_of(engine):
    return engine.query_log()


async def test_stream_errors(session):
    with pytest.raises(Exception, match="batch_size"):
        session.query(User).stream(batch_size=0)
    async with session.begin():
        with pytest.raises(InterfaceError, match="outside session.begin"):
            session.query(User).stream()


class Forum(Base):
    __tablename__ = "s_forums"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]

    threads: Mapped[list[Thread]] = relationship(back_populates="forum")


class Thread(SoftDeleteMixin, Base):
    __tablename__ = "s_threads"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    forum_id: Mapped[int] = mapped_column(ForeignKey("s_forums.id"))

    forum: Mapped[Forum] = relationship(back_populates="threads")


async def test_eager_loads_leave_soft_deleted_children_out(session):
    f = await session.insert(Forum(name="f", threads=[Thread(title="a"), Thread(title="b"), Thread(title="c")]))
    await session.soft_delete(f.threads[1])
    for option in (selectinload("threads"), joinedload("threads")):
        (forum,) = await session.query(Forum).options(option).all()
        assert [t.title for t in forum.threads] == ["a", "c"], option
    await session.load(f, "threads")
    assert [t.title for t in f.threads] == ["a", "c"]


# identity map and dirty tracking


async def test_identity_map_gives_one_object_per_row(session):
    u = await session.insert(User(name="a", email="a@x"))
    assert await session.get(User, u.id) is u
    (again,) = await session.query(User).filter(name="a").all()
    assert again is u
    p = await session.insert(Post(title="t", author_id=u.id))
    (post,) = await session.query(Post).options(joinedload("author")).all()
    assert post is p and post.author is u
    other = AsyncSession(session.engine)
    assert await other.get(User, u.id) is not u


async def test_commit_updates_only_changed_columns(session, engine):
    u = await session.insert(User(name="a", email="a@x", age=1, metadata={"k": 1}))
    loaded = await session.get(User, u.id)
    loaded.age = 2
    with engine.query_log() as log:
        await session.commit()
    updates = [q for q in log.statements if q.startswith("UPDATE")]
    assert len(updates) == 1 and '"age"' in updates[0] and '"name"' not in updates[0]
    loaded.metadata["k"] = 2  # an in-place change of a JSON value is seen too
    await session.commit()
    fresh = await AsyncSession(engine).get(User, u.id)
    assert (fresh.age, fresh.metadata) == (2, {"k": 2})
    assert loaded.age == 2  # readable after commit
    with engine.query_log() as log:
        await session.commit()
    assert not [q for q in log.statements if q.startswith("UPDATE")]


async def test_dirty_changes_commit_inside_begin_and_roll_back_with_it(session, engine):
    u = await session.insert(User(name="a", email="a@x"))
    async with session.begin():
        u.name = "b"
    assert (await AsyncSession(engine).get(User, u.id)).name == "b"
    with pytest.raises(RuntimeError):
        async with session.begin():
            u.name = "c"
            await session.flush()
            raise RuntimeError
    assert (await AsyncSession(engine).get(User, u.id)).name == "b"


async def test_without_identity_map_reads_are_fresh_objects(engine):
    session = AsyncSession(engine, identity_map=False)
    u = await session.insert(User(name="a", email="a@x"))
    assert await session.get(User, u.id) is not u


async def test_reading_a_row_again_brings_the_object_up_to_date(session, engine):
    """A row changed behind the session (another session, a bulk update, a database cascade)
    updates the session's object when it is read again; an attribute the user changed and has
    not flushed keeps the user's value, and the next flush still writes it."""
    u = await session.insert(User(name="a", email="a@x", age=1))
    await AsyncSession(engine).update(await AsyncSession(engine).get(User, u.id), name="b", age=5)
    u.age = 9  # a change of our own, not flushed yet
    assert await session.get(User, u.id) is u
    assert (u.name, u.age) == ("b", 9)
    await session.commit()
    fresh = await AsyncSession(engine).get(User, u.id)
    assert (fresh.name, fresh.age) == ("b", 9)
    # a bulk update through the same session is seen by the next read too
    await session.bulk_update(User, {"name": "c"}, id=u.id)
    (again,) = await session.query(User).filter(id=u.id).all()
    assert again is u and u.name == "c"
    with engine.query_log() as log:
        await session.commit()
    assert not [q for q in log.statements if q.startswith("UPDATE")]  # nothing left to write


async def test_database_cascades_are_seen_on_the_next_read(session):
    """ON DELETE CASCADE removes child rows in the database only; the session's child object
    is not handed back by a later read."""
    u = await session.insert(User(name="a", email="a@x"))
    p = await session.insert(Post(title="t", author_id=u.id))
    assert await session.get(Post, p.id) is p
    await session.remove(u)
    assert await session.get(Post, p.id) is None
    assert await session.query(Post).all() == []


async def test_refresh_drops_unflushed_changes_and_leaves_nothing_to_write(session, engine):
    u = await session.insert(User(name="a", email="a@x", age=1))
    await AsyncSession(engine).bulk_update(User, {"age": 2}, id=u.id)
    u.name = "mine"
    u.age = 7
    await session.refresh(u, ["age"])
    assert (u.name, u.age) == ("mine", 2)
    with engine.query_log() as log:
        await session.commit()
    updates = [q for q in log.statements if q.startswith("UPDATE")]
    assert len(updates) == 1 and '"name"' in updates[0] and '"age"' not in updates[0]
    fresh = await AsyncSession(engine).get(User, u.id)
    assert (fresh.name, fresh.age) == ("mine", 2)


async def test_stream_refuses_relationship_options(session):
    await session.insert_all([Forum(id=1, name="f1"), Forum(id=2, name="f2")])
    with pytest.raises(Exception, match=r"Forum: stream\(\) loads no relationships.*\.all\(\)"):
        session.query(Forum).options(selectinload("threads")).stream()
    got = [f.id async for f in session.query(Forum).order_by("id").stream(batch_size=1)]
    assert got == [1, 2]
