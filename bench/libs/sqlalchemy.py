"""SQLAlchemy 2.x asyncio ORM (aiosqlite on SQLite, asyncpg on PostgreSQL).

One long-lived ``AsyncSession`` on an ``AUTOCOMMIT`` engine for the per-call workloads (no
BEGIN/COMMIT round trips, the cheapest way SQLAlchemy offers to run W7 in autocommit); W3 runs
in a regular transaction on a second session. Statements are built once. Results are dropped
between calls, and the identity map is emptied between bulk repetitions, so every call loads
its objects from the database."""

from __future__ import annotations

import datetime as dt
from typing import Any

from common import N_EAGER_USERS, SQLITE_PRAGMA_SQL, W4_LIKE, W4_LIMIT, W4_MIN_AGE, W4_OFFSET, W6_MIN_AGE
from sqlalchemy import ForeignKey, String, event, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncAttrs, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload

from libs import Library, dollar


class Base(AsyncAttrs, DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(255), unique=True)
    age: Mapped[int | None]
    created_at: Mapped[dt.datetime]

    # lazy="raise": reading posts that were not eagerly loaded is an error, not a hidden query
    posts: Mapped[list[Post]] = relationship(back_populates="author", lazy="raise")


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    body: Mapped[str | None]

    author: Mapped[User] = relationship(back_populates="posts", lazy="raise")


# render_nulls: without it the ORM bulk INSERT starts a new batch at every row whose set of
# None values differs from the previous row's (every 10th user has no age) - SQLAlchemy's
# documented switch for this case.
INSERT_USERS = insert(User).execution_options(render_nulls=True)
INSERT_POSTS = insert(Post).execution_options(render_nulls=True)

STMT_W4 = (
    select(User)
    .where(User.age >= W4_MIN_AGE, User.name.like(W4_LIKE))
    .order_by(User.age.desc())
    .limit(W4_LIMIT)
    .offset(W4_OFFSET)
)
STMT_ALL = select(User)
STMT_EAGER = select(User).where(User.id <= N_EAGER_USERS).order_by(User.id).options(selectinload(User.posts))
STMT_COUNT = select(func.count()).select_from(User).where(User.age >= W6_MIN_AGE)
STMT_AVG = select(func.avg(User.age))


class Lib(Library):
    name = "sqlalchemy"
    dist = "sqlalchemy"
    row_type = User
    variants = {"sqlalchemy-add_all": {"W3": "w3_add_all"}}

    async def setup(self) -> None:
        env = self.env
        if env.backend == "sqlite":
            engine = create_async_engine(f"sqlite+aiosqlite:///{env.sqlite_path}")

            @event.listens_for(engine.sync_engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                for p in SQLITE_PRAGMA_SQL:
                    cur.execute(p)
                cur.close()

            self._sql = lambda s: s
        else:
            dsn = env.pg_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
            engine = create_async_engine(
                dsn, connect_args={"ssl": False, "server_settings": {"search_path": env.pg_schema}}
            )
            self._sql = dollar
        self.engine = engine
        self.auto_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.session = async_sessionmaker(self.auto_engine, expire_on_commit=False)()
        self.tx_sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def close(self) -> None:
        await self.session.close()
        await self.engine.dispose()

    async def exec(self, sql: str, params: tuple = ()) -> None:
        async with self.auto_engine.connect() as c:
            await c.exec_driver_sql(self._sql(sql), params)

    async def scalar(self, sql: str, params: tuple = ()) -> Any:
        async with self.auto_engine.connect() as c:
            return (await c.exec_driver_sql(self._sql(sql), params)).scalar()

    async def load(self, users: list[tuple], posts: list[tuple]) -> None:
        async with self.tx_sessions() as s, s.begin():
            await s.execute(
                INSERT_USERS, [{"id": i, "name": n, "email": e, "age": a, "created_at": c} for i, n, e, a, c in users]
            )
            await s.execute(INSERT_POSTS, [{"id": i, "title": t, "author_id": a, "body": b} for i, t, a, b in posts])

    async def info(self) -> dict[str, Any]:
        import sqlite3

        return {"sqlite_version": sqlite3.sqlite_version} if self.env.backend == "sqlite" else {}

    def as_tuple(self, u: Any) -> tuple:
        return (u.id, u.name, u.email, u.age, u.created_at)

    def eager_pairs(self, users: Any) -> list:
        return [(u, [(p.id, p.title, p.author_id, p.body) for p in u.posts]) for u in users]

    def reset(self, _: Any = None) -> None:
        self.session.expunge_all()

    # workloads
    def w1(self, pk: int) -> Any:
        return self.session.get(User, pk)

    async def w2(self, _: Any) -> Any:
        return (await self.session.scalars(STMT_ALL)).all()

    async def w3(self, rows: list[tuple]) -> Any:
        async with self.tx_sessions() as s, s.begin():
            await s.execute(INSERT_USERS, [{"name": n, "email": e, "age": a, "created_at": c} for n, e, a, c in rows])

    async def w3_add_all(self, rows: list[tuple]) -> Any:
        async with self.tx_sessions() as s, s.begin():
            objs = [User(name=n, email=e, age=a, created_at=c) for n, e, a, c in rows]
            s.add_all(objs)
        return objs

    async def w4(self, _: Any) -> Any:
        return (await self.session.scalars(STMT_W4)).all()

    async def w5(self, _: Any) -> Any:
        return (await self.session.scalars(STMT_EAGER)).all()

    def w6a(self, _: Any) -> Any:
        return self.session.scalar(STMT_COUNT)

    def w6b(self, _: Any) -> Any:
        return self.session.scalar(STMT_AVG)

    async def w7(self, arg: tuple[int, int]) -> Any:
        pk, age = arg
        return (await self.session.execute(update(User).where(User.id == pk).values(age=age))).rowcount
