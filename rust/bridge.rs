//! The one place where work done off the event loop becomes a Python awaitable.
//!
//! [`Pending`] is a minimal awaitable written in Rust. When its result is already there
//! on the first `__next__`, `await` completes with no event-loop round trip. Otherwise it
//! yields an asyncio future that the producing thread resolves with
//! `loop.call_soon_threadsafe`. The result is turned into Python objects on the loop's
//! thread, in `__next__`, so worker threads never build Python objects.
//!
//! Dropping a `Pending` before it finished (the awaiting task was cancelled) runs its
//! cancel hook, which interrupts the statement on its connection.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyCFunction;

use crate::errors::Error;

/// Turns a finished result into a Python object; runs on the event loop's thread.
pub type Payload = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

type CancelHook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    result: Option<Result<Payload, Error>>,
    /// `(loop, future)` once a task is waiting.
    waiter: Option<(Py<PyAny>, Py<PyAny>)>,
    on_cancel: Option<CancelHook>,
    consumed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

#[pyclass(module = "ormkit._ormkit")]
pub struct Pending {
    shared: Arc<Shared>,
}

/// The producer's half: exactly one result goes in, from any thread.
pub struct Completer {
    shared: Option<Arc<Shared>>,
}

pub fn pending() -> (Pending, Completer) {
    let shared = Arc::new(Shared::default());
    (
        Pending {
            shared: shared.clone(),
        },
        Completer {
            shared: Some(shared),
        },
    )
}

/// A `Pending` that is already done: awaiting it costs no event-loop round trip.
pub fn ready(result: Result<Payload, Error>) -> Pending {
    let (p, c) = pending();
    c.complete(result);
    p
}

fn wake_fn(py: Python<'_>) -> PyResult<&Bound<'_, PyCFunction>> {
    static WAKE: PyOnceLock<Py<PyCFunction>> = PyOnceLock::new();
    WAKE.get_or_try_init(py, || {
        let f = PyCFunction::new_closure(py, None, None, |args, _kwargs| -> PyResult<()> {
            let fut = args.get_item(0)?;
            if !fut.call_method0("done")?.is_truthy()? {
                fut.call_method1("set_result", (args.py().None(),))?;
            }
            Ok(())
        })?;
        Ok::<_, PyErr>(f.unbind())
    })
    .map(|f| f.bind(py))
}

impl Completer {
    /// Registers what to do if the awaiting side goes away before the result arrives.
    pub fn on_cancel(&self, hook: CancelHook) {
        if let Some(s) = &self.shared {
            s.state.lock().unwrap().on_cancel = Some(hook);
        }
    }

    /// True when the awaiting side is gone, so the work need not start.
    pub fn is_cancelled(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.state.lock().unwrap().consumed)
    }

    pub fn complete(mut self, result: Result<Payload, Error>) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let waiter = {
            let mut st = shared.state.lock().unwrap();
            st.on_cancel = None;
            if st.consumed {
                // Nobody will read it; drop the payload (and any Python objects it holds)
                // with the interpreter attached.
                drop(st);
                Python::attach(move |_| drop(result));
                return;
            }
            st.result = Some(result);
            st.waiter.take()
        };
        if let Some((lp, fut)) = waiter {
            Python::attach(|py| {
                let wake = match wake_fn(py) {
                    Ok(w) => w,
                    Err(_) => return,
                };
                // The loop may be closed by now; then there is nobody left to wake.
                let _ = lp
                    .bind(py)
                    .call_method1("call_soon_threadsafe", (wake, fut.bind(py)));
                drop(fut);
                drop(lp);
            });
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        if self.shared.is_some() {
            let c = Completer {
                shared: self.shared.take(),
            };
            c.complete(Err(Error::internal(
                "the operation ended without a result (worker stopped)",
            )));
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let hook = {
            let mut st = self.shared.state.lock().unwrap();
            if st.result.is_none() && !st.consumed {
                st.consumed = true;
                st.on_cancel.take()
            } else {
                st.consumed = true;
                None
            }
        };
        if let Some(h) = hook {
            h();
        }
    }
}

#[pymethods]
impl Pending {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut st = self.shared.state.lock().unwrap();
        if let Some(result) = st.result.take() {
            st.consumed = true;
            drop(st);
            let value = result.map_err(PyErr::from)?(py)?;
            return Err(PyStopIteration::new_err((value,)));
        }
        if st.consumed {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "cannot reuse an already awaited OrmKit operation",
            ));
        }
        let fut = match &st.waiter {
            Some((_, fut)) => fut.clone_ref(py),
            None => {
                drop(st);
                static GET_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
                let get_loop = GET_LOOP.import(py, "asyncio", "get_running_loop")?;
                let lp = get_loop.call0()?;
                let fut = lp.call_method0("create_future")?;
                st = self.shared.state.lock().unwrap();
                if st.result.is_some() {
                    // Finished while we created the future: no need to wait.
                    drop(st);
                    return self.__next__(py);
                }
                st.waiter = Some((lp.unbind(), fut.clone().unbind()));
                fut.unbind()
            }
        };
        drop(st);
        let fut = fut.into_bound(py);
        fut.setattr(pyo3::intern!(py, "_asyncio_future_blocking"), true)?;
        Ok(fut.unbind())
    }

    fn send(&self, py: Python<'_>, _value: Py<PyAny>) -> PyResult<Py<PyAny>> {
        self.__next__(py)
    }

    fn done(&self) -> bool {
        self.shared.state.lock().unwrap().result.is_some()
    }
}
