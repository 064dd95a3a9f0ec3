"""PostgreSQL-only behaviour: URLs, TLS, the pool and its failure modes, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ormkit import (
    AsyncSession,
    IntegrityError,
    InterfaceError,
    OperationalError,
    PoolTimeout,
    ProgrammingError,
    create_engine,
)
from tests.conftest import IN_CI, PG_UP, PG_URL, new_schema_name, pg_url_for_schema
from tests.models import User

pytestmark = pytest.mark.skipif(
    not PG_UP and not IN_CI, reason=f"!!! PostgreSQL is not reachable at {PG_URL}: these tests did NOT run"
)


@pytest.fixture
async def pg():
    """An engine on a fresh schema, with the shared models' tables."""
    schema = new_schema_name()
    engine = await create_engine(pg_url_for_schema(schema), pool_size=3, pool_timeout=2)
    await engine.execute(f"CREATE SCHEMA {schema}")
    await engine.create_all()
    yield engine
    admin = await create_engine(PG_URL)
    await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    await admin.dispose()
    await engine.dispose()


async def _backend_pid(engine) -> int:
    return (await engine.execute("SELECT pg_backend_pid()")).scalar()


async def test_url_forms_and_application_name():
    for url in (PG_URL, PG_URL.replace("postgresql://", "postgres://")):
        engine = await create_engine(url + ("&" if "?" in url else "?") + "application_name=ormkit_tests")
        name = (await engine.execute("SELECT current_setting('application_name')")).scalar()
        assert name == "ormkit_tests"
        await engine.dispose()


async def test_percent_encoded_credentials():
    admin = await create_engine(PG_URL)
    await admin.execute('DROP ROLE IF EXISTS "ormkit user@x"')
    await admin.execute("CREATE ROLE \"ormkit user@x\" LOGIN PASSWORD 'p@ss:w/rd'")
    try:
        host = PG_URL.split("@", 1)[1]
        url = f"postgresql://ormkit%20user%40x:p%40ss%3Aw%2Frd@{host}"
        engine = await create_engine(url)
        assert (await engine.execute("SELECT current_user")).scalar() == "ormkit user@x"
        await engine.dispose()
    finally:
        await admin.execute('DROP ROLE IF EXISTS "ormkit user@x"')
        await admin.dispose()


async def test_sslmode_require_encrypts_and_disable_does_not():
    async def ssl_in_use(mode: str) -> bool:
        engine = await create_engine(PG_URL + ("&" if "?" in PG_URL else "?") + f"sslmode={mode}")
        try:
            return (await engine.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).scalar()
        finally:
            await engine.dispose()

    assert await ssl_in_use("require") is True
    assert await ssl_in_use("disable") is False


async def test_bad_url_and_unreachable_server_fail_clearly():
    with pytest.raises(InterfaceError, match="sslmode"):
        await create_engine(PG_URL + "?sslmode=verify-full")
    with pytest.raises(OperationalError, match="cannot connect"):
        await create_engine("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")
    with pytest.raises(OperationalError):
        await create_engine(PG_URL.rsplit("/", 1)[0] + "/ormkit_no_such_database")


async def test_pool_timeout_raises_instead_of_hanging():
    engine = await create_engine(PG_URL, pool_size=2, pool_timeout=0.5)
    busy = [asyncio.ensure_future(engine.execute("SELECT pg_sleep(1.5)")) for _ in range(2)]
    await asyncio.sleep(0.3)
    started = time.monotonic()
    with pytest.raises(PoolTimeout, match="pool_size=2"):
        await engine.execute("SELECT 1")
    assert time.monotonic() - started < 1.2
    await asyncio.gather(*busy)
    assert (await engine.execute("SELECT 1")).scalar() == 1
    await engine.dispose()


async def test_terminated_connection_is_replaced(pg):
    session = AsyncSession(pg)
    await session.insert(User(name="a", email="a@x"))
    pid = await _backend_pid(pg)
    admin = await create_engine(PG_URL)
    # Terminate every connection of the pool, idle ones included.
    for _ in range(3):
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'ormkit' AND pid <> pg_backend_pid()"
            " AND datname = current_database() AND pid = ?",
            [pid],
        )
    await admin.dispose()
    await asyncio.sleep(0.2)
    # The broken connection is noticed and replaced; queries go on.
    for _ in range(5):
        try:
            assert await session.query(User).count() == 1
            break
        except OperationalError:
            continue
    assert await session.query(User).count() == 1
    assert await _backend_pid(pg) != pid


async def test_cancelled_long_query_is_cancelled_server_side(pg):
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(pg.execute("SELECT pg_sleep(30)"), timeout=0.3)
    started = time.monotonic()
    # The same engine answers right away; the sleeping backend was cancelled, not waited for.
    assert (await pg.execute("SELECT 41 + 1")).scalar() == 42
    admin = await create_engine(PG_URL)
    for _ in range(50):
        sleeping = (
            await admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'"
            )
        ).scalar()
        if sleeping == 0:
            break
        await asyncio.sleep(0.1)
    await admin.dispose()
    assert sleeping == 0
    assert time.monotonic() - started < 5


