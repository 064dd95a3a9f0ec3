//! Raw-SQL results and rows, converted to Python only in the form asked for.

use std::sync::Arc;

use pyo3::exceptions::{PyAttributeError, PyIndexError, PyKeyError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use super::convert::to_py;

use crate::rows::RowSet;

pub fn tuples<'py>(py: Python<'py>, rows: &RowSet) -> PyResult<Bound<'py, PyList>> {
    let _gc = super::GcPause::new(py, rows.len());
    let list = PyList::empty(py);
    let w = rows.width();
    if w == 0 {
        return Ok(list);
    }
    for chunk in rows.values.chunks(w) {
        let items = chunk.iter().map(|v| to_py(py, v)).collect::<PyResult<Vec<_>>>()?;
        list.append(PyTuple::new(py, items)?)?;
    }
    Ok(list)
}

pub fn dicts<'py>(py: Python<'py>, rows: &RowSet) -> PyResult<Bound<'py, PyList>> {
    let _gc = super::GcPause::new(py, rows.len());
    let list = PyList::empty(py);
    let w = rows.width();
    if w == 0 {
        return Ok(list);
    }
    let keys: Vec<Bound<'py, PyString>> = rows.columns.names.iter().map(|n| PyString::intern(py, n)).collect();
    for chunk in rows.values.chunks(w) {
        let d = PyDict::new(py);
        for (k, v) in keys.iter().zip(chunk) {
            d.set_item(k, to_py(py, v)?)?;
        }
        list.append(d)?;
    }
    Ok(list)
}

pub fn column<'py>(py: Python<'py>, rows: &RowSet, idx: usize) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    let w = rows.width();
    if w == 0 {
        return Ok(list);
    }
    for chunk in rows.values.chunks(w) {
        list.append(to_py(py, &chunk[idx])?)?;
    }
    Ok(list)
}

/// The result of a raw SQL statement. Rows stay in Rust until one of the methods asks.
#[pyclass(frozen, module = "ormkit._ormkit", name = "Result")]
pub struct RawResult {
    pub rows: RowSet,
}

#[pymethods]
impl RawResult {
    /// Every row, addressable by column name or position.
    fn all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let _gc = super::GcPause::new(py, self.rows.len());
        let list = PyList::empty(py);
        let w = self.rows.width();
        let names = self.rows.columns.names.clone();
        if w == 0 {
            return Ok(list);
        }
        for chunk in self.rows.values.chunks(w) {
            let values = chunk.iter().map(|v| to_py(py, v).map(|b| b.unbind())).collect::<PyResult<Vec<_>>>()?;
            list.append(Row { names: names.clone(), values })?;
        }
        Ok(list)
    }

    fn first(&self, py: Python<'_>) -> PyResult<Option<Row>> {
        if self.rows.is_empty() {
            return Ok(None);
        }
        let values = self.rows.row(0).iter().map(|v| to_py(py, v).map(|b| b.unbind())).collect::<PyResult<Vec<_>>>()?;
        Ok(Some(Row { names: self.rows.columns.names.clone(), values }))
    }

    fn tuples<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        tuples(py, &self.rows)
    }

    fn dicts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        dicts(py, &self.rows)
    }

    /// The values of one column, by name or position.
    fn column<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let idx = if let Ok(i) = key.extract::<usize>() {
            if i >= self.rows.width() {
                return Err(PyIndexError::new_err(format!("the result has {} columns", self.rows.width())));
            }
            i
        } else {
            let name: String = key.extract()?;
            self.rows.column_index(&name).ok_or_else(|| {
                PyKeyError::new_err(format!(
                    "no column {name:?} in the result; columns are: {}",
                    self.rows.columns.names.join(", ")
                ))
            })?
        };
        column(py, &self.rows, idx)
    }

    /// The first column of the first row, or None.
    fn scalar<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.rows.values.first() {
            Some(v) if self.rows.width() > 0 => to_py(py, v),
            _ => Ok(py.None().into_bound(py)),
        }
    }

    #[getter]
    fn columns(&self) -> Vec<String> {
        self.rows.columns.names.to_vec()
    }

    #[getter]
    fn rowcount(&self) -> u64 {
        if self.rows.width() == 0 {
            self.rows.affected
        } else {
            self.rows.len() as u64
        }
    }

    fn __len__(&self) -> usize {
        self.rows.len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.all(py)?.try_iter().map(|i| i.into_any())
    }

    fn __repr__(&self) -> String {
        format!("<Result {} rows x {} columns>", self.rows.len(), self.rows.width())
    }
}

/// One row of a raw result: `row["name"]`, `row.name`, `row[0]`, unpacking.
#[pyclass(frozen, module = "ormkit._ormkit")]
pub struct Row {
    names: Arc<[String]>,
    values: Vec<Py<PyAny>>,
}

impl Row {
    fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

#[pymethods]
impl Row {
    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if let Ok(i) = key.extract::<isize>() {
            let n = self.values.len() as isize;
            let j = if i < 0 { i + n } else { i };
            if j < 0 || j >= n {
                return Err(PyIndexError::new_err("row index out of range"));
            }
            return Ok(self.values[j as usize].clone_ref(py));
        }
        let name: String = key.extract()?;
        match self.index(&name) {
            Some(i) => Ok(self.values[i].clone_ref(py)),
            None => Err(PyKeyError::new_err(format!("no column {name:?}; columns are: {}", self.names.join(", ")))),
        }
    }

    fn __getattr__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        match self.index(name) {
            Some(i) => Ok(self.values[i].clone_ref(py)),
            None => {
                Err(PyAttributeError::new_err(format!("no column {name:?}; columns are: {}", self.names.join(", "))))
            }
        }
    }

    fn __len__(&self) -> usize {
        self.values.len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyTuple::new(py, self.values.iter().map(|v| v.clone_ref(py)))?.try_iter()?.into_any())
    }

    fn __contains__(&self, name: &str) -> bool {
        self.index(name).is_some()
    }

    fn keys(&self) -> Vec<String> {
        self.names.to_vec()
    }

    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.values.iter().map(|v| v.clone_ref(py)))
    }

    fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.names.iter().zip(&self.values) {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let mine = self.values(py)?;
        if let Ok(r) = other.cast::<Row>() {
            return mine.eq(r.get().values(py)?);
        }
        if let Ok(t) = other.cast::<PyTuple>() {
            return mine.eq(t);
        }
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let parts = self
            .names
            .iter()
            .zip(&self.values)
            .map(|(k, v)| Ok(format!("{k}={}", v.bind(py).repr()?)))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(format!("Row({})", parts.join(", ")))
    }
}
