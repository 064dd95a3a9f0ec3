"""Engines: URLs, PRAGMAs, dispose, raw SQL results and errors, and the async contract (a long
query never stalls the event loop; a cancelled query stops and the engine stays usable)."""

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ormkit import (
    AsyncSession,
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OrmKitError,
    ProgrammingError,
    create_engine,
)
from tests.models import Post, User

ROOT = Path(__file__).resolve().parent.parent


def _ph(engine, n: int) -> str:
    """The n-th (1-based) placeholder of the engine's dialect."""
    return "?" if engine.dialect == "sqlite" else f"${n}"


def _count_to(n: int) -> str:
    """A CPU-bound query (same SQL on SQLite and PostgreSQL) returning ``n``."""
    return f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) SELECT count(*) FROM c"


async def _pragma(engine, name: str):
    return (await engine.execute(f"PRAGMA {name}", [])).scalar()


async def _pragma_on_every_connection(engine, name: str, n: int = 12) -> set:
    """Runs the PRAGMA concurrently so that every pooled connection answers at least once."""
    results = await asyncio.gather(*[engine.execute(f"PRAGMA {name}", []) for _ in range(n)])
    return {r.scalar() for r in results}


# ---------------------------------------------------------------- URLs (SQLite)


async def test_relative_sqlite_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    engine = await create_engine("sqlite:///rel.db")
    try:
        assert engine.dialect == "sqlite"
        await engine.create_all(User)
        await AsyncSession(engine).insert(User(name="A", email="a@x"))
    finally:
        await engine.dispose()
    assert (tmp_path / "rel.db").is_file()
    engine = await create_engine("sqlite:///rel.db")
    async with engine:
        assert await AsyncSession(engine).query(User).count() == 1


async def test_relative_sqlite_url_in_subdirectory(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    async with await create_engine("sqlite:///sub/rel.db") as engine:
        await engine.execute("CREATE TABLE e_rel(x INTEGER)", [])
    assert (tmp_path / "sub" / "rel.db").is_file()


async def test_absolute_sqlite_url(tmp_path):
    path = tmp_path / "abs.db"
    url = f"sqlite:///{path}"  # tmp_path is absolute: sqlite:////...
    assert url.startswith("sqlite:////")
    engine = await create_engine(url)
    try:
        assert engine.dialect == "sqlite"
        assert str(path) in engine.url
        await engine.create_all(User)
        await AsyncSession(engine).insert(User(name="A", email="a@x"))
    finally:
        await engine.dispose()
    assert path.is_file()
    async with await create_engine(url) as engine:
        assert (await AsyncSession(engine).query(User).first()).name == "A"


async def test_memory_url_shared_by_sessions():
    async with await create_engine("sqlite::memory:") as engine:
        await engine.create_all(User, Post)
        s1, s2 = AsyncSession(engine), AsyncSession(engine)
        u = await s1.insert(User(name="A", email="a@x"))
        assert (await s2.get(User, u.id)).name == "A"
        await s2.update(u, name="B")
        assert (await s1.get(User, u.id)).name == "B"
        # concurrent queries all see the one database
        counts = await asyncio.gather(*[AsyncSession(engine).query(User).count() for _ in range(10)])
        assert counts == [1] * 10
        assert (await engine.execute("SELECT count(*) FROM t_users", [])).scalar() == 1


async def test_memory_engines_are_independent():
    async with await create_engine("sqlite::memory:") as a, await create_engine("sqlite::memory:") as b:
        await a.create_all(User)
        await b.create_all(User)
        await AsyncSession(a).insert(User(name="A", email="a@x"))
        assert await AsyncSession(b).query(User).count() == 0


@pytest.mark.parametrize("url", ["mysql://localhost/db", "bogus", "", "http://example.com/x.db", "sqlite3:///x.db"])
async def test_unknown_url_scheme_rejected(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InterfaceError) as ei:
        await asyncio.wait_for(create_engine(url), 5)
    assert "sqlite" in str(ei.value).lower()  # the message shows the accepted forms
    assert list(tmp_path.iterdir()) == []


async def test_sqlite_url_without_file_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InterfaceError):
        await create_engine("sqlite:///")


