//! The one place where work done off the event loop becomes a Python awaitable.
//!
//! [`Pending`] is a minimal awaitable written in Rust. When its result is already there on
//! the first `__next__`, `await` completes with no event-loop round trip. Otherwise it yields
//! an asyncio future, and the producing thread wakes the loop without touching Python: it
//! queues the finished operation on the loop's [`LoopWaker`] and writes one byte to a
//! socket the loop watches (`loop.add_reader`). The loop then resolves every queued future
//! in one callback. Worker threads never take the GIL, so they can neither stall behind a
//! busy interpreter nor race its shutdown.
//!
//! The result is turned into Python objects on the loop's thread, in `__next__`. A producer
//! may also send steps ahead of the result (a large load's rows, chunk by chunk): the loop's
//! thread works on one while the producer reads the next, so the two threads overlap instead
//! of taking turns.
//! Dropping a `Pending` before it finished (the awaiting task was cancelled) runs its cancel
//! hook, which interrupts or cancels the statement.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCFunction, PyWeakrefReference};

use crate::errors::Error;

/// Turns a finished result into a Python object; runs on the event loop's thread.
pub type Payload = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// Part of a result that arrived early (a chunk of rows), for the loop's thread to work on
/// while the producer reads the rest.
pub type Step = Box<dyn FnOnce(Python<'_>) -> PyResult<()> + Send>;

type CancelHook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    /// Run in order before the result, each as soon as the awaiting task gets to it.
    steps: Vec<Step>,
    result: Option<Result<Payload, Error>>,
    /// The asyncio future a task waits on, and the waker of its loop.
    waiter: Option<(Arc<LoopWaker>, Py<PyAny>)>,
    on_cancel: Option<CancelHook>,
    consumed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

/// Wakes one event loop from any thread.
struct LoopWaker {
    tx: UnixStream,
    rx: UnixStream,
    ready: Mutex<Vec<Arc<Shared>>>,
    signalled: AtomicBool,
}

impl LoopWaker {
    fn new() -> std::io::Result<LoopWaker> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok(LoopWaker { tx, rx, ready: Mutex::new(Vec::new()), signalled: AtomicBool::new(false) })
    }

    fn push(&self, shared: Arc<Shared>) {
        self.ready.lock().unwrap().push(shared);
        if !self.signalled.swap(true, Ordering::AcqRel) {
            // A full socket already holds a wake-up byte, so WouldBlock is fine to ignore.
            let _ = (&self.tx).write(&[1]);
        }
    }

    /// Runs on the loop: resolves the future of every operation that finished.
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        // Order matters: empty the socket, then clear the flag, then take the queue. A
        // producer that finds the flag clear writes a fresh byte that this drain has not
        // consumed, so its item is picked up here or by the next drain, never stranded.
        let mut buf = [0u8; 256];
        while let Ok(n) = (&self.rx).read(&mut buf) {
            if n < buf.len() {
                break;
            }
        }
        self.signalled.store(false, Ordering::Release);
        let ready = std::mem::take(&mut *self.ready.lock().unwrap());
        for shared in ready {
            let fut = shared.state.lock().unwrap().waiter.take().map(|(_, f)| f);
            if let Some(fut) = fut {
                let fut = fut.bind(py);
                if !fut.call_method0(pyo3::intern!(py, "done"))?.is_truthy()? {
                    fut.call_method1(pyo3::intern!(py, "set_result"), (py.None(),))?;
                }
            }
        }
        Ok(())
    }
}

/// One waker per live event loop, found by the loop's identity.
struct WakerEntry {
    event_loop: Py<PyWeakrefReference>,
    waker: Arc<LoopWaker>,
}

static WAKERS: Mutex<Vec<WakerEntry>> = Mutex::new(Vec::new());

fn waker_for(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<LoopWaker>> {
    let mut wakers = WAKERS.lock().unwrap();
    // Forget loops that are gone or closed; their sockets close with the last reference.
    wakers.retain(|e| match e.event_loop.bind(py).upgrade() {
        Some(l) => !l.call_method0("is_closed").and_then(|c| c.is_truthy()).unwrap_or(true),
        None => false,
    });
    for e in wakers.iter() {
        if let Some(l) = e.event_loop.bind(py).upgrade() {
            if l.is(event_loop) {
                return Ok(e.waker.clone());
            }
        }
    }
    let waker = Arc::new(LoopWaker::new().map_err(|e| PyRuntimeError::new_err(format!("cannot create a waker: {e}")))?);
    let w = waker.clone();
    let drain = PyCFunction::new_closure(py, None, None, move |args, _kwargs| -> PyResult<()> { w.drain(args.py()) })?;
    event_loop.call_method1("add_reader", (waker.rx.as_raw_fd(), drain))?;
    wakers.push(WakerEntry { event_loop: PyWeakrefReference::new(event_loop)?.unbind(), waker: waker.clone() });
    Ok(waker)
}

/// How long one `__next__` works through steps before it gives the event loop a turn.
const STEP_BUDGET: std::time::Duration = std::time::Duration::from_millis(2);

fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static GET_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    GET_LOOP.import(py, "asyncio", "get_running_loop")?.call0()
}

/// A finished future: awaiting it lets the loop run what else is ready, then resumes.
fn yield_once(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let fut = running_loop(py)?.call_method0(pyo3::intern!(py, "create_future"))?;
    fut.call_method1(pyo3::intern!(py, "set_result"), (py.None(),))?;
    fut.setattr(pyo3::intern!(py, "_asyncio_future_blocking"), true)?;
    Ok(fut.unbind())
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
    (Pending { shared: shared.clone() }, Completer { shared: Some(shared) })
}

