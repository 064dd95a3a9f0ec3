//! The engine's error type and its mapping onto the Python exception tree.
//!
//! Inside Rust every failure is an [`Error`] with a [`Kind`]; only at the Python edge does it
//! become one of the exception classes below. Driver errors are classified by SQLite extended
//! result code or PostgreSQL SQLSTATE, never by message text.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Interface,
    Database,
    Integrity,
    Operational,
    Programming,
    Data,
    Internal,
    NotSupported,
    PoolTimeout,
    NoResultFound,
    MultipleResultsFound,
    Field,
    ValueType,
}

#[derive(Clone, Debug)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    /// SQLSTATE (PostgreSQL) or extended result code (SQLite), when the database raised it.
    pub code: Option<String>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), code: None }
    }
    pub fn field(message: impl Into<String>) -> Self {
        Error::new(Kind::Field, message)
    }
    pub fn value_type(message: impl Into<String>) -> Self {
        Error::new(Kind::ValueType, message)
    }
    pub fn programming(message: impl Into<String>) -> Self {
        Error::new(Kind::Programming, message)
    }
    pub fn operational(message: impl Into<String>) -> Self {
        Error::new(Kind::Operational, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(Kind::Internal, message)
    }
    pub fn interface(message: impl Into<String>) -> Self {
        Error::new(Kind::Interface, message)
    }
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi;
        match &e {
            rusqlite::Error::SqliteFailure(fe, msg) => {
                let text = msg.clone().unwrap_or_else(|| fe.to_string());
                let kind = match fe.code {
                    rusqlite::ErrorCode::ConstraintViolation => Kind::Integrity,
                    rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::OperationInterrupted
                    | rusqlite::ErrorCode::ReadOnly
                    | rusqlite::ErrorCode::OutOfMemory
                    | rusqlite::ErrorCode::FileLockingProtocolFailed
                    | rusqlite::ErrorCode::DatabaseCorrupt
                    | rusqlite::ErrorCode::NotADatabase => Kind::Operational,
                    rusqlite::ErrorCode::TooBig
                    | rusqlite::ErrorCode::TypeMismatch
                    | rusqlite::ErrorCode::ParameterOutOfRange => Kind::Data,
                    rusqlite::ErrorCode::ApiMisuse => Kind::Interface,
                    rusqlite::ErrorCode::SchemaChanged | rusqlite::ErrorCode::Unknown => {
                        if fe.extended_code == ffi::SQLITE_ERROR {
                            Kind::Programming
                        } else {
                            Kind::Operational
                        }
                    }
                    _ => Kind::Operational,
                };
                Error::new(kind, text).with_code(fe.extended_code.to_string())
            }
            rusqlite::Error::SqlInputError { error, msg, .. } => {
                Error::new(Kind::Programming, msg.clone()).with_code(error.extended_code.to_string())
            }
            rusqlite::Error::InvalidParameterCount(..) | rusqlite::Error::InvalidParameterName(_) => {
                Error::programming(e.to_string())
            }
            rusqlite::Error::ToSqlConversionFailure(_) | rusqlite::Error::IntegralValueOutOfRange(..) => {
                Error::new(Kind::Data, e.to_string())
            }
            _ => Error::new(Kind::Database, e.to_string()),
        }
    }
}

#[cfg(feature = "python")]
pub mod py {
    //! The Python exception classes. PEP 249 shaped, rooted at `OrmKitError`.
    use super::{Error, Kind};
    use pyo3::create_exception;
    use pyo3::exceptions::PyException;
    use pyo3::prelude::*;