async def test_malformed_sqlite_file_url_not_silently_in_memory(tmp_path, monkeypatch):
    """``sqlite:/x.db`` (one slash) names a file; it must not silently open a throwaway
    in-memory database (the data would be lost at dispose)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InterfaceError):
        engine = await create_engine("sqlite:/x.db")
        await engine.dispose()


async def test_engine_url_and_dialect(engine):
    assert engine.dialect in ("sqlite", "postgresql")
    assert engine.url.startswith(engine.dialect)
    assert engine.url in repr(engine)


# ---------------------------------------------------------------- PRAGMAs (SQLite)


async def test_default_pragmas_for_files(engine):
    if engine.dialect != "sqlite":
        assert (await engine.execute("SELECT 1", [])).scalar() == 1
        return
    assert await _pragma_on_every_connection(engine, "journal_mode") == {"wal"}
    assert await _pragma_on_every_connection(engine, "synchronous") == {1}  # NORMAL
    assert await _pragma_on_every_connection(engine, "foreign_keys") == {1}
    assert await _pragma_on_every_connection(engine, "busy_timeout") == {5000}


async def test_wal_file_created(tmp_path):
    async with await create_engine(f"sqlite:///{tmp_path}/w.db") as engine:
        await engine.create_all(User)
        await AsyncSession(engine).insert(User(name="A", email="a@x"))
        assert (tmp_path / "w.db-wal").exists()


async def test_memory_pragmas():
    async with await create_engine("sqlite::memory:") as engine:
        assert await _pragma(engine, "journal_mode") == "memory"
        assert await _pragma(engine, "foreign_keys") == 1


async def test_pragmas_override_defaults(tmp_path):
    engine = await create_engine(
        f"sqlite:///{tmp_path}/p.db", pragmas={"journal_mode": "delete", "synchronous": "full"}
    )
    async with engine:
        assert await _pragma_on_every_connection(engine, "journal_mode") == {"delete"}
        assert await _pragma_on_every_connection(engine, "synchronous") == {2}  # FULL
        # untouched defaults stay
        assert await _pragma_on_every_connection(engine, "foreign_keys") == {1}
        assert await _pragma_on_every_connection(engine, "busy_timeout") == {5000}
        await engine.create_all(User)
        await AsyncSession(engine).insert(User(name="A", email="a@x"))
    assert not (tmp_path / "p.db-wal").exists()


async def test_pragmas_numeric_and_case(tmp_path):
    engine = await create_engine(
        f"sqlite:///{tmp_path}/p.db", pragmas={"busy_timeout": 1234, "synchronous": "OFF", "cache_size": -4000}
    )
    async with engine:
        assert await _pragma_on_every_connection(engine, "busy_timeout") == {1234}
        assert await _pragma_on_every_connection(engine, "synchronous") == {0}
        assert await _pragma_on_every_connection(engine, "cache_size") == {-4000}


async def test_foreign_keys_can_be_turned_off(tmp_path):
    async with await create_engine(f"sqlite:///{tmp_path}/f.db", pragmas={"foreign_keys": "off"}) as engine:
        assert await _pragma_on_every_connection(engine, "foreign_keys") == {0}
        await engine.create_all(User, Post)
        await AsyncSession(engine).insert(Post(title="orphan", author_id=999))


async def test_foreign_keys_enforced_by_default(engine, session):
    with pytest.raises(IntegrityError):
        await session.insert(Post(title="orphan", author_id=999))


@pytest.mark.parametrize(
    "pragmas",
    [
        {"journal_mode": "bogus"},
        {"synchronous": "sometimes"},
        {"busy_timeout": "abc"},
        {"journal_mode": "delete; DROP TABLE t_users"},
    ],
    ids=["journal_mode-bogus", "synchronous-sometimes", "busy_timeout-abc", "injection"],
)
async def test_bad_pragma_value_rejected(tmp_path, pragmas):
    ((name, value),) = pragmas.items()
    with pytest.raises((OrmKitError, ValueError)) as ei:
        engine = await create_engine(f"sqlite:///{tmp_path}/bad.db", pragmas=pragmas)
        await engine.dispose()
    msg = str(ei.value)
    assert name in msg and str(value).split(";")[0] in msg, msg


async def test_unknown_pragma_name_rejected(tmp_path):
    """A misspelt PRAGMA must not be silently ignored (SQLite ignores unknown PRAGMAs)."""
    with pytest.raises((OrmKitError, ValueError)) as ei:
        engine = await create_engine(f"sqlite:///{tmp_path}/bad.db", pragmas={"journalmode": "delete"})
        await engine.dispose()
    assert "journalmode" in str(ei.value)


async def test_bad_pool_size(tmp_path):
    with pytest.raises((InterfaceError, ValueError)):
        await create_engine(f"sqlite:///{tmp_path}/x.db", pool_size=0)


# ---------------------------------------------------------------- dispose


async def test_async_with_disposes(tmp_path):
    async with await create_engine(f"sqlite:///{tmp_path}/c.db") as engine:
        assert (await engine.execute("SELECT 1", [])).scalar() == 1
    with pytest.raises(InterfaceError):
        await asyncio.wait_for(engine.execute("SELECT 1", []), 5)


async def test_async_with_disposes_on_exception(tmp_path):
    engine = await create_engine(f"sqlite:///{tmp_path}/c.db")
    with pytest.raises(RuntimeError):
        async with engine:
            raise RuntimeError("boom")
    with pytest.raises(InterfaceError):
        await asyncio.wait_for(engine.execute("SELECT 1", []), 5)


async def _second_engine(engine):
    """Another engine on the fixture's database (the fixture's own engine must outlive the
    test: its cleanup still needs it on PostgreSQL)."""
    return await create_engine(engine.url)


async def test_use_after_dispose_raises_interface_error(engine):
    engine = await _second_engine(engine)
    session = AsyncSession(engine)
    u = await session.insert(User(name="A", email="a@x"))
    await engine.dispose()
    calls = [
        lambda: engine.execute("SELECT 1", []),
        lambda: session.execute_raw("SELECT 1", []),
        lambda: session.insert(User(name="B", email="b@x")),
        lambda: session.get(User, u.id),
        lambda: session.query(User).all(),
        lambda: session.query(User).count(),
        lambda: session.update(u, name="C"),
        lambda: session.remove(u),
        lambda: engine.create_all(),
    ]
    for call in calls:
        with pytest.raises(InterfaceError, match="dispos"):
            await asyncio.wait_for(call(), 5)  # an error, never a hang


async def test_dispose_twice_is_harmless(engine):
    engine = await _second_engine(engine)
    assert (await engine.execute("SELECT 1", [])).scalar() == 1
    await engine.dispose()
    await asyncio.wait_for(engine.dispose(), 5)


async def _await(awaitable):
    return await awaitable


async def test_dispose_finishes_queued_work(engine):
    engine = await _second_engine(engine)
    task = asyncio.create_task(_await(engine.execute(_count_to(200_000), [])))
    await asyncio.sleep(0.01)
    await engine.dispose()
    assert (await asyncio.wait_for(task, 10)).scalar() == 200_000


async def test_process_exits_cleanly_after_dispose(tmp_path):
    """Interpreter shutdown after using and disposing an engine must not abort the process
    (runs a few times: the crash, when present, is intermittent)."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio
            from ormkit import create_engine

            async def main():
                engine = await create_engine("sqlite:///{tmp_path}/s.db")
                assert (await engine.execute("SELECT 1", [])).scalar() == 1
                await engine.dispose()

            asyncio.run(main())
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    async def run_once():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, err.decode(errors="replace")

    results = await asyncio.gather(*[run_once() for _ in range(4)])
    for rc, err in results:
        assert rc == 0, err
        assert "Fatal Python error" not in err, err


