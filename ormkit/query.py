"""The chainable query builder. Each method returns a new ``Query``; the plan lives in the
engine (``_q``), so nothing here builds SQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ormkit import _ormkit
from ormkit.loading import paths_of

if TYPE_CHECKING:
    from ormkit.session import AsyncSession

M = TypeVar("M")


class Query(Generic[M]):
    """``session.query(User).filter(age__gte=18).order_by("-age").limit(10).all()``"""

    __slots__ = ("_model", "_q", "_session")

    def __init__(self, model: type[M], session: AsyncSession, core: Any = None) -> None:
        self._model = model
        self._session = session
        self._q = core if core is not None else _ormkit.new_query(_handle(model))

    def _new(self, core: Any) -> Query[M]:
        return Query(self._model, self._session, core)

    @property
    def _exec(self) -> Any:
        return self._session._executor()

    # building

    def filter(self, *conditions: Any, **lookups: Any) -> Query[M]:
        """Django-style lookups (``age__gte=18``) and ``Q`` objects, joined with AND."""
        return self._new(self._q.filter(*conditions, **lookups))

    def exclude(self, *conditions: Any, **lookups: Any) -> Query[M]:
        """``NOT (...)`` of the given lookups."""
        return self._new(self._q.exclude(*conditions, **lookups))

    def filter_by(self, **values: Any) -> Query[M]:
        """Equality on plain field names, as in SQLAlchemy."""
        return self._new(self._q.filter_by(**values))

    def order_by(self, *fields: str) -> Query[M]:
        """Field names; ``-name`` sorts descending. NULLs sort last ascending and first
        descending on every database."""
        return self._new(self._q.order_by(*fields))

    def limit(self, n: int) -> Query[M]:
        return self._new(self._q.limit(n))

    def offset(self, n: int) -> Query[M]:
        return self._new(self._q.offset(n))

    def with_deleted(self) -> Query[M]:
        """Include soft-deleted rows (models deriving from ``SoftDeleteMixin``)."""
        return self._new(self._q.deleted("included"))

    def only_deleted(self) -> Query[M]:
        """Only soft-deleted rows."""
        return self._new(self._q.deleted("only"))

    def distinct(self) -> Query[M]:
        return self._new(self._q.distinct())

    def group_by(self, *fields: str) -> Query[M]:
        return self._new(self._q.group_by(*fields))

    def options(self, *options: Any) -> Query[M]:
        """Relationship loading: ``options(selectinload("posts"), joinedload("author"))``."""
        return self._new(self._q.options(paths_of(options)))

    def having(self, **lookups: Any) -> Query[M]:
        """Aggregate lookups: ``having(count__gt=1)``, ``having(sum__amount__gte=100)``."""
        return self._new(self._q.having(**lookups))

    # running (each returns an awaitable)

    def all(self) -> Any:
        """Every matching row as a model instance."""
        return self._q.all(self._exec)

    def first(self) -> Any:
        """The first row (by primary key unless ordered), or None."""
        return self._q.first(self._exec)

    def one(self) -> Any:
        """Exactly one row; ``NoResultFound`` / ``MultipleResultsFound`` otherwise."""
        return self._q.one(self._exec)

    def one_or_none(self) -> Any:
        """One row or None; ``MultipleResultsFound`` if several match."""
        return self._q.one(self._exec, True)

    def count(self) -> Any:
        return self._q.count(self._exec)

    def sum(self, field: str) -> Any:
        return self._q.aggregate(self._exec, "sum", field)

    def avg(self, field: str) -> Any:
        return self._q.aggregate(self._exec, "avg", field)

    def min(self, field: str) -> Any:
        return self._q.aggregate(self._exec, "min", field)

    def max(self, field: str) -> Any:
        return self._q.aggregate(self._exec, "max", field)

    def exists(self) -> Any:
        return self._q.exists(self._exec)

    def delete(self) -> Any:
        """Deletes every matching row; awaits to the number deleted."""
        return self._q.delete(self._exec)

    def update(self, **values: Any) -> Any:
        """Updates every matching row; awaits to the number updated."""
        return self._q.update(self._exec, **values)

    def values(self, *fields: str) -> Any:
        """Dicts of the given fields (all when none). With ``group_by``, aggregates may be
        named as fields: ``"count"``, ``"sum__amount"``, ``"avg__age"``."""
        return self._q.values(self._exec, list(fields), "dicts")

    def values_list(self, *fields: str, flat: bool = False) -> Any:
        """Tuples of the given fields; ``flat=True`` with one field gives plain values."""
        return self._q.values(self._exec, list(fields), "flat" if flat else "tuples")

    def stream(self, batch_size: int = 1000) -> QueryStream[M]:
        """``async for obj in query.stream(batch_size=1000)``: the rows as instances, fetched
        a batch at a time from a stepping statement (SQLite) or a server-side portal in a
        transaction of its own (PostgreSQL), never LIMIT/OFFSET pages. Memory holds one
        batch; leaving the loop ends the statement and frees its connection, which the
        stream holds meanwhile (an in-memory SQLite engine has only one)."""
        return QueryStream(self._q.stream(self._exec, batch_size))

    def sql(self, dialect: str | None = None) -> str:
        """The SQL this query compiles to (placeholders, no values), for debugging."""
        return self._q.sql(dialect or self._session.engine.dialect)

    def __repr__(self) -> str:
        return f"<Query {self._model.__name__}>"


def _handle(model: Any) -> Any:
    try:
        return model.__ormkit__
    except AttributeError:
        raise TypeError(f"{model!r} is not a model; models derive from ormkit.Base and set __tablename__") from None


class QueryStream(Generic[M]):
    """The async iterator ``Query.stream()`` returns."""

    __slots__ = ("_batch", "_core", "_done", "_i")

    def __init__(self, core: Any) -> None:
        self._core = core
        self._batch: list[M] = []
        self._i = 0
        self._done = False

    def __aiter__(self) -> QueryStream[M]:
        return self

    async def __anext__(self) -> M:
        if self._i >= len(self._batch):
            if self._done:
                raise StopAsyncIteration
            self._batch = await self._core.next_batch()
            self._i = 0
            if not self._batch:
                self._done = True
                self._core.close()
                raise StopAsyncIteration
        item = self._batch[self._i]
        self._i += 1
        return item

    async def aclose(self) -> None:
        self._done = True
        self._core.close()
