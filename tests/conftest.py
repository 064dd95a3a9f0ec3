"""Backend fixtures: every database test runs once on SQLite and once on PostgreSQL.

Tests take ``engine`` / ``session`` and never name a backend unless a behaviour differs by
design (then they branch on ``engine.dialect`` explicitly).

- SQLite: a fresh database file per test.
- PostgreSQL (``ORMKIT_TEST_PG``, default ``postgresql://postgres@127.0.0.1:5432/test``): a fresh
  schema per test, named after this process, dropped afterwards, so runs never collide.
  Locally a missing server skips the PostgreSQL half loudly; under ``CI=true`` it fails.
"""

from __future__ import annotations

import itertools
import os
import socket
from urllib.parse import urlsplit

import pytest

from ormkit import AsyncSession, create_engine

PG_URL = os.environ.get("ORMKIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = ["sqlite", "postgresql"]

_schemas = itertools.count()


def _pg_reachable() -> bool:
    parts = urlsplit(PG_URL)
    try:
        with socket.create_connection((parts.hostname or "localhost", parts.port or 5432), timeout=2):
            return True
    except OSError:
        return False


PG_UP = _pg_reachable()


def pg_url_for_schema(schema: str, url: str = PG_URL) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


def new_schema_name() -> str:
    return f"ormkit_t{os.getpid()}_{next(_schemas)}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql" and not PG_UP:
        msg = f"PostgreSQL is not reachable at {PG_URL}"
        if IN_CI:
            pytest.fail(f"{msg}; CI requires it")
        pytest.skip(f"!!! {msg}: the PostgreSQL half of the suite did NOT run")
    return request.param


async def open_engine(backend: str, tmp_path, **options):
    """An engine on an empty database of `backend`, and a cleanup coroutine."""
    if backend == "sqlite":
        eng = await create_engine(f"sqlite:///{tmp_path}/test.db", **options)

        async def cleanup() -> None:
            await eng.dispose()

        return eng, cleanup
    schema = new_schema_name()
    eng = await create_engine(pg_url_for_schema(schema), **options)
    await eng.execute(f"CREATE SCHEMA {schema}")

    async def cleanup() -> None:
        # A fresh engine: the test may have disposed its own.
        admin = await create_engine(PG_URL)
        try:
            await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await admin.dispose()
            await eng.dispose()

    return eng, cleanup


@pytest.fixture
async def engine(backend: str, tmp_path):
    eng, cleanup = await open_engine(backend, tmp_path)
    try:
        await eng.create_all()
        yield eng
    finally:
        await cleanup()


@pytest.fixture
def session(engine) -> AsyncSession:
    return AsyncSession(engine)


@pytest.fixture
def reader(engine) -> AsyncSession:
    """A second session on the same engine: reading back through it proves a database round
    trip, where the writing session's identity map would hand back the very object written."""
    return AsyncSession(engine)
