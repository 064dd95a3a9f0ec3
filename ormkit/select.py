"""``select()``: SQLAlchemy-style statements over the same query plans as ``filter()``.

Column expressions (``User.age >= 18``, ``User.name.like("A%")``) become ``Q`` lookups, so a
``select()`` compiles through exactly the same engine path as ``session.query(...).filter(...)``.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from ormkit.exceptions import MultipleResultsFound, NoResultFound
from ormkit.q import Q

M = TypeVar("M")


class Select(Generic[M]):
    """``select(User).where(User.age >= 18).order_by(User.age.desc()).limit(10)``"""

    __slots__ = ("_steps", "model")

    def __init__(self, model: type[M], steps: tuple[tuple[str, tuple[Any, ...]], ...] = ()) -> None:
        if not hasattr(model, "__ormkit__"):
            raise TypeError(f"select() takes a model class, got {model!r}")
        self.model = model
        self._steps = steps

    def _with(self, name: str, *args: Any) -> Select[M]:
        return Select(self.model, (*self._steps, (name, args)))

    def where(self, *conditions: Any) -> Select[M]:
        for c in conditions:
            if not isinstance(c, Q):
                raise TypeError(f"where() takes column conditions such as {self.model.__name__}.age >= 18, got {c!r}")
        return self._with("filter", *conditions)

    filter = where

    def order_by(self, *columns: Any) -> Select[M]:
        return self._with("order_by", *(_order_name(c) for c in columns))

    def limit(self, n: int) -> Select[M]:
        return self._with("limit", n)

    def offset(self, n: int) -> Select[M]:
        return self._with("offset", n)

    def distinct(self) -> Select[M]:
        return self._with("distinct")

    def options(self, *options: Any) -> Select[M]:
        return self._with("options", *options)

    def to_query(self, session: Any) -> Any:
        q = session.query(self.model)
        for name, args in self._steps:
            q = getattr(q, name)(*args)
        return q

    def __repr__(self) -> str:
        return f"<Select {self.model.__name__}>"


def select(model: type[M]) -> Select[M]:
    """A statement selecting instances of ``model``; run it with ``await session.execute(stmt)``."""
    return Select(model)


def _order_name(c: Any) -> str:
    if isinstance(c, str):
        return c
    if isinstance(c, Ordering):
        return c.name
    name = getattr(c, "name", None)
    if isinstance(name, str) and hasattr(c, "model"):
        return name
    raise TypeError(f"order_by() takes columns (User.age, User.age.desc()) or field names, got {c!r}")


class Ordering:
    """``User.age.desc()``: a column with a direction, for ``order_by``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Ordering {self.name}>"


class ScalarResult(Generic[M]):
    """The instances a statement returned."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[M]) -> None:
        self._rows = rows

    def all(self) -> list[M]:
        return list(self._rows)

    def first(self) -> M | None:
        return self._rows[0] if self._rows else None

    def one(self) -> M:
        if not self._rows:
            raise NoResultFound("the statement returned no row")
        if len(self._rows) > 1:
            raise MultipleResultsFound("the statement returned more than one row")
        return self._rows[0]

    def one_or_none(self) -> M | None:
        if len(self._rows) > 1:
            raise MultipleResultsFound("the statement returned more than one row")
        return self._rows[0] if self._rows else None

    def __iter__(self) -> Any:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


class StatementResult(Generic[M]):
    """What ``await session.execute(select(...))`` returns."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[M]) -> None:
        self._rows = rows

    def scalars(self) -> ScalarResult[M]:
        return ScalarResult(self._rows)

    def scalar_one(self) -> M:
        return ScalarResult(self._rows).one()

    def scalar_one_or_none(self) -> M | None:
        return ScalarResult(self._rows).one_or_none()

    def all(self) -> list[M]:
        return list(self._rows)

    def __len__(self) -> int:
        return len(self._rows)