# ---------------------------------------------------------------- raw SQL results


async def _seed(session):
    return await session.insert_all(
        [
            User(name="Alice", email="alice@x", age=30),
            User(name="Bob", email="bob@x", age=17),
            User(name="Carol", email="carol@x", age=None),
        ]
    )


async def test_execute_with_params_rows_by_name_index_attribute(engine, session):
    await _seed(session)
    r = await engine.execute(f"SELECT id, name, age FROM t_users WHERE age > {_ph(engine, 1)} ORDER BY id", [18])
    rows = r.all()
    assert len(rows) == 1 and len(r) == 1
    row = rows[0]
    assert row["name"] == "Alice" and row.name == "Alice" and row[1] == "Alice"
    assert row["age"] == 30 and row[2] == 30 and row[-1] == 30
    assert tuple(row)[1:] == ("Alice", 30)
    assert row.as_dict() == {"id": row[0], "name": "Alice", "age": 30}
    assert r.columns == ["id", "name", "age"]


async def test_row_errors(engine):
    row = (await engine.execute("SELECT 1 AS a, 2 AS b", [])).first()
    with pytest.raises(KeyError):
        row["nope"]
    with pytest.raises(AttributeError):
        _ = row.nope
    with pytest.raises(IndexError):
        row[5]
    assert len(row) == 2


