"""OrmKit: model objects through the session API; ``ormkit-tuples`` is ``engine.execute().tuples()``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from common import (
    N_EAGER_USERS,
    SQL_ALL,
    SQLITE_PRAGMAS,
    W4_LIKE,
    W4_LIMIT,
    W4_MIN_AGE,
    W4_OFFSET,
    W6_MIN_AGE,
    ormkit_build,
)

import ormkit
from libs import Library
from ormkit import AsyncSession, Base, ForeignKey, Mapped, create_engine, mapped_column, relationship

try:  # relationship loading is being built; until it lands W5 is "n/a" for OrmKit
    from ormkit import selectinload
except ImportError:  # pragma: no cover - depends on the engine's version
    selectinload = None


# described when the engine is loaded (another build may replace the file while the suite runs)
ENGINE_BUILD = ormkit_build(ormkit._ormkit.__file__)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(max_length=100)
    email: Mapped[str] = mapped_column(max_length=255, unique=True)
    age: Mapped[int | None] = mapped_column(nullable=True)
    created_at: Mapped[dt.datetime]

    posts: Mapped[list[Post]] = relationship(back_populates="author")


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(max_length=200)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    body: Mapped[str | None] = mapped_column(nullable=True)

    author: Mapped[User] = relationship(back_populates="posts")


class Lib(Library):
    name = "ormkit"
    dist = "ormkit"
    row_type = User
    variants = {"ormkit-tuples": {"W2": "w2_tuples"}}
    variant_row_types = {"ormkit-tuples": tuple}

    async def setup(self) -> None:
        env = self.env
        if env.backend == "sqlite":
            self.engine = await create_engine(f"sqlite:///{env.sqlite_path}", pragmas=dict(SQLITE_PRAGMAS))
        else:
            # TLS off for every library: the server is on localhost
            self.engine = await create_engine(f"{env.pg_dsn}?sslmode=disable&options=-csearch_path%3D{env.pg_schema}")
        self.session = AsyncSession(self.engine)
        q = self.session.query(User)
        # Queries are immutable: build them once, as an application would.
        self.q_w4 = q.filter(age__gte=W4_MIN_AGE, name__like=W4_LIKE).order_by("-age").limit(W4_LIMIT).offset(W4_OFFSET)
        self.q_count = q.filter(age__gte=W6_MIN_AGE)
        self.q_all = q
        self.q_eager = None
        self.eager_missing = "ormkit.selectinload cannot be imported"
        if selectinload is not None:
            try:
                self.q_eager = q.filter(id__lte=N_EAGER_USERS).order_by("id").options(selectinload("posts"))
            except AttributeError as e:  # Python facade ahead of the installed engine build
                self.eager_missing = f"relationship loading is not in this engine build ({e})"
        self._objs: dict[int, User] = {}

    async def close(self) -> None:
        await self.engine.dispose()

    async def exec(self, sql: str, params: tuple = ()) -> None:
        await self.engine.execute(sql, list(params))

    async def scalar(self, sql: str, params: tuple = ()) -> Any:
        return (await self.engine.execute(sql, list(params))).scalar()

    async def load(self, users: list[tuple], posts: list[tuple]) -> None:
        s = self.session
        await s.insert_all([User(id=i, name=n, email=e, age=a, created_at=c) for i, n, e, a, c in users])
        await s.insert_all([Post(id=i, title=t, author_id=a, body=b) for i, t, a, b in posts])

    async def prepare(self, workload: str, args: list) -> None:
        # W7 updates instances (session.update(obj, ...)): fetch the ones it will update, untimed.
        if workload == "W7":
            pks = sorted({pk for pk, _ in args})
            self._objs = {u.id: u for u in await self.session.query(User).filter(id__in=pks).all()}

    async def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"engine_build": ENGINE_BUILD}
        if self.env.backend == "sqlite":
            out["sqlite_version"] = await self.scalar("SELECT sqlite_version()")
        return out

    def as_tuple(self, u: Any) -> tuple:
        return (u.id, u.name, u.email, u.age, u.created_at)

    def eager_pairs(self, users: Any) -> list:
        return [(u, [(p.id, p.title, p.author_id, p.body) for p in u.posts]) for u in users]

    # workloads
    def w1(self, pk: int) -> Any:
        return self.session.get(User, pk)

    def w2(self, _: Any) -> Any:
        return self.q_all.all()

    async def w2_tuples(self, _: Any) -> Any:
        return (await self.engine.execute(SQL_ALL, [])).tuples()

    def w3(self, rows: list[tuple]) -> Any:
        return self.session.insert_all([User(name=n, email=e, age=a, created_at=c) for n, e, a, c in rows])

    def w4(self, _: Any) -> Any:
        return self.q_w4.all()

    def w5(self, _: Any) -> Any:
        if self.q_eager is None:
            raise NotImplementedError(self.eager_missing)
        return self.q_eager.all()

    def w6a(self, _: Any) -> Any:
        return self.q_count.count()

    def w6b(self, _: Any) -> Any:
        return self.q_all.avg("age")

    def w7(self, arg: tuple[int, int]) -> Any:
        pk, age = arg
        return self.session.update(self._objs[pk], age=age)
