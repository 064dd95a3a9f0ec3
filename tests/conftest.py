"""Backend fixtures: every database test runs once per backend.

SQLite runs against a fresh file per test. PostgreSQL joins the list when its driver lands;
tests take ``engine`` / ``session`` and never name a backend unless a behaviour differs by
design (then they branch on ``engine.dialect`` explicitly).
"""

from __future__ import annotations

import os

import pytest

from ormkit import AsyncSession, create_engine

BACKENDS = ["sqlite"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def engine(backend: str, tmp_path):
    if backend == "sqlite":
        eng = await create_engine(f"sqlite:///{tmp_path}/test.db")
    else:  # pragma: no cover - added with the PostgreSQL backend
        raise AssertionError(f"unknown backend {backend}")
    await eng.create_all()
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def session(engine) -> AsyncSession:
    return AsyncSession(engine)
