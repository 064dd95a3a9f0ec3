"""Tortoise ORM (aiosqlite on SQLite, asyncpg on PostgreSQL). Autocommit by default;
W3 is ``bulk_create`` inside ``in_transaction()``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from common import N_EAGER_USERS, SQLITE_PRAGMAS, W4_LIMIT, W4_MIN_AGE, W4_OFFSET, W6_MIN_AGE
from tortoise import Tortoise, connections, fields
from tortoise.functions import Avg
from tortoise.models import Model
from tortoise.transactions import in_transaction

from libs import Library, dollar


class FloatAvg(Avg):
    """Tortoise converts ``Avg`` of an IntField through the IntField (48.04 -> 48, tortoise-orm
    1.1.9); this keeps the database's value."""

    populate_field_object = False


class User(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=100)
    email = fields.CharField(max_length=255, unique=True)
    age = fields.IntField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "users"


class Post(Model):
    id = fields.IntField(primary_key=True)
    title = fields.CharField(max_length=200)
    author: fields.ForeignKeyRelation[User] = fields.ForeignKeyField("models.User", related_name="posts")
    body = fields.TextField(null=True)

    class Meta:
        table = "posts"


class Lib(Library):
    name = "tortoise"
    dist = "tortoise-orm"
    row_type = User

    async def setup(self) -> None:
        env = self.env
        if env.backend == "sqlite":
            conn = {
                "engine": "tortoise.backends.sqlite",
                "credentials": {"file_path": env.sqlite_path, **SQLITE_PRAGMAS},
            }
            self._sql = lambda s: s
        else:
            p = urlsplit(env.pg_dsn)
            creds = {
                "host": p.hostname,
                "port": p.port or 5432,
                "user": p.username,
                "password": p.password,
                "database": p.path.lstrip("/"),
                "schema": env.pg_schema,
                "ssl": False,  # TLS off for every library: the server is on localhost
            }
            conn = {"engine": "tortoise.backends.asyncpg", "credentials": creds}
            self._sql = dollar
        await Tortoise.init(
            config={
                "connections": {"default": conn},
                "apps": {"models": {"models": [__name__], "default_connection": "default"}},
                "use_tz": False,
            }
        )
        self.conn = connections.get("default")

    async def close(self) -> None:
        await Tortoise.close_connections()

    async def exec(self, sql: str, params: tuple = ()) -> None:
        await self.conn.execute_query(self._sql(sql), list(params))

    async def scalar(self, sql: str, params: tuple = ()) -> Any:
        _, rows = await self.conn.execute_query(self._sql(sql), list(params))
        return rows[0][0]

    async def load(self, users: list[tuple], posts: list[tuple]) -> None:
        async with in_transaction():
            await User.bulk_create([User(id=i, name=n, email=e, age=a, created_at=c) for i, n, e, a, c in users])
            await Post.bulk_create([Post(id=i, title=t, author_id=a, body=b) for i, t, a, b in posts])

    async def info(self) -> dict[str, Any]:
        import sqlite3

        return {"sqlite_version": sqlite3.sqlite_version} if self.env.backend == "sqlite" else {}

    def as_tuple(self, u: Any) -> tuple:
        return (u.id, u.name, u.email, u.age, u.created_at)

    def eager_pairs(self, users: Any) -> list:
        return [(u, [(p.id, p.title, p.author_id, p.body) for p in u.posts.related_objects]) for u in users]

    # workloads
    async def w1(self, pk: int) -> Any:
        return await User.get(id=pk)

    async def w2(self, _: Any) -> Any:
        return await User.all()

    async def w3(self, rows: list[tuple]) -> Any:
        async with in_transaction():
            await User.bulk_create([User(name=n, email=e, age=a, created_at=c) for n, e, a, c in rows])

    async def w4(self, _: Any) -> Any:
        return (
            await User.filter(age__gte=W4_MIN_AGE, name__startswith="user1")
            .order_by("-age")
            .offset(W4_OFFSET)
            .limit(W4_LIMIT)
        )

    async def w5(self, _: Any) -> Any:
        return await User.filter(id__lte=N_EAGER_USERS).order_by("id").prefetch_related("posts")

    async def w6a(self, _: Any) -> Any:
        return await User.filter(age__gte=W6_MIN_AGE).count()

    async def w6b(self, _: Any) -> Any:
        return await User.annotate(a=FloatAvg("age")).first().values_list("a", flat=True)

    async def w7(self, arg: tuple[int, int]) -> Any:
        pk, age = arg
        return await User.filter(id=pk).update(age=age)