    create_exception!(ormkit.exceptions, OrmKitError, PyException, "Base class of every OrmKit error.");
    create_exception!(
        ormkit.exceptions,
        InterfaceError,
        OrmKitError,
        "The engine or connection was misused (closed engine, session used from two tasks)."
    );
    create_exception!(ormkit.exceptions, DatabaseError, OrmKitError, "An error reported by the database.");
    create_exception!(
        ormkit.exceptions,
        IntegrityError,
        DatabaseError,
        "A constraint failed: unique, foreign key, not null, check."
    );
    create_exception!(
        ormkit.exceptions,
        OperationalError,
        DatabaseError,
        "The database could not do the work: connection lost, locked, timed out, cancelled."
    );
    create_exception!(
        ormkit.exceptions,
        ProgrammingError,
        DatabaseError,
        "The SQL was wrong: unknown table, syntax error, wrong number of parameters."
    );
    create_exception!(
        ormkit.exceptions,
        DataError,
        DatabaseError,
        "A value could not be stored or read: out of range, wrong type for the column."
    );
    create_exception!(
        ormkit.exceptions,
        InternalError,
        DatabaseError,
        "The database or OrmKit reached a state it should never reach."
    );
    create_exception!(
        ormkit.exceptions,
        NotSupportedError,
        DatabaseError,
        "The backend does not support the requested feature."
    );
    create_exception!(
        ormkit.exceptions,
        PoolTimeout,
        OperationalError,
        "No connection became free within the pool timeout."
    );
    create_exception!(ormkit.exceptions, NoResultFound, OrmKitError, "A query that must return a row returned none.");
    create_exception!(
        ormkit.exceptions,
        MultipleResultsFound,
        OrmKitError,
        "A query that must return one row returned several."
    );
    create_exception!(
        ormkit.exceptions,
        FieldError,
        OrmKitError,
        "An unknown field, lookup or relation was named; raised before any SQL runs."
    );
    create_exception!(
        ormkit.exceptions,
        RelationNotLoaded,
        OrmKitError,
        "A relationship was read before it was loaded."
    );

    create_exception!(
        ormkit.exceptions,
        ValueTypeError,
        OrmKitError,
        "A value of the wrong Python type was given for a column."
    );

    pub fn to_pyerr(e: Error) -> PyErr {
        let msg = e.message;
        match e.kind {
            Kind::Interface => InterfaceError::new_err(msg),
            Kind::Database => DatabaseError::new_err(msg),
            Kind::Integrity => IntegrityError::new_err(msg),
            Kind::Operational => OperationalError::new_err(msg),
            Kind::Programming => ProgrammingError::new_err(msg),
            Kind::Data => DataError::new_err(msg),
            Kind::Internal => InternalError::new_err(msg),
            Kind::NotSupported => NotSupportedError::new_err(msg),
            Kind::PoolTimeout => PoolTimeout::new_err(msg),
            Kind::NoResultFound => NoResultFound::new_err(msg),
            Kind::MultipleResultsFound => MultipleResultsFound::new_err(msg),
            Kind::Field => FieldError::new_err(msg),
            Kind::ValueType => ValueTypeError::new_err(msg),
        }
    }

    impl From<Error> for PyErr {
        fn from(e: Error) -> PyErr {
            to_pyerr(e)
        }
    }

    pub fn register(py: Python<'_>, m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("OrmKitError", py.get_type::<OrmKitError>())?;
        m.add("InterfaceError", py.get_type::<InterfaceError>())?;
        m.add("DatabaseError", py.get_type::<DatabaseError>())?;
        m.add("IntegrityError", py.get_type::<IntegrityError>())?;
        m.add("OperationalError", py.get_type::<OperationalError>())?;
        m.add("ProgrammingError", py.get_type::<ProgrammingError>())?;
        m.add("DataError", py.get_type::<DataError>())?;
        m.add("InternalError", py.get_type::<InternalError>())?;
        m.add("NotSupportedError", py.get_type::<NotSupportedError>())?;
        m.add("PoolTimeout", py.get_type::<PoolTimeout>())?;
        m.add("NoResultFound", py.get_type::<NoResultFound>())?;
        m.add("MultipleResultsFound", py.get_type::<MultipleResultsFound>())?;
        m.add("FieldError", py.get_type::<FieldError>())?;
        m.add("RelationNotLoaded", py.get_type::<RelationNotLoaded>())?;
        m.add("ValueTypeError", py.get_type::<ValueTypeError>())?;
        Ok(())
    }
}
