"""``AsyncSession``: the simple API (insert, get, update, remove, query) over an engine."""

from __future__ import annotations

from typing import Any, TypeVar

from ormkit.engine import Engine
from ormkit.exceptions import FieldError
from ormkit.loading import paths_of
from ormkit.query import Query, _handle

M = TypeVar("M")


class AsyncSession:
    """Each call outside a transaction commits on its own."""

    __slots__ = ("engine", "_core", "_closed")

    def __init__(self, engine: Engine) -> None:
        if not isinstance(engine, Engine):
            raise TypeError(f"AsyncSession() takes an Engine (from await create_engine(...)), got {engine!r}")
        self.engine = engine
        self._core = engine._core
        self._closed = False

    def _executor(self) -> Any:
        return self._core

    def insert(self, instance: M) -> Any:
        """Inserts ``instance``; awaits to the same instance with its generated key set."""
        return self._core.insert(_handle(type(instance)), instance)

    def insert_all(self, instances: Any) -> Any:
        """Inserts many instances of one model in one transaction; keys are filled in."""
        items = list(instances)
        if not items:
            return _done([])
        model = type(items[0])
        for i in items:
            if type(i) is not model:
                raise TypeError(
                    f"insert_all() takes instances of one model; got {model.__name__} and {type(i).__name__}"
                )
        return self._core.insert_all(_handle(model), items)

    def get(self, model: type[M], pk: Any) -> Any:
        """The instance with primary key ``pk``, or None."""
        return self._core.get(_handle(model), pk)

    def get_or_raise(self, model: type[M], pk: Any) -> Any:
        """The instance with primary key ``pk``; ``NoResultFound`` if there is none."""
        return self._core.get(_handle(model), pk, True)

    def update(self, instance: M, **values: Any) -> Any:
        """Sets ``values`` on the row and on the instance; awaits to the instance."""
        return self._core.update(_handle(type(instance)), instance, **values)

    def remove(self, instance: Any) -> Any:
        """Deletes the instance's row; awaits to True if a row was deleted."""
        return self._core.remove(_handle(type(instance)), instance)

    def bulk_update(self, model: type, values: dict[str, Any], **filters: Any) -> Any:
        """``UPDATE model SET values WHERE filters``; awaits to the number of rows changed."""
        return self._core.bulk_update(_handle(model), values, **filters)

    async def load(self, instance: Any, *relations: Any) -> Any:
        """Loads relationships of an instance (or a list of instances of one model) that a
        query did not load: ``await session.load(user, "posts")``. Returns the instance."""
        items = list(instance) if isinstance(instance, (list, tuple)) else [instance]
        if not items:
            return instance
        if not relations:
            raise TypeError("load() needs at least one relationship name")
        model = type(items[0])
        await self._core.load_relations(_handle(model), items, paths_of(relations))
        return instance

    async def refresh(self, instance: Any, attribute_names: Any = None) -> Any:
        """Reloads the instance's columns from the database, and the named relationships."""
        model = type(instance)
        handle = _handle(model)
        pk = instance.__dict__.get(handle.pk_name)
        fresh = await self._core.get(handle, pk, True)
        names = list(attribute_names) if attribute_names is not None else list(model.__ormkit_fields__)
        relations = [n for n in names if n in model.__ormkit_relations__]
        for name in names:
            if name in model.__ormkit_relations__:
                continue
            if name not in model.__ormkit_fields__:
                raise FieldError(f"{model.__name__} has no field or relationship {name!r}")
            instance.__dict__[name] = fresh.__dict__[name]
        if attribute_names is None:
            for name in model.__ormkit_fields__:
                instance.__dict__[name] = fresh.__dict__[name]
        if relations:
            await self.load(instance, *relations)
        return instance

    def query(self, model: type[M]) -> Query[M]:
        return Query(model, self)

    def execute_raw(self, sql: str, params: Any = None) -> Any:
        """Raw SQL with bound parameters; awaits to a ``Result`` whose rows are addressable
        by column name."""
        return self._core.execute(sql, params)

    async def close(self) -> None:
        self._closed = True

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _done(value: Any) -> Any:
    return value
