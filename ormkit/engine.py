"""Engines: ``create_engine(url)`` opens a database and its connection pool."""

from __future__ import annotations

from typing import Any

from ormkit._ormkit import EngineCore


class Engine:
    """One database and its connections. Use ``await engine.dispose()`` or
    ``async with engine:`` to close them."""

    __slots__ = ("_core",)

    def __init__(self, core: EngineCore) -> None:
        self._core = core

    @property
    def url(self) -> str:
        return self._core.url

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._core.dialect_name

    def execute(self, sql: str, params: Any = None) -> Any:
        """Runs raw SQL with bound parameters (``?`` placeholders); awaits to a ``Result``
        with ``.all()``, ``.tuples()``, ``.column(name)``, ``.dicts()``, ``.scalar()``."""
        return self._core.execute(sql, params)

    def create_all(self, *models: type) -> Any:
        """Creates the tables of every model (or of the given models), parents first.
        Tables that exist are left as they are."""
        return self._core.create_all([m.__ormkit__ for m in models] if models else None)

    def drop_all(self, *models: type) -> Any:
        """Drops the tables of every model (or of the given models), children first."""
        return self._core.drop_all([m.__ormkit__ for m in models] if models else None)

    def query_log(self) -> Any:
        """Records every statement this engine runs inside the ``with`` block::

        with engine.query_log() as log:
            await session.query(User).options(selectinload("posts")).all()
        assert len(log) == 2
        log.statements  # the SQL, in order; log.entries: (sql, ms, rows)
        """
        return self._core.query_log()

    def dispose(self) -> Any:
        """Closes every connection once queued work is done."""
        return self._core.dispose()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.dispose()

    def __repr__(self) -> str:
        return f"<Engine {self.url}>"


async def create_engine(
    url: str,
    *,
    pragmas: dict[str, Any] | None = None,
    pool_size: int | None = None,
    pool_timeout: float | None = None,
) -> Engine:
    """Opens an engine.

    - ``postgresql://user:password@host:port/dbname`` (or ``postgres://``); user and password
      percent-encoded; port 5432 by default; query parameters ``sslmode=disable|prefer|require``
      (default prefer), ``application_name``, ``connect_timeout`` (seconds), ``options``.
    - ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``sqlite::memory:``
      (one in-memory database shared by every session of the engine).

    SQLite PRAGMAs default to ``journal_mode=WAL`` and ``synchronous=NORMAL`` for files,
    ``foreign_keys=ON`` and ``busy_timeout=5000`` always; ``pragmas={...}`` overrides them.
    ``pool_size`` is the number of connections (PostgreSQL: 10; SQLite files: 4; in-memory:
    always 1). ``pool_timeout`` (PostgreSQL, default 30 s) bounds the wait for a free
    connection; past it ``PoolTimeout`` is raised.
    """
    core = await EngineCore.connect(url, pragmas, pool_size, pool_timeout)
    return Engine(core)