async def test_cancelled_task_leaves_the_pool_usable(pg):
    task = asyncio.ensure_future(pg.execute("SELECT pg_sleep(30)"))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    results = await asyncio.gather(*[pg.execute("SELECT ?::int", [i]) for i in range(10)])
    assert [r.scalar() for r in results] == list(range(10))


async def test_unique_violation_is_integrity_error_by_sqlstate(pg):
    session = AsyncSession(pg)
    await session.insert(User(name="a", email="dup@x"))
    with pytest.raises(IntegrityError, match="duplicate key"):
        await session.insert(User(name="b", email="dup@x"))
    with pytest.raises(IntegrityError):
        await pg.execute("INSERT INTO t_posts (title, author_id) VALUES ('x', 999)")
    with pytest.raises(ProgrammingError):
        await pg.execute("SELECT * FROM no_such_table")
    assert await session.query(User).count() == 1


async def test_int_binds_to_integer_and_bigint_columns(pg):
    await pg.execute("CREATE TABLE nums (a integer, b bigint, c smallint, d double precision, e numeric)")
    await pg.execute("INSERT INTO nums VALUES (?, ?, ?, ?, ?)", [1, 2**40, 3, 4, 5])
    row = (await pg.execute("SELECT a, b, c, d, e FROM nums")).first()
    from decimal import Decimal

    assert tuple(row) == (1, 2**40, 3, 4.0, Decimal(5))
    with pytest.raises(Exception, match="out of range"):
        await pg.execute("INSERT INTO nums (a) VALUES (?)", [2**40])


async def test_qmark_and_dollar_placeholders(pg):
    assert (await pg.execute("SELECT ?::text || '?'", ["a"])).scalar() == "a?"
    assert (await pg.execute("SELECT $1::int + $2::int", [1, 2])).scalar() == 3


async def test_insert_all_of_ten_thousand_rows_is_one_batch(pg):
    session = AsyncSession(pg)
    users = await session.insert_all([User(name=f"u{i}", email=f"u{i}@x") for i in range(10_000)])
    assert len({u.id for u in users}) == 10_000
    assert [u.id for u in users] == sorted(u.id for u in users)
    assert await session.query(User).count() == 10_000


def test_engine_serves_one_event_loop_after_another():
    """Queries read their connection's socket on the loop that awaits them. A pooled
    connection opened on one loop serves the next (``asyncio.run`` twice, as scripts do),
    also after the first loop closed, and more tasks than connections take turns."""

    async def open_engine():
        engine = await create_engine(PG_URL, pool_size=2)
        return engine, await _backend_pid(engine)

    engine, first_pid = asyncio.run(open_engine())

    async def use() -> tuple[list[int], set[int]]:
        results = await asyncio.gather(*[engine.execute("SELECT ?::int + 1", [i]) for i in range(6)])
        pids = await asyncio.gather(*[_backend_pid(engine) for _ in range(4)])
        return [r.scalar() for r in results], set(pids)

    seen: set[int] = set()
    for _ in range(3):
        answers, pids = asyncio.run(use())
        assert answers == [1, 2, 3, 4, 5, 6]
        seen |= pids
    # The connections were reused across loops, not reopened for each.
    assert first_pid in seen and len(seen) <= 2
    asyncio.run(engine.dispose())


@pytest.mark.parametrize("sslmode", ["disable", "require"])
async def test_statements_larger_than_the_socket_buffer(pg, sslmode):
    """A bulk insert whose parameters do not fit in the socket's buffer is written as the
    socket drains, while the answers to earlier statements are read; what follows runs.
    On a plain socket and through TLS."""
    engine = await create_engine(pg.url + f"&sslmode={sslmode}")
    try:
        session = AsyncSession(engine)
        body = "x" * 300
        for round_ in range(3):
            users = [User(name=f"u{i}", email=f"{round_}-{i}@{body}", role=body) for i in range(10_000)]
            await session.insert_all(users)
            assert all(u.id is not None for u in users)
            count, longest = (
                await engine.execute(
                    "SELECT count(*), max(length(email)) FROM t_users WHERE email LIKE ?", [f"{round_}-%"]
                )
            ).tuples()[0]
            assert (count, longest) == (10_000, len(f"{round_}-9999@{body}"))
        ssl = (await engine.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).scalar()
        assert ssl is (sslmode == "require")
    finally:
        await engine.dispose()