async def test_result_shapes(engine, session):
    await _seed(session)
    r = await engine.execute("SELECT name, age FROM t_users ORDER BY id", [])
    assert r.tuples() == [("Alice", 30), ("Bob", 17), ("Carol", None)]
    assert r.column("name") == ["Alice", "Bob", "Carol"]
    assert r.column(1) == [30, 17, None]
    assert r.dicts() == [
        {"name": "Alice", "age": 30},
        {"name": "Bob", "age": 17},
        {"name": "Carol", "age": None},
    ]
    assert r.first()["name"] == "Alice"
    assert r.scalar() == "Alice"
    assert [tuple(x) for x in r.all()] == r.tuples()  # results can be read more than once
    with pytest.raises(KeyError):
        r.column("nope")


async def test_scalar_and_empty_result(engine, session):
    await _seed(session)
    assert (await engine.execute("SELECT count(*) FROM t_users", [])).scalar() == 3
    empty = await engine.execute(f"SELECT id, name FROM t_users WHERE id = {_ph(engine, 1)}", [-1])
    assert empty.all() == [] and empty.tuples() == [] and empty.dicts() == []
    assert empty.first() is None and empty.scalar() is None
    assert empty.column("name") == []
    assert empty.columns == ["id", "name"]
    assert len(empty) == 0


async def test_session_execute_raw(engine, session):
    await _seed(session)
    result = await session.execute_raw(f"SELECT * FROM t_users WHERE age > {_ph(engine, 1)}", [18])
    rows = result.all()
    assert [(row["name"], row["age"]) for row in rows] == [("Alice", 30)]
    assert rows[0].email == "alice@x"


async def test_rowcount_for_update_delete_insert(engine, session):
    await _seed(session)
    r = await engine.execute(f"UPDATE t_users SET role = {_ph(engine, 1)} WHERE age IS NOT NULL", ["adult"])
    assert r.rowcount == 2
    r = await engine.execute(f"UPDATE t_users SET role = {_ph(engine, 1)} WHERE id = {_ph(engine, 2)}", ["x", -1])
    assert r.rowcount == 0
    r = await session.execute_raw(f"DELETE FROM t_users WHERE name = {_ph(engine, 1)}", ["Bob"])
    assert r.rowcount == 1
    r = await engine.execute(
        "INSERT INTO t_users (name, email, role, vip, metadata) VALUES "
        f"({_ph(engine, 1)}, {_ph(engine, 2)}, 'm', {_ph(engine, 3)}, '{{}}')",
        ["D", "d@x", False],
    )
    assert r.rowcount == 1
    assert await session.query(User).filter(role="adult").count() == 1
    assert await session.query(User).count() == 3


async def test_parameters_are_bound(engine, session):
    await _seed(session)
    evil = "x'); DROP TABLE t_users; --\"quoted\" \\ ''"
    await engine.execute(f"UPDATE t_users SET name = {_ph(engine, 1)} WHERE email = {_ph(engine, 2)}", [evil, "bob@x"])
    r = await engine.execute(f"SELECT name FROM t_users WHERE name = {_ph(engine, 1)}", [evil])
    assert r.column("name") == [evil]
    assert (await engine.execute("SELECT count(*) FROM t_users", [])).scalar() == 3
    assert (await engine.execute(f"SELECT {_ph(engine, 1)} AS v", ["'; --"])).scalar() == "'; --"


async def test_parameter_types_bind(engine):
    if engine.dialect == "sqlite":
        ph = ["?"] * 5
    else:  # untyped parameters are inferred as text on PostgreSQL: say what they are
        ph = ["$1::text", "$2::bigint", "$3::float8", "$4::text", "$5::bytea"]
    r = await engine.execute(
        f"SELECT {ph[0]} AS a, {ph[1]} AS b, {ph[2]} AS c, {ph[3]} AS d, {ph[4]} AS e",
        [None, -(2**62), 1.5, "héllo 😀", b"\x00\xff"],
    )
    assert r.tuples() == [(None, -(2**62), 1.5, "héllo 😀", b"\x00\xff")]


