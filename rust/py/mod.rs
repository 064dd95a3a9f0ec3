//! The Python module: classes and functions exposed as `ormkit._ormkit`.

pub mod convert;
pub mod engine;
pub mod load;
pub mod model;
pub mod query;
pub mod result;
pub mod write;

use pyo3::prelude::*;

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
    m.add_class::<model::ModelHandle>()?;
    m.add_class::<query::QueryCore>()?;
    m.add_class::<result::RawResult>()?;
    m.add_class::<result::Row>()?;
    m.add_class::<crate::bridge::Pending>()?;
    m.add_function(wrap_pyfunction!(model::register_model, m)?)?;
    m.add_function(wrap_pyfunction!(new_query, m)?)?;
    crate::errors::py::register(py, m)?;
    Ok(())
}
