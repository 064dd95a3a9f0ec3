"""OrmKit's exception tree, PEP 249 shaped.

::

    OrmKitError
     +-- InterfaceError         engine or connection misused (disposed engine, bad URL)
     +-- DatabaseError          reported by the database
     |    +-- IntegrityError    unique / foreign key / not-null / check constraint failed
     |    +-- OperationalError  connection lost, database locked, statement interrupted
     |    |    +-- PoolTimeout  no connection became free in time
     |    +-- ProgrammingError  bad SQL, unknown table, wrong parameter count
     |    +-- DataError         value out of range for the column
     |    +-- InternalError
     |    +-- NotSupportedError
     +-- NoResultFound          one() / get_or_raise() found nothing
     +-- MultipleResultsFound   one() found several rows
     +-- FieldError             unknown field or lookup, raised before any SQL runs
     +-- ValueTypeError         a value of the wrong Python type for its column
     +-- RelationNotLoaded      a relationship was read before it was loaded

The classes are defined in the Rust engine; this module re-exports them. ``Error`` is the
PEP 249 name of the root.
"""

from ormkit._ormkit import (
    DatabaseError,
    DataError,
    FieldError,
    IntegrityError,
    InterfaceError,
    InternalError,
    MultipleResultsFound,
    NoResultFound,
    NotSupportedError,
    OperationalError,
    OrmKitError,
    PoolTimeout,
    ProgrammingError,
    RelationNotLoaded,
    ValueTypeError,
)

Error = OrmKitError

__all__ = [
    "DataError",
    "DatabaseError",
    "Error",
    "FieldError",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "MultipleResultsFound",
    "NoResultFound",
    "NotSupportedError",
    "OperationalError",
    "OrmKitError",
    "PoolTimeout",
    "ProgrammingError",
    "RelationNotLoaded",
    "ValueTypeError",
]
