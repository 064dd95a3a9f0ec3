"""Models shared by the test suite."""

from __future__ import annotations

import datetime as dt

from ormkit import JSON, Base, BigInteger, DateTime, ForeignKey, Mapped, mapped_column, relationship


class User(Base):
    __tablename__ = "t_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(max_length=100)
    email: Mapped[str] = mapped_column(unique=True)
    age: Mapped[int | None] = mapped_column(nullable=True, index=True)
    role: Mapped[str] = mapped_column(default="member")
    vip: Mapped[bool] = mapped_column(default=False)
    metadata: Mapped[dict] = mapped_column(JSON, default=dict)

    posts: Mapped[list[Post]] = relationship(back_populates="author")


class Post(Base):
    __tablename__ = "t_posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(max_length=200)
    author_id: Mapped[int] = mapped_column(ForeignKey("t_users.id", ondelete="CASCADE"))
    body: Mapped[str | None] = None

    author: Mapped[User] = relationship(back_populates="posts")


class Order(Base):
    __tablename__ = "t_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str]
    amount: Mapped[float]
    quantity: Mapped[int] = mapped_column(default=1)


class AllTypes(Base):
    """One column of every supported type, each nullable, for round-trip tests."""

    __tablename__ = "t_all_types"

    id: Mapped[int] = mapped_column(primary_key=True)
    i: Mapped[int | None]
    big: Mapped[int | None] = mapped_column(BigInteger)
    s: Mapped[str | None]
    f: Mapped[float | None]
    b: Mapped[bool | None]
    raw: Mapped[bytes | None]
    ts: Mapped[dt.datetime | None]
    tstz: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    d: Mapped[dt.date | None]
    t: Mapped[dt.time | None]
    doc: Mapped[dict | None] = mapped_column(JSON)
    items: Mapped[list | None] = mapped_column(JSON)
