"""OrmKit: an async Python ORM whose engine is written in Rust.

Declare models the SQLAlchemy 2.0 way, query them the Django way, get model objects back.
"""

from ormkit.engine import Engine, create_engine
from ormkit.exceptions import (
    DatabaseError,
    DataError,
    Error,
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
from ormkit.loading import joinedload, noload, selectinload
from ormkit.model import (
    JSON,
    Base,
    BigInteger,
    DateTime,
    ForeignKey,
    Mapped,
    SoftDeleteMixin,
    mapped_column,
    relationship,
)
from ormkit.q import Q
from ormkit.query import Query
from ormkit.select import Select, select
from ormkit.session import AsyncSession, Transaction, session_context

__version__ = "0.1.0"

__all__ = [
    "JSON",
    "AsyncSession",
    "Base",
    "BigInteger",
    "DataError",
    "DatabaseError",
    "DateTime",
    "Engine",
    "Error",
    "FieldError",
    "ForeignKey",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "Mapped",
    "MultipleResultsFound",
    "NoResultFound",
    "NotSupportedError",
    "OperationalError",
    "OrmKitError",
    "PoolTimeout",
    "ProgrammingError",
    "Q",
    "Query",
    "RelationNotLoaded",
    "Select",
    "SoftDeleteMixin",
    "Transaction",
    "ValueTypeError",
    "create_engine",
    "joinedload",
    "mapped_column",
    "noload",
    "relationship",
    "select",
    "selectinload",
    "session_context",
]
