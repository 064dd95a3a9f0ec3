"""One module per library. Each defines ``Lib``, a subclass of ``Library`` below.

A library's workload methods take one argument (a primary key, a list of rows, or an ignored
``None``) so the harness can time every library with the same loop. Methods may be sync
(stdlib sqlite3) or async.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

# name -> (module, backends it runs on)
LIBS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ormkit": ("libs.ormkit", ("sqlite", "postgresql")),
    "sqlite3": ("libs.sqlite3", ("sqlite",)),
    "aiosqlite": ("libs.aiosqlite", ("sqlite",)),
    "asyncpg": ("libs.asyncpg", ("postgresql",)),
    "sqlalchemy": ("libs.sqlalchemy", ("sqlite", "postgresql")),
    "tortoise": ("libs.tortoise", ("sqlite", "postgresql")),
}


@dataclass
class Env:
    backend: str  # "sqlite" | "postgresql"
    sqlite_path: str | None = None
    pg_dsn: str | None = None  # postgresql://user@host:port/db (no query string)
    pg_schema: str | None = None


class Library:
    name = "?"
    #: True for a synchronous driver (stdlib sqlite3): its methods are called, not awaited
    sync = False
    #: the class every returned row/object must be an instance of (set in ``setup``)
    row_type: type = object
    #: extra report rows measured in the same process: label -> {workload: method name}
    variants: dict[str, dict[str, str]] = {}
    #: the class of a variant's rows when it differs from ``row_type`` (label -> type)
    variant_row_types: dict[str, type] = {}

    def __init__(self, env: Env) -> None:
        self.env = env

    def version(self) -> str:
        from importlib.metadata import version

        return version(self.dist)

    dist = "?"

    # set-up (untimed): setup() connects, exec()/scalar() run raw SQL with `?` placeholders,
    # load() inserts USERS and POSTS with their ids.
    async def setup(self) -> None: ...
    async def close(self) -> None: ...
    async def exec(self, sql: str, params: tuple = ()) -> None: ...
    async def scalar(self, sql: str, params: tuple = ()) -> Any: ...
    async def load(self, users: list[tuple], posts: list[tuple]) -> None: ...
    async def info(self) -> dict[str, Any]:
        return {}

    # normalisation for the checks
    def as_tuple(self, obj: Any) -> tuple:
        """(id, name, email, age, created_at) of a returned user object / row."""
        return tuple(obj)

    def eager_pairs(self, result: Any) -> list[tuple[tuple, list[tuple]]]:
        """W5's result as [(user object / row, [(id, title, author_id, body), ...]), ...]."""
        return result

    def prepare(self, workload: str, args: list[Any]) -> Any:
        """Runs untimed before a workload is checked or timed, with the arguments it will get."""
        return None

    def reset(self, _: Any = None) -> Any:
        """Runs untimed between repetitions (e.g. to empty an identity map)."""
        return None


def load_lib(name: str, env: Env) -> Library:
    module, backends = LIBS[name]
    if env.backend not in backends:
        raise SystemExit(f"{name} does not run on {env.backend}")
    return importlib.import_module(module).Lib(env)


def dollar(sql: str) -> str:
    """`?` placeholders -> `$1, $2, ...` (no `?` appears inside literals in our SQL)."""
    parts = sql.split("?")
    out = [parts[0]]
    for i, p in enumerate(parts[1:], 1):
        out.append(f"${i}{p}")
    return "".join(out)
