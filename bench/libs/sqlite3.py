"""stdlib sqlite3 (synchronous): the floor on SQLite. Rows are tuples; autocommit mode, with an
explicit transaction around W3's executemany."""

from __future__ import annotations

import sqlite3
from typing import Any

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
    name = "sqlite3"
    sync = True
    row_type = tuple

    def version(self) -> str:
        return f"stdlib (SQLite {sqlite3.sqlite_version})"

    def setup(self) -> None:
        self.db = sqlite3.connect(self.env.sqlite_path, isolation_level=None, check_same_thread=False)
        for p in SQLITE_PRAGMA_SQL:
            self.db.execute(p)

    def close(self) -> None:
        self.db.close()

    def exec(self, sql: str, params: tuple = ()) -> None:
        self.db.execute(sql, params)

    def scalar(self, sql: str, params: tuple = ()) -> Any:
        return self.db.execute(sql, params).fetchone()[0]

    def load(self, users: list[tuple], posts: list[tuple]) -> None:
        db = self.db
        db.execute("BEGIN")
        db.executemany(SQL_INSERT_USER_ID, users)
        db.executemany(SQL_INSERT_POST_ID, posts)
        db.execute("COMMIT")

    def info(self) -> dict[str, Any]:
        return {"sqlite_version": sqlite3.sqlite_version}

    # workloads
    def w1(self, pk: int) -> Any:
        return self.db.execute(SQL_GET, (pk,)).fetchone()

    def w2(self, _: Any) -> Any:
        return self.db.execute(SQL_ALL).fetchall()

    def w3(self, rows: list[tuple]) -> Any:
        db = self.db
        db.execute("BEGIN")
        try:
            db.executemany(SQL_INSERT_USER, rows)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def w4(self, _: Any) -> Any:
        return self.db.execute(SQL_W4, SQL_W4_PARAMS).fetchall()

    def w5(self, _: Any) -> Any:
        db = self.db
        users = db.execute(SQL_EAGER_USERS, (N_EAGER_USERS,)).fetchall()
        ids = [u[0] for u in users]
        sql = f"SELECT {SQL_POST_COLUMNS} FROM posts WHERE author_id IN ({','.join('?' * len(ids))})"
        by_author: dict[int, list] = {i: [] for i in ids}
        for p in db.execute(sql, ids).fetchall():
            by_author[p[2]].append(p)
        return [(u, by_author[u[0]]) for u in users]

    def w6a(self, _: Any) -> Any:
        return self.db.execute(SQL_COUNT, (W6_MIN_AGE,)).fetchone()[0]

    def w6b(self, _: Any) -> Any:
        return self.db.execute(SQL_AVG).fetchone()[0]

    def w7(self, arg: tuple[int, int]) -> Any:
        pk, age = arg
        return self.db.execute(SQL_UPDATE, (age, pk)).rowcount
