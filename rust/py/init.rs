//! Model constructors in Rust: `User(name=..., email=...)` fills the new instance's
//! `__dict__` from the declared defaults and the keyword arguments without running Python
//! bytecode, which is most of what building many instances for an insert costs.

use std::collections::HashMap;
use std::os::raw::c_int;
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFrozenSet, PyString, PyType};

struct InitSpec {
    name: String,
    /// The column names, for the message about an unknown argument.
    fields: String,
    accepts: Py<PyFrozenSet>,
    /// Defaults that are values, copied first (keyword arguments then override them).
    statics: Py<PyDict>,
    /// Defaults that are callables, called for each instance not given that field.
    factories: Vec<(Py<PyString>, Py<PyAny>)>,
}

/// By type object address. Classes live as long as the process in practice; an entry is
/// only ever read through a live instance of its class, whose type keeps the class alive.
fn specs() -> &'static Mutex<HashMap<usize, Arc<InitSpec>>> {
    static SPECS: OnceLock<Mutex<HashMap<usize, Arc<InitSpec>>>> = OnceLock::new();
    SPECS.get_or_init(Default::default)
}

/// Makes `cls(**kwargs)` run the constructor below. Called once per model class whose
/// `__init__` is `Base.__init__`; the Python `__init__` stays in place for `super().__init__`.
#[pyfunction]
pub fn install_init(
    cls: &Bound<'_, PyType>,
    accepts: Bound<'_, PyFrozenSet>,
    statics: Bound<'_, PyDict>,
    factories: Vec<(Bound<'_, PyString>, Bound<'_, PyAny>)>,
    fields: String,
) -> PyResult<()> {
    let spec = InitSpec {
        name: cls.name()?.to_string(),
        fields,
        accepts: accepts.unbind(),
        statics: statics.unbind(),
        factories: factories.into_iter().map(|(k, f)| (k.unbind(), f.unbind())).collect(),
    };
    specs().lock().unwrap().insert(cls.as_ptr() as usize, Arc::new(spec));
    // SAFETY: `cls` is a heap type that finished `PyType_Ready`; replacing its `tp_init` is
    // what assigning `cls.__init__` would do, with a C function instead of a slot wrapper.
    unsafe { (*(cls.as_ptr() as *mut ffi::PyTypeObject)).tp_init = Some(model_init) };
    Ok(())
}

fn spec_for(mut tp: *mut ffi::PyTypeObject) -> Option<Arc<InitSpec>> {
    let specs = specs().lock().unwrap();
    while !tp.is_null() {
        if let Some(s) = specs.get(&(tp as usize)) {
            return Some(s.clone());
        }
        // SAFETY: `tp` is a live type object; its base chain ends in NULL.
        tp = unsafe { (*tp).tp_base };
    }
    None
}

unsafe extern "C" fn model_init(slf: *mut ffi::PyObject, args: *mut ffi::PyObject, kwds: *mut ffi::PyObject) -> c_int {
    // SAFETY: CPython calls tp_init with the GIL held.
    let py = unsafe { Python::assume_attached() };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init(py, slf, args, kwds)))
        .unwrap_or_else(|_| Err(PyTypeError::new_err("model constructor panicked")));
    match result {
        Ok(()) => 0,
        Err(e) => {
            e.restore(py);
            -1
        }
    }
}

fn init(py: Python<'_>, slf: *mut ffi::PyObject, args: *mut ffi::PyObject, kwds: *mut ffi::PyObject) -> PyResult<()> {
    // SAFETY: `slf` is the instance being initialised, a borrowed reference.
    let obj = unsafe { Bound::from_borrowed_ptr(py, slf) };
    let spec = spec_for(obj.get_type().as_ptr() as *mut ffi::PyTypeObject)
        .ok_or_else(|| PyTypeError::new_err("model class has no constructor spec"))?;
    if !args.is_null() {
        // SAFETY: `args` is the positional-arguments tuple.
        let n = unsafe { ffi::PyTuple_Size(args) };
        if n > 0 {
            return Err(PyTypeError::new_err(format!(
                "{}() takes keyword arguments only, got {n} positional; fields are: {}",
                spec.name, spec.fields
            )));
        }
    }
    // SAFETY: `obj` has a `__dict__` (models are plain heap classes); a new reference.
    let dict = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyObject_GenericGetDict(slf, std::ptr::null_mut()))? };
    let dict = dict.cast_into::<PyDict>()?;
    let kw = if kwds.is_null() {
        None
    } else {
        // SAFETY: `kwds` is the keyword-arguments dict, borrowed.
        Some(unsafe { Bound::from_borrowed_ptr(py, kwds) }.cast_into::<PyDict>()?)
    };
    if let Some(kw) = &kw {
        let accepts = spec.accepts.bind(py);
        let mut unknown: Vec<String> = Vec::new();
        for (key, _) in kw.iter() {
            if !accepts.contains(&key)? {
                unknown.push(key.repr()?.to_string());
            }
        }
        if !unknown.is_empty() {
            unknown.sort();
            return Err(PyTypeError::new_err(format!(
                "{}() got an unexpected keyword argument {}; fields are: {}",
                spec.name, unknown[0], spec.fields
            )));
        }
    }
    dict.update(spec.statics.bind(py).as_mapping())?;
    if let Some(kw) = &kw {
        dict.update(kw.as_mapping())?;
    }
    for (name, make) in &spec.factories {
        let name = name.bind(py);
        if kw.as_ref().map(|k| k.contains(name)).transpose()?.unwrap_or(false) {
            continue;
        }
        dict.set_item(name, make.bind(py).call0()?)?;
    }
    Ok(())
}