async def test_params_as_tuple_and_none(engine):
    assert (await engine.execute(f"SELECT {_ph(engine, 1)} + 1", (41,))).scalar() == 42
    assert (await engine.execute("SELECT 7", None)).scalar() == 7
    assert (await engine.execute("SELECT 8")).scalar() == 8


async def test_wrong_parameter_count_raises_programming_error(engine):
    with pytest.raises(ProgrammingError):
        await engine.execute(f"SELECT {_ph(engine, 1)}, {_ph(engine, 2)}", [1])
    with pytest.raises(ProgrammingError):
        await engine.execute(f"SELECT {_ph(engine, 1)}", [1, 2])
    with pytest.raises(ProgrammingError):
        await engine.execute(f"SELECT {_ph(engine, 1)}", [])
    assert (await engine.execute("SELECT 1", [])).scalar() == 1


async def test_syntax_error_raises_programming_error(engine):
    with pytest.raises(ProgrammingError) as ei:
        await engine.execute("SELEC 1", [])
    assert isinstance(ei.value, DatabaseError)
    assert "SELEC" in str(ei.value) or "syntax" in str(ei.value).lower()
    assert (await engine.execute("SELECT 1", [])).scalar() == 1


async def test_unknown_table_and_column_raise_programming_error(engine):
    with pytest.raises(ProgrammingError):
        await engine.execute("SELECT * FROM e_no_such_table", [])
    with pytest.raises(ProgrammingError):
        await engine.execute("SELECT no_such_column FROM t_users", [])


async def test_raw_integrity_error_and_recovery(engine, session):
    await _seed(session)
    sql = (
        "INSERT INTO t_users (name, email, role, vip, metadata) VALUES "
        f"('X', {_ph(engine, 1)}, 'm', {_ph(engine, 2)}, '{{}}')"
    )
    with pytest.raises(IntegrityError):
        await engine.execute(sql, ["alice@x", False])
    assert (await engine.execute(sql, ["new@x", False])).rowcount == 1
    assert await session.query(User).count() == 4


async def test_many_concurrent_queries(engine):
    results = await asyncio.gather(*[engine.execute(f"SELECT {_ph(engine, 1)} * 2", [i]) for i in range(60)])
    assert [r.scalar() for r in results] == [i * 2 for i in range(60)]


# ---------------------------------------------------------------- async contract


async def _sized_long_query(engine, seconds: float = 0.5) -> int:
    """A count big enough to take about ``seconds`` on this machine and backend."""
    n0 = 100_000
    t0 = time.perf_counter()
    await engine.execute(_count_to(n0), [])
    per_row = max(time.perf_counter() - t0, 1e-4) / n0
    return max(500_000, min(int(seconds / per_row), 30_000_000))


async def _tick(ticks: list[float], interval: float) -> None:
    """Records when the event loop gets to run this task, every ``interval`` seconds."""
    while True:
        await asyncio.sleep(interval)
        ticks.append(time.perf_counter())


async def test_long_query_does_not_stall_event_loop(engine):
    n = await _sized_long_query(engine)
    ticks: list[float] = []

    task = asyncio.create_task(_tick(ticks, 0.01))
    try:
        await asyncio.sleep(0.03)  # the ticker is running
        for _ in range(4):  # grow the query until it is long enough to show anything
            start = time.perf_counter()
            result = await engine.execute(_count_to(n), [])
            end = time.perf_counter()
            assert result.scalar() == n
            if end - start > 0.3:
                break
            n *= 2
    finally:
        task.cancel()
    elapsed = end - start
    assert elapsed > 0.3, f"query too fast ({elapsed:.3f}s) to show anything"
    during = [t for t in ticks if start <= t <= end]
    assert len(during) >= 10, f"ticker advanced {len(during)} times in {elapsed:.2f}s"
    points = [start, *during, end]
    longest_gap = max(b - a for a, b in zip(points, points[1:], strict=False))
    assert longest_gap < min(0.25, elapsed / 2), f"event loop stalled for {longest_gap:.3f}s"


