//! OrmKit's engine: model registry, query plans, SQL compilation, drivers and the Python module.

pub mod compile;
pub mod driver;
pub mod errors;
pub mod plan;
pub mod rows;
pub mod schema;
pub mod value;

#[cfg(feature = "python")]
mod bridge;
#[cfg(feature = "python")]
mod py;

#[cfg(feature = "python")]
#[pyo3::pymodule]
fn _ormkit(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    py::register(m)
}
