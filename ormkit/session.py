"""``AsyncSession``: the simple API, transactions, and the unit of work over an engine."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from ormkit import _ormkit
from ormkit.engine import Engine
from ormkit.exceptions import FieldError, InterfaceError
from ormkit.loading import paths_of
from ormkit.query import Query, _handle

M = TypeVar("M")


class AsyncSession:
    """A unit of work over an engine.

    Outside a transaction every call commits on its own (autocommit), so one-liners need no
    ceremony. ``async with session.begin():`` runs everything inside it in one database
    transaction on one connection; a nested ``begin()`` is a SAVEPOINT. ``add()`` queues
    instances that ``flush()`` / ``commit()`` (or leaving ``begin()``) insert.

    The session keeps an identity map: reading a row it already holds gives the same object
    (brought up to date with the row, except for attributes changed and not yet flushed), and
    ``flush()`` / ``commit()`` write the columns changed on the objects it read or wrote.
    """

    __slots__ = ("_base", "_closed", "_core", "_depth", "_identity", "_new", "engine")

    def __init__(self, engine: Engine, *, identity_map: bool = True) -> None:
        """``identity_map=False`` gives a session that hands out a new object for every row
        it reads and tracks no changes (``flush()`` then writes only what ``add()`` queued)."""
        if not isinstance(engine, Engine):
            raise TypeError(f"AsyncSession() takes an Engine (from await create_engine(...)), got {engine!r}")
        self.engine = engine
        # With an identity map: one Python object per row for this session, and what each
        # was last read or written with, so flush() writes the columns that changed.
        self._identity = _ormkit.IdentityMap() if identity_map else None
        self._base = engine._core.with_identity(self._identity) if identity_map else engine._core
        self._core = self._base
        self._depth = 0
        self._new: dict[int, Any] = {}
        self._closed = False

    def _executor(self) -> Any:
        if self._closed:
            raise InterfaceError("this session is closed; create a new AsyncSession")
        return self._core

    # simple API

    def insert(self, instance: M) -> Any:
        """Inserts ``instance`` (and the related instances it holds); awaits to the same
        instance with its generated key set."""
        return self._executor().insert(_handle(type(instance)), instance)

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
        return self._executor().insert_all(_handle(model), items)

    def get(self, model: type[M], pk: Any) -> Any:
        """The instance with primary key ``pk``, or None."""
        return self._executor().get(_handle(model), pk)

    def get_or_raise(self, model: type[M], pk: Any) -> Any:
        """The instance with primary key ``pk``; ``NoResultFound`` if there is none."""
        return self._executor().get(_handle(model), pk, True)

    def update(self, instance: M, **values: Any) -> Any:
        """Sets ``values`` on the row and on the instance; awaits to the instance."""
        return self._executor().update(_handle(type(instance)), instance, **values)

    def remove(self, instance: Any) -> Any:
        """Deletes the instance's row; awaits to True if a row was deleted."""
        return self._executor().remove(_handle(type(instance)), instance)

    def soft_delete(self, instance: Any) -> Any:
        """Marks the row deleted (``deleted_at`` = now, UTC); awaits to the instance."""
        return self.update(instance, **{_soft_column(instance): _utcnow()})

    def restore(self, instance: Any) -> Any:
        """Clears ``deleted_at``; awaits to the instance."""
        return self.update(instance, **{_soft_column(instance): None})

    def force_delete(self, instance: Any) -> Any:
        """Deletes the row for good; awaits to True if a row was deleted."""
        _soft_column(instance)
        return self.remove(instance)

    def bulk_update(self, model: type, values: dict[str, Any], **filters: Any) -> Any:
        """``UPDATE model SET values WHERE filters``; awaits to the number of rows changed."""
        return self._executor().bulk_update(_handle(model), values, **filters)

    async def upsert(self, instance: M, conflict_target: Any, update_fields: Any = None) -> M:
        """``INSERT ... ON CONFLICT (conflict_target) DO UPDATE SET update_fields`` (default:
        every given column but the key and the target). Returns the session's object for the
        row, carrying the row as stored: the instance itself, unless the session already held
        another object for that row. That object then takes the row as stored (its unflushed
        changes to columns are dropped, as by ``refresh()``) and is returned; the instance
        carries the row too but stays outside the session, as with SQLAlchemy's ``merge()``:
        change the returned object."""
        (out,) = await self._executor().upsert(
            _handle(type(instance)), [instance], conflict_target, None if update_fields is None else list(update_fields)
        )
        return out

    async def upsert_all(self, instances: Any, conflict_target: Any, update_fields: Any = None) -> list[Any]:
        """``upsert`` for many instances of one model, in one transaction; returns the session's
        object for each row, as ``upsert`` does."""
        items = list(instances)
        if not items:
            return []
        model = type(items[0])
        for i in items:
            if type(i) is not model:
                raise TypeError(
                    f"upsert_all() takes instances of one model; got {model.__name__} and {type(i).__name__}"
                )
        return list(
            await self._executor().upsert(
                _handle(model), items, conflict_target, None if update_fields is None else list(update_fields)
            )
        )

    def query(self, model: type[M]) -> Query[M]:
        return Query(model, self)

    async def execute(self, statement: Any) -> Any:
        """Runs a ``select()`` statement; the result has ``.scalars().all()``, ``.first()``,
        ``.scalar_one()``, ``.scalar_one_or_none()``."""
        from ormkit.select import Select, StatementResult

        if not isinstance(statement, Select):
            raise TypeError(f"execute() takes a select() statement, got {statement!r}; use execute_raw() for SQL text")
        return StatementResult(await statement.to_query(self).all())

    def execute_raw(self, sql: str, params: Any = None) -> Any:
        """Raw SQL with bound parameters; awaits to a ``Result`` whose rows are addressable
        by column name. Inside ``begin()`` it runs in the transaction."""
        return self._executor().execute(sql, params)

    async def load(self, instance: Any, *relations: Any) -> Any:
        """Loads relationships of an instance (or a list of instances of one model) that a
        query did not load: ``await session.load(user, "posts")``. Returns the instance."""
        items = list(instance) if isinstance(instance, (list, tuple)) else [instance]
        if not items:
            return instance
        if not relations:
            raise TypeError("load() needs at least one relationship name")
        model = type(items[0])
        handle = _handle(model)
        for item in items:
            if type(item) is not model:
                raise TypeError(
                    f"load() takes instances of one model: {model.__name__} instances, got {type(item).__name__}"
                )
            if item.__dict__.get(handle.pk_name) is None:
                raise InterfaceError(
                    f"{model.__name__} instance has no {handle.pk_name} yet (it was never saved), so it has no "
                    f"related rows to load; insert it first, or set {', '.join(map(str, relations))} yourself"
                )
        await self._executor().load_relations(handle, items, paths_of(relations))
        return instance

    async def refresh(self, instance: Any, attribute_names: Any = None) -> Any:
        """Reloads the named attributes (columns and relationships) from the database, as
        SQLAlchemy does; with no names, every column. Unflushed changes to those attributes
        are dropped."""
        model = type(instance)
        handle = _handle(model)
        if isinstance(attribute_names, str):
            raise TypeError(
                f"refresh() takes a list of attribute names: refresh(obj, [{attribute_names!r}]), "
                f"not refresh(obj, {attribute_names!r})"
            )
        # Read past the identity map (it would hand back `instance`), on the session's
        # connection: inside begin() that is the transaction's view.
        fresh = await self._executor().without_identity().get(handle, instance.__dict__.get(handle.pk_name), True)
        names = list(attribute_names) if attribute_names is not None else list(model.__ormkit_fields__)
        for name in names:
            if name in model.__ormkit_relations__:
                continue
            if name not in model.__ormkit_fields__:
                raise FieldError(f"{model.__name__} has no field or relationship {name!r}")
            instance.__dict__[name] = fresh.__dict__[name]
        columns = [n for n in names if n in model.__ormkit_fields__]
        if self._identity is not None and columns:
            # What was just read is what the database holds: not a change for flush() to write.
            self._identity.settle(handle, instance, columns)
        relations = [n for n in names if n in model.__ormkit_relations__]
        if relations:
            # Unset first, so that the load replaces them (a changed collection would be kept).
            for name in relations:
                instance.__dict__.pop(name, None)
            await self.load(instance, *relations)
        return instance

    # unit of work

    def add(self, instance: Any) -> None:
        """Queues ``instance`` to be inserted at the next ``flush()`` / ``commit()``. An
        instance this session already read or wrote is not new: its changes are flushed as
        they are, so adding it does nothing."""
        handle = _handle(type(instance))
        if self._identity is not None and self._identity.holds(handle, instance):
            return
        # An object whose row was deleted (remove()) is inserted again when added again.
        instance.__dict__.pop("_ormkit_removed", None)
        self._new[id(instance)] = instance

    def add_all(self, instances: Any) -> None:
        for i in instances:
            self.add(i)

    async def flush(self) -> None:
        """Writes what ``add()`` queued (with the related instances they hold) and the columns
        that changed on instances this session loaded or wrote, in one transaction or inside
        the current one. Keys are filled in."""
        if self._new and not self._depth and self._identity is not None:
            # Both halves in one transaction: begin() flushes on the way out.
            async with self.begin():
                return
        if self._new:
            items = list(self._new.values())
            self._new.clear()
            try:
                await self._executor().insert_many(items)
            except BaseException:
                for i in items:
                    self._new.setdefault(id(i), i)
                raise
        await self._executor().flush_dirty()

    async def commit(self) -> None:
        """Flushes, then commits the current transaction (if ``begin()`` opened one).
        Instances stay readable afterwards; nothing is expired."""
        await self.flush()
        if self._depth:
            core = self._core
            self._depth = 0
            self._core = self._base
            try:
                await core.control("COMMIT")
            except BaseException:
                self._forget_transaction(0)
                raise
            finally:
                if self._identity is not None:
                    self._identity.tx_end()
                await core.release()

    def _forget_transaction(self, mark: int) -> None:
        if self._identity is not None:
            self._identity.tx_rollback(mark)

    async def rollback(self) -> None:
        """Forgets what ``add()`` queued and rolls back the current transaction. The
        session's objects go back to the values it last read from the database (without a
        query); objects inserted in the transaction leave the session (a generated key is
        cleared) and the loaded collections; objects deleted in it come back. A relationship
        changed since it was loaded, or loaded or written in the transaction, is dropped:
        reading it raises ``RelationNotLoaded`` until it is loaded again (one ``noload()``
        left is None or ``[]`` again)."""
        self._new.clear()
        self._forget_transaction(0)
        if self._identity is not None:
            self._identity.tx_end()
        if self._depth:
            core = self._core
            self._depth = 0
            self._core = self._base
            await core.release()

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def begin(self) -> Transaction:
        """``async with session.begin() as tx:`` — one transaction (or a SAVEPOINT when
        nested): committed on exit, rolled back if the block raises (the exception goes on)."""
        return Transaction(self)

    async def close(self) -> None:
        """Rolls back an open transaction and gives its connection back."""
        if self._depth:
            await self.rollback()
        self._new.clear()
        self._closed = True

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Transaction:
    """A transaction (or savepoint) of a session; see ``AsyncSession.begin()``."""

    __slots__ = ("_core", "_mark", "_savepoint", "_session")

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._savepoint: str | None = None
        self._core: Any = None
        self._mark = 0

    def add(self, instance: Any) -> None:
        self._session.add(instance)

    def add_all(self, instances: Any) -> None:
        self._session.add_all(instances)

    async def __aenter__(self) -> Transaction:
        s = self._session
        s._executor()
        if s._depth == 0:
            core = await s._base.pin()
            try:
                await core.control("BEGIN IMMEDIATE" if s.engine.dialect == "sqlite" else "BEGIN")
            except BaseException:
                await core.release()
                raise
            s._core = core
            if s._identity is not None:
                s._identity.tx_begin()
        else:
            # What is pending belongs to the outer transaction: written before the savepoint,
            # so that rolling the savepoint back cannot take it along.
            await s.flush()
            self._mark = s._identity.tx_mark() if s._identity is not None else 0
            self._savepoint = f"ormkit_sp{s._depth}"
            await s._core.control(f"SAVEPOINT {self._savepoint}")
        s._depth += 1
        self._core = s._core
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        s = self._session
        if s._core is not self._core:
            # commit() or rollback() inside the block already ended the transaction.
            return False
        if exc_type is None:
            try:
                await s.flush()
            except BaseException:
                await self._undo()
                raise
            if self._savepoint:
                s._depth -= 1
                await s._core.control(f"RELEASE SAVEPOINT {self._savepoint}")
            else:
                await s.commit()
        else:
            await self._undo()
        return False

    async def _undo(self) -> None:
        s = self._session
        if self._savepoint:
            s._depth -= 1
            await s._core.control(f"ROLLBACK TO SAVEPOINT {self._savepoint}")
            await s._core.control(f"RELEASE SAVEPOINT {self._savepoint}")
            # As after rollback(), for what happened since the savepoint.
            s._new.clear()
            s._forget_transaction(self._mark)
        else:
            await s.rollback()


@contextlib.asynccontextmanager
async def session_context(engine: Engine) -> AsyncIterator[AsyncSession]:
    """A session whose work is one transaction: committed when the block ends, rolled back
    (and the exception re-raised) if it raises."""
    session = AsyncSession(engine)
    try:
        async with session.begin():
            yield session
    finally:
        await session.close()


def _soft_column(instance: Any) -> str:
    col = getattr(type(instance), "__ormkit_soft_delete__", None)
    if col is None:
        raise TypeError(f"{type(instance).__name__} is not soft-deletable; derive it from SoftDeleteMixin")
    return col


def _utcnow() -> Any:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


async def _done(value: Any) -> Any:
    return value