async def test_reading_a_large_result_does_not_stall_event_loop(engine):
    """Rows that arrive faster than they are decoded (PostgreSQL decodes on the loop's thread)
    are read in slices with the loop's other tasks in between."""
    n = 400_000
    if engine.dialect == "postgresql":
        # generate_series sends rows as fast as the socket takes them.
        rows_sql = f"SELECT x, 'row ' || x FROM generate_series(1, {n}) AS g(x)"
    else:
        rows_sql = (
            f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) "
            "SELECT x, 'row ' || x FROM c"
        )
    ticks: list[float] = []

    task = asyncio.create_task(_tick(ticks, 0))
    # A full collection of the whole suite's objects can pause the loop on its own for
    # longer than the gap allowed here; this measures OrmKit's steps, not the collector's.
    gc.collect()
    gc.disable()
    try:
        await asyncio.sleep(0.01)
        start = time.perf_counter()
        result = await engine.execute(rows_sql, [])
        end = time.perf_counter()
    finally:
        gc.enable()
        task.cancel()
    rows = result.tuples()
    assert len(rows) == n and rows[0] == (1, "row 1") and rows[-1] == (n, f"row {n}")
    during = [t for t in ticks if start <= t <= end]
    points = [start, *during, end]
    longest_gap = max(b - a for a, b in zip(points, points[1:], strict=False))
    assert longest_gap < max(0.05, (end - start) / 4), f"the loop stalled for {longest_gap:.3f}s of {end - start:.3f}s"


async def test_long_orm_query_does_not_stall_event_loop(engine, session):
    """The same holds for ORM terminals, not only raw SQL."""
    await session.insert_all([User(name=f"u{i}", email=f"u{i}@x", age=i % 90) for i in range(300)])
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0.02)
        before = ticks
        # several queries in flight at once
        results = await asyncio.gather(
            engine.execute(_count_to(300_000), []),
            session.query(User).filter(age__gte=18).count(),
            session.query(User).order_by("-age").limit(5).all(),
        )
        advanced = ticks - before
    finally:
        task.cancel()
    assert results[0].scalar() == 300_000
    assert results[1] == sum(1 for i in range(300) if i % 90 >= 18)
    assert [u.age for u in results[2]] == [89, 89, 89, 88, 88]
    assert advanced >= 5


async def test_cancelled_query_raises_timeout_and_engine_still_answers(engine):
    start = time.perf_counter()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(engine.execute(_count_to(200_000_000), []), 0.2)
    assert time.perf_counter() - start < 2.0, "cancellation did not return promptly"
    t0 = time.perf_counter()
    assert (await engine.execute("SELECT 42", [])).scalar() == 42
    assert time.perf_counter() - t0 < 2.0
    session = AsyncSession(engine)
    u = await session.insert(User(name="after", email="after@x"))
    assert (await session.get(User, u.id)).name == "after"


async def test_cancelled_task_then_engine_answers(engine):
    task = asyncio.create_task(_await(engine.execute(_count_to(200_000_000), [])))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await asyncio.wait_for(engine.execute("SELECT 1", []), 2)).scalar() == 1


async def test_awaitables_are_accepted_by_create_task(engine, session):
    """``asyncio.create_task`` / ``TaskGroup.create_task`` take only coroutines, so what the
    API returns must be one (or be wrapped) for the usual asyncio patterns to work."""
    await session.insert(User(name="A", email="a@x"))
    task = asyncio.create_task(engine.execute("SELECT 1", []))
    assert (await task).scalar() == 1
    async with asyncio.TaskGroup() as tg:
        t1 = tg.create_task(session.query(User).count())
        t2 = tg.create_task(session.get(User, 1))
    assert t1.result() == 1 and t2.result().name == "A"


@pytest.mark.parametrize("where", ["memory", "file-pool-1"])
async def test_cancel_interrupts_the_running_statement(tmp_path, where):
    """With a single connection, the next query can only answer quickly if the cancelled
    statement was really interrupted (not left running in the background)."""
    url = "sqlite::memory:" if where == "memory" else f"sqlite:///{tmp_path}/one.db"
    kwargs = {} if where == "memory" else {"pool_size": 1}
    async with await create_engine(url, **kwargs) as engine:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(engine.execute(_count_to(200_000_000), []), 0.2)
        t0 = time.perf_counter()
        assert (await asyncio.wait_for(engine.execute("SELECT 42", []), 5)).scalar() == 42
        assert time.perf_counter() - t0 < 1.0
        await engine.create_all(User)
        s = AsyncSession(engine)
        await s.insert(User(name="A", email="a@x"))
        assert await s.query(User).count() == 1
