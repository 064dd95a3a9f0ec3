"""OrmKit quick start on SQLite: models, the simple API, the query builder, raw SQL.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import tempfile

from ormkit import (
    JSON,
    AsyncSession,
    Base,
    FieldError,
    ForeignKey,
    IntegrityError,
    Mapped,
    Q,
    create_engine,
    mapped_column,
    relationship,
)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(max_length=100)
    email: Mapped[str] = mapped_column(unique=True)
    age: Mapped[int | None] = mapped_column(nullable=True)
    role: Mapped[str] = mapped_column(default="member")
    status: Mapped[str] = mapped_column(default="active")
    vip: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=dt.datetime.now)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    metadata: Mapped[dict] = mapped_column(JSON, default=dict)  # JSONB on PostgreSQL

    posts: Mapped[list[Post]] = relationship(back_populates="author")


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(max_length=200)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    author: Mapped[User] = relationship(back_populates="posts")


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str]
    amount: Mapped[float]


def show(label: str, value: object) -> None:
    print(f"{label:<34} {value}")


async def main() -> None:
    path = os.path.join(tempfile.mkdtemp(), "quickstart.db")
    engine = await create_engine(f"sqlite:///{path}")
    await engine.create_all()
    session = AsyncSession(engine)

    # Simple API
    user = await session.insert(User(name="Alice", email="alice@example.com", age=25))
    show("insert ->", f"Created user with id={user.id}")
    await session.insert_all(
        [
            User(name="Bob", email="bob@example.com", age=17, role="guest"),
            User(name="Charlie", email="charlie@example.com", age=70, role="admin", vip=True),
            User(name="Dana", email="dana@example.com", age=41, role="mod", metadata={"plan": "premium"}),
            User(
                name="Eve",
                email="eve@example.com",
                age=33,
                status="banned",
                metadata={"plan": "free", "settings": {"theme": "dark"}},
            ),
        ]
    )
    await session.insert_all([Order(status="completed", amount=19.5), Order(status="completed", amount=30.0)])

    adults = await session.query(User).filter(age__gte=18).all()
    show("filter(age__gte=18)", [u.name for u in adults])
    user = await session.query(User).filter(email="alice@example.com").first()
    show("filter(email=...).first()", user)
    user = await session.get(User, 1)
    await session.update(user, name="Alicia", age=26)
    show("update(user, name=..., age=26)", await session.get(User, 1))

    # Query builder
    q = session.query(User)
    show("age__gt=18", [u.name for u in await q.filter(age__gt=18).all()])
    show("age__lt=65", [u.name for u in await q.filter(age__lt=65).all()])
    show("age__ne=0", len(await q.filter(age__ne=0).all()))
    show("name__like='A%'", [u.name for u in await q.filter(name__like="A%").all()])
    show("name__ilike='a%'", [u.name for u in await q.filter(name__ilike="a%").all()])
    show("name__contains='li'", [u.name for u in await q.filter(name__contains="li").all()])
    show("name__startswith='C'", [u.name for u in await q.filter(name__startswith="C").all()])
    show("name__endswith='e'", [u.name for u in await q.filter(name__endswith="e").all()])
    show("role__in=['admin', 'mod']", [u.name for u in await q.filter(role__in=["admin", "mod"]).all()])
    show("status__notin=['banned']", [u.name for u in await q.filter(status__notin=["banned", "deleted"]).all()])
    show("deleted_at__isnull=True", len(await q.filter(deleted_at__isnull=True).all()))
    show("age__gte=18, age__lt=65", [u.name for u in await q.filter(age__gte=18, age__lt=65).all()])
    show("Q(age__gt=65) | Q(vip=True)", [u.name for u in await q.filter(Q(age__gt=65) | Q(vip=True)).all()])
    page = await q.filter(age__gte=18).order_by("-created_at").limit(10).offset(1).all()
    show("order_by('-created_at') page", [u.name for u in page])

    show("count(age__gte=18)", await q.filter(age__gte=18).count())
    show("sum('amount') of orders", await session.query(Order).filter(status="completed").sum("amount"))
    show("avg('age')", await q.avg("age"))
    show("exists(email=admin@...)", await q.filter(email="admin@example.com").exists())
    show("metadata__plan='premium'", [u.name for u in await q.filter(metadata__plan="premium").all()])
    show("metadata__settings__theme='dark'", [u.name for u in await q.filter(metadata__settings__theme="dark").all()])
    show("values('name', 'age')", await q.filter(age__gt=40).order_by("age").values("name", "age"))

    show("update(role='member')", await q.filter(role="guest").update(role="member"))
    show("delete(age__lt=18)", await q.filter(age__lt=18).delete())

    # Raw SQL
    result = await session.execute_raw("SELECT * FROM users WHERE age > ?", [18])
    show("execute_raw rows", [(row["name"], row["age"]) for row in result.all()])
    result = await engine.execute("SELECT id, name FROM users", [])
    show("tuples()", result.tuples())
    show("column('name')", result.column("name"))

    # Errors are clear and the session stays usable
    try:
        await session.insert(User(name="Copy", email="alice@example.com"))
    except IntegrityError as e:
        show("duplicate email ->", f"IntegrityError: {e}")
    try:
        session.query(User).filter(agee__gt=1)
    except FieldError as e:
        show("misspelt field ->", f"FieldError: {e}")

    await session.remove(user)
    show("remove(user); count()", await session.query(User).count())
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
