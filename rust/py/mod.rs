//! The Python module: classes and functions exposed as `ormkit._ormkit`.

pub mod convert;
pub mod engine;
pub mod flush;
pub mod identity;
pub mod init;
pub mod load;
pub mod model;
pub mod query;
pub mod result;
pub mod stream;
pub mod write;

use pyo3::prelude::*;

/// Pauses Python's cyclic garbage collector while many objects are built at once. Every
/// few hundred new containers would otherwise start a collection that walks the objects
/// built so far; collecting once afterwards does the same work once.
pub struct GcPause(bool);

impl GcPause {
    pub fn new(_py: Python<'_>, objects: usize) -> GcPause {
        if objects < 512 {
            return GcPause(false);
        }
        // SAFETY: called with the GIL held (the `Python` token proves it).
        GcPause(unsafe { pyo3::ffi::PyGC_Disable() } != 0)
    }
}

impl Drop for GcPause {
    fn drop(&mut self) {
        if self.0 {
            // SAFETY: a GcPause only exists on a thread holding the GIL.
            unsafe { pyo3::ffi::PyGC_Enable() };
        }
    }
}

/// A new query over `model`.
#[pyfunction]
fn new_query(model: Py<model::ModelHandle>) -> PyResult<query::QueryCore> {
    let schema = model.get().schema.clone();
    query::QueryCore::new(model, schema)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<engine::EngineCore>()?;
    m.add_class::<engine::QueryLog>()?;
    m.add_class::<identity::IdentityMap>()?;
    m.add_class::<model::ModelHandle>()?;
    m.add_class::<query::QueryCore>()?;
    m.add_class::<stream::StreamCore>()?;
    m.add_class::<result::RawResult>()?;
    m.add_class::<result::Row>()?;
    m.add_class::<crate::bridge::Pending>()?;
    m.add_function(wrap_pyfunction!(model::register_model, m)?)?;
    m.add_function(wrap_pyfunction!(new_query, m)?)?;
    m.add_function(wrap_pyfunction!(init::install_init, m)?)?;
    let sweep = wrap_pyfunction!(identity::after_collection, m)?;
    py.import("gc")?.getattr("callbacks")?.call_method1("append", (&sweep,))?;
    m.add_function(sweep)?;
    crate::errors::py::register(py, m)?;
    Ok(())
}