/// A `Pending` that is already done: awaiting it costs no event-loop round trip.
pub fn ready(result: Result<Payload, Error>) -> Pending {
    let (p, c) = pending();
    c.complete(result);
    p
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
        self.shared.as_ref().is_some_and(|s| s.state.lock().unwrap().consumed)
    }

    /// A handle that hands the awaiting side early parts of the result.
    pub fn stepper(&self) -> Stepper {
        Stepper { shared: self.shared.clone() }
    }

    pub fn complete(mut self, result: Result<Payload, Error>) {
        let Some(shared) = self.shared.take() else { return };
        let waker = {
            let mut st = shared.state.lock().unwrap();
            st.on_cancel = None;
            if st.consumed {
                // Nobody will read it. Any Python objects inside are released through
                // PyO3's deferred reference pool, without taking the GIL here.
                return;
            }
            st.result = Some(result);
            st.waiter.as_ref().map(|(w, _)| w.clone())
        };
        if let Some(w) = waker {
            w.push(shared);
        }
    }
}

/// Sends steps (see [`Step`]) to a `Pending` from any thread, before its result.
pub struct Stepper {
    shared: Option<Arc<Shared>>,
}

impl Stepper {
    /// Hands the awaiting side an early part of the result. The loop is woken for it only
    /// if the task is waiting; a task busy with earlier steps picks it up when it asks again.
    pub fn step(&self, step: Step) {
        let Some(shared) = &self.shared else { return };
        let waker = {
            let mut st = shared.state.lock().unwrap();
            if st.consumed || st.result.is_some() {
                return;
            }
            st.steps.push(step);
            st.waiter.as_ref().map(|(w, _)| w.clone())
        };
        if let Some(w) = waker {
            w.push(shared.clone());
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        if self.shared.is_some() {
            let c = Completer { shared: self.shared.take() };
            c.complete(Err(Error::internal("the operation ended without a result (worker stopped)")));
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.abandon();
    }
}

impl Pending {
    /// The awaiting side is gone: stop caring about the result and cancel unfinished work.
    fn abandon(&self) {
        // What is dropped here (queued steps, a result nobody will read, which may hold a
        // session's busy flag) is dropped outside the lock, and now rather than whenever
        // this awaitable is freed.
        let (hook, _steps, _result) = {
            let mut st = self.shared.state.lock().unwrap();
            let unfinished = st.result.is_none() && !st.consumed;
            st.consumed = true;
            st.waiter = None;
            let steps = std::mem::take(&mut st.steps);
            (if unfinished { st.on_cancel.take() } else { None }, steps, st.result.take())
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
        if matches!(st.result, Some(Err(_))) && !st.steps.is_empty() {
            // The operation failed: what it sent ahead and is not applied yet is dropped
            // rather than applied to the session on the way to raising.
            let steps = std::mem::take(&mut st.steps);
            drop(st);
            drop(steps);
            st = self.shared.state.lock().unwrap();
        }
        let started = std::time::Instant::now();
        while !st.steps.is_empty() {
            if started.elapsed() > STEP_BUDGET {
                // Steps keep coming: let the loop run its other tasks, then go on.
                drop(st);
                return yield_once(py);
            }
            // Steps run without the lock: they run Python code, and the producer goes on
            // adding steps meanwhile.
            let mut steps = std::mem::take(&mut st.steps).into_iter();
            drop(st);
            while let Some(step) = steps.next() {
                if let Err(e) = step(py) {
                    self.abandon();
                    return Err(e);
                }
                if steps.len() > 0 && started.elapsed() > STEP_BUDGET {
                    let mut rest: Vec<Step> = steps.collect();
                    let mut st = self.shared.state.lock().unwrap();
                    rest.append(&mut st.steps);
                    st.steps = rest;
                    drop(st);
                    return yield_once(py);
                }
            }
            st = self.shared.state.lock().unwrap();
        }
        if let Some(result) = st.result.take() {
            st.consumed = true;
            st.waiter = None;
            drop(st);
            let value = result.map_err(PyErr::from)?(py)?;
            return Err(PyStopIteration::new_err((value,)));
        }
        if st.consumed {
            return Err(PyRuntimeError::new_err("cannot await an OrmKit operation twice"));
        }
        let fut = match &st.waiter {
            Some((_, fut)) => fut.clone_ref(py),
            None => {
                drop(st);
                let event_loop = running_loop(py)?;
                let waker = waker_for(py, &event_loop)?;
                let fut = event_loop.call_method0(pyo3::intern!(py, "create_future"))?;
                st = self.shared.state.lock().unwrap();
                if st.result.is_some() || !st.steps.is_empty() {
                    // Finished (or sent more) while the future was being made: no need to wait.
                    drop(st);
                    return self.__next__(py);
                }
                st.waiter = Some((waker, fut.clone().unbind()));
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

    /// With `send` and `close`, makes this a `collections.abc.Coroutine`, so that
    /// `asyncio.create_task` and `asyncio.run` take it. A task cancelled while waiting throws
    /// `CancelledError` in here: the work is cancelled and the exception goes on.
    #[pyo3(signature = (typ, val=None, _tb=None))]
    fn throw(
        &self,
        typ: Bound<'_, PyAny>,
        val: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.abandon();
        let exc = match val {
            Some(v) if !v.is_none() && !v.is_instance_of::<pyo3::exceptions::PyBaseException>() => typ.call1((v,))?,
            Some(v) if !v.is_none() => v,
            _ => typ,
        };
        Err(PyErr::from_value(exc))
    }

    fn close(&self) {
        self.abandon();
    }

    fn done(&self) -> bool {
        let st = self.shared.state.lock().unwrap();
        st.result.is_some() && st.steps.is_empty()
    }
}
