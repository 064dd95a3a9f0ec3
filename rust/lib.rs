//! OrmKit's engine: model registry, query plans, SQL compilation, drivers and the Python module.

pub mod compile;
pub mod driver;
pub mod errors;
pub mod plan;
pub mod rows;
pub mod schema;
pub mod value;

// Rows are decoded into many small allocations on a driver thread and freed on the event
// loop's thread; mimalloc makes both sides cheap (glibc's malloc pays for every cross-thread
// free with its arena lock).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "python")]
mod bridge;
#[cfg(feature = "python")]
mod py;

#[cfg(feature = "python")]
#[pyo3::pymodule]
fn _ormkit(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    py::register(m)
}