def test_operation_made_before_its_event_loop_runs():
    """``asyncio.run(engine.execute(...))`` makes the awaitable before any loop runs: its
    work starts on the loop that awaits it."""
    engine = asyncio.run(create_engine(PG_URL))
    assert asyncio.run(engine.execute("SELECT 41 + 1")).scalar() == 42
    event_loop = asyncio.new_event_loop()
    try:
        pending = engine.execute("SELECT ?::int * 2", [21])
        assert event_loop.run_until_complete(pending).scalar() == 42
    finally:
        event_loop.close()
    asyncio.run(engine.dispose())


def test_work_left_on_a_closed_loop_gives_its_connection_back():
    """A query still running when its loop closed (another thread's ``asyncio.run`` ended)
    does not keep its connection from the loops still running."""
    engine = asyncio.run(create_engine(PG_URL, pool_size=1, pool_timeout=2))
    main_loop = asyncio.new_event_loop()
    try:
        assert main_loop.run_until_complete(engine.execute("SELECT 1")).scalar() == 1

        async def strand() -> None:
            asyncio.get_running_loop().create_task(engine.execute("SELECT pg_sleep(0.5)"))
            await asyncio.sleep(0.1)  # the query is on the server; asyncio.run then ends

        worker = threading.Thread(target=asyncio.run, args=(strand(),))
        worker.start()
        worker.join()
        started = time.monotonic()
        assert main_loop.run_until_complete(engine.execute("SELECT 2")).scalar() == 2
        assert time.monotonic() - started < 1.5
    finally:
        main_loop.run_until_complete(engine.dispose())
        main_loop.close()


class _OwnThreadLoop(asyncio.SelectorEventLoop):
    """Records any change to its selector made from a thread other than its own while it
    runs: asyncio's selector is not safe to change from another thread."""

    def __init__(self) -> None:
        super().__init__()
        self.thread: int | None = None
        self.foreign: list[str] = []

    def run_forever(self) -> None:
        self.thread = threading.get_ident()
        try:
            super().run_forever()
        finally:
            self.thread = None

    def _check(self, what: str) -> None:
        if self.thread is not None and threading.get_ident() != self.thread:
            self.foreign.append(what)

    def add_reader(self, fd, callback, *args):
        self._check("add_reader")
        return super().add_reader(fd, callback, *args)

    def remove_reader(self, fd):
        self._check("remove_reader")
        return super().remove_reader(fd)

    def add_writer(self, fd, callback, *args):
        self._check("add_writer")
        return super().add_writer(fd, callback, *args)

    def remove_writer(self, fd):
        self._check("remove_writer")
        return super().remove_writer(fd)


def test_one_engine_on_loops_in_two_threads_at_once():
    """Loops running at the same time on two threads share one pooled connection, which
    moves between them: each loop's selector is only changed on that loop's own thread, and
    every answer is right."""
    engine = asyncio.run(create_engine(PG_URL, pool_size=1, pool_timeout=30))
    loops: list[_OwnThreadLoop] = []
    answers: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    async def work(tag: int) -> None:
        got = []
        for i in range(150):
            got.append((await engine.execute("SELECT ?::int * 1000 + ?::int", [tag, i])).scalar())
            if i % 10 == 0:
                await asyncio.sleep(0.001)  # lets the other thread take the connection
        answers[tag] = got

    def thread_main(tag: int) -> None:
        loop = _OwnThreadLoop()
        loops.append(loop)
        try:
            loop.run_until_complete(work(tag))
        except BaseException as e:  # reported below, with the thread's answers
            errors.append(e)
        finally:
            loop.close()

    # Daemon threads: a hang fails the test below instead of keeping the process alive.
    threads = [threading.Thread(target=thread_main, args=(t,), daemon=True) for t in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert answers == {t: [t * 1000 + i for i in range(150)] for t in (1, 2)}
    assert [lp.foreign for lp in loops] == [[], []]
    asyncio.run(engine.dispose())


def test_connection_back_on_a_busy_loop_is_watched_again():
    """A loop busy in one step while another thread's loop takes its connection, then takes it
    back in the same step: the other thread's late request to unwatch the socket on this loop
    must not undo the watch made since, or the next answer would never be read."""
    engine = asyncio.run(create_engine(PG_URL, pool_size=1, pool_timeout=10))
    go, done = threading.Event(), threading.Event()

    def other_thread() -> None:
        go.wait(10)
        try:
            assert asyncio.run(engine.execute("SELECT 3")).scalar() == 3
        finally:
            done.set()

    async def this_loop() -> list[int]:
        got = [(await engine.execute("SELECT 1")).scalar()]  # the socket is watched here
        go.set()
        done.wait(10)  # blocks this loop's thread while the other thread uses the connection
        got.append((await asyncio.wait_for(engine.execute("SELECT 2"), 5)).scalar())
        got.append((await asyncio.wait_for(engine.execute("SELECT 4"), 5)).scalar())
        return got

    worker = threading.Thread(target=other_thread, daemon=True)
    worker.start()
    try:
        assert asyncio.run(this_loop()) == [1, 2, 4]
    finally:
        worker.join(10)
        asyncio.run(engine.dispose())
