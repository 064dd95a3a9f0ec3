"""asyncpg (raw): Records. One connection, autocommit; a transaction around W3's executemany.
``asyncpg-copy`` times ``copy_records_to_table`` for W3 as a separate row."""

from __future__ import annotations

from typing import Any

import asyncpg
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
    W6_MIN_AGE,
)

from libs import Library, dollar

GET = dollar(SQL_GET)
W4 = dollar(SQL_W4)
EAGER_USERS = dollar(SQL_EAGER_USERS)
EAGER_POSTS = f"SELECT {SQL_POST_COLUMNS} FROM posts WHERE author_id = ANY($1::int[])"
COUNT = dollar(SQL_COUNT)
UPDATE = dollar(SQL_UPDATE)
INSERT_USER = dollar(SQL_INSERT_USER)


class Lib(Library):
    name = "asyncpg"
    dist = "asyncpg"
    row_type = asyncpg.Record
    variants = {"asyncpg-copy": {"W3": "w3_copy"}}

    async def setup(self) -> None:
        self.db = await asyncpg.connect(self.env.pg_dsn, ssl=False, server_settings={"search_path": self.env.pg_schema})

    async def close(self) -> None:
        await self.db.close()

    async def exec(self, sql: str, params: tuple = ()) -> None:
        await self.db.execute(dollar(sql), *params)

    async def scalar(self, sql: str, params: tuple = ()) -> Any:
        return await self.db.fetchval(dollar(sql), *params)

    async def load(self, users: list[tuple], posts: list[tuple]) -> None:
        async with self.db.transaction():
            await self.db.executemany(dollar(SQL_INSERT_USER_ID), users)
            await self.db.executemany(dollar(SQL_INSERT_POST_ID), posts)

    # workloads
    def w1(self, pk: int) -> Any:
        return self.db.fetchrow(GET, pk)

    def w2(self, _: Any) -> Any:
        return self.db.fetch(SQL_ALL)

    async def w3(self, rows: list[tuple]) -> Any:
        async with self.db.transaction():
            await self.db.executemany(INSERT_USER, rows)

    async def w3_copy(self, rows: list[tuple]) -> Any:
        async with self.db.transaction():
            await self.db.copy_records_to_table(
                "users", records=rows, columns=["name", "email", "age", "created_at"], schema_name=self.env.pg_schema
            )

    def w4(self, _: Any) -> Any:
        return self.db.fetch(W4, *SQL_W4_PARAMS)

    async def w5(self, _: Any) -> Any:
        db = self.db
        users = await db.fetch(EAGER_USERS, N_EAGER_USERS)
        ids = [u[0] for u in users]
        by_author: dict[int, list] = {i: [] for i in ids}
        for p in await db.fetch(EAGER_POSTS, ids):
            by_author[p[2]].append(p)
        return [(u, by_author[u[0]]) for u in users]

    def w6a(self, _: Any) -> Any:
        return self.db.fetchval(COUNT, W6_MIN_AGE)

    def w6b(self, _: Any) -> Any:
        return self.db.fetchval(SQL_AVG)

    def w7(self, arg: tuple[int, int]) -> Any:
        pk, age = arg
        return self.db.execute(UPDATE, age, pk)

    def eager_pairs(self, result: Any) -> list:
        return [(u, [tuple(p) for p in posts]) for u, posts in result]
