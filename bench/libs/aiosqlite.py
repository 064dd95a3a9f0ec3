"""aiosqlite (raw): tuples. Autocommit mode (``isolation_level=None``), an explicit transaction
around W3's executemany. Reads use ``execute_fetchall`` (one hop to the driver thread), the
fastest way aiosqlite offers."""

from __future__ import annotations

from typing import Any

import aiosqlite
from common import (
    N_EAGER_USERS,
    SQL_ALL,
    SQL_AVG,
    SQL_COUNT,
    SQL_EAGER_USERS,
    SQL_GET,
    SQL_INSERT_POST_ID,
    SQL_INSERT_USER,
    SQL_INSERT_USER_ID,
    SQL_POST_COLUMNS,
    SQL_UPDATE,
    SQL_W4,
    SQL_W4_PARAMS,
    SQLITE_PRAGMA_SQL,
    W6_MIN_AGE,
)

from libs import Library


class Lib(Library):
    name = "aiosqlite"
    dist = "aiosqlite"
    row_type = tuple

    async def setup(self) -> None:
        self.db = await aiosqlite.connect(self.env.sqlite_path, isolation_level=None)
        for p in SQLITE_PRAGMA_SQL:
            await self.db.execute(p)

    async def close(self) -> None:
        await self.db.close()

    async def exec(self, sql: str, params: tuple = ()) -> None:
        await self.db.execute(sql, params)

    async def scalar(self, sql: str, params: tuple = ()) -> Any:
        return (await self.db.execute_fetchall(sql, params))[0][0]

    async def load(self, users: list[tuple], posts: list[tuple]) -> None:
        db = self.db
        await db.execute("BEGIN")
        await db.executemany(SQL_INSERT_USER_ID, users)
        await db.executemany(SQL_INSERT_POST_ID, posts)
        await db.execute("COMMIT")

    async def info(self) -> dict[str, Any]:
        import sqlite3

        return {"sqlite_version": sqlite3.sqlite_version}

    # workloads
    async def w1(self, pk: int) -> Any:
        rows = await self.db.execute_fetchall(SQL_GET, (pk,))
        return rows[0] if rows else None

    async def w2(self, _: Any) -> Any:
        return await self.db.execute_fetchall(SQL_ALL)

    async def w3(self, rows: list[tuple]) -> Any:
        db = self.db
        await db.execute("BEGIN")
        try:
            await db.executemany(SQL_INSERT_USER, rows)
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")

    async def w4(self, _: Any) -> Any:
        return await self.db.execute_fetchall(SQL_W4, SQL_W4_PARAMS)

    async def w5(self, _: Any) -> Any:
        db = self.db
        users = await db.execute_fetchall(SQL_EAGER_USERS, (N_EAGER_USERS,))
        ids = [u[0] for u in users]
        sql = f"SELECT {SQL_POST_COLUMNS} FROM posts WHERE author_id IN ({','.join('?' * len(ids))})"
        by_author: dict[int, list] = {i: [] for i in ids}
        for p in await db.execute_fetchall(sql, ids):
            by_author[p[2]].append(p)
        return [(u, by_author[u[0]]) for u in users]

    async def w6a(self, _: Any) -> Any:
        return (await self.db.execute_fetchall(SQL_COUNT, (W6_MIN_AGE,)))[0][0]

    async def w6b(self, _: Any) -> Any:
        return (await self.db.execute_fetchall(SQL_AVG))[0][0]

    async def w7(self, arg: tuple[int, int]) -> Any:
        pk, age = arg
        return (await self.db.execute(SQL_UPDATE, (age, pk))).rowcount
