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

use crate::driver::pgsock::{with_reactor, IoState, Reactor};
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
    /// Work made while no event loop was running (`asyncio.run(engine.execute(...))`):
    /// it starts on the loop that first awaits it.
    deferred: Option<Task>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

pub type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

struct TaskSlot {
    /// None while the task is being polled.
    fut: Option<Task>,
    waker: std::task::Waker,
    flag: Arc<TaskWaker>,
}

/// Wakes a task of one loop's executor, from any thread.
struct TaskWaker {
    id: u64,
    owner: std::sync::Weak<LoopWaker>,
    queued: AtomicBool,
}

impl std::task::Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(owner) = self.owner.upgrade() {
            owner.runq.lock().unwrap().push(self.id);
            owner.signal();
        }
    }
}

thread_local! {
    /// The loop whose executor is running on this thread, if any: what it wakes or
    /// completes meanwhile is picked up before it returns, with no wake-up byte.
    static RUNNING: std::cell::Cell<*const LoopWaker> = const { std::cell::Cell::new(std::ptr::null()) };
}

/// Wakes one event loop from any thread, and runs the tasks (PostgreSQL requests) that
/// live on it.
struct LoopWaker {
    tx: UnixStream,
    rx: UnixStream,
    ready: Mutex<Vec<Arc<Shared>>>,
    signalled: AtomicBool,
    event_loop: Py<PyWeakrefReference>,
    tasks: Mutex<std::collections::HashMap<u64, TaskSlot>>,
    runq: Mutex<Vec<u64>>,
    next_task: std::sync::atomic::AtomicU64,
    /// Tells loops apart for as long as the process lives (an address may be reused).
    id: u64,
}

impl LoopWaker {
    fn new(event_loop: &Bound<'_, PyAny>) -> PyResult<LoopWaker> {
        let err = |e: std::io::Error| PyRuntimeError::new_err(format!("cannot create a waker: {e}"));
        let (tx, rx) = UnixStream::pair().map_err(err)?;
        tx.set_nonblocking(true).map_err(err)?;
        rx.set_nonblocking(true).map_err(err)?;
        Ok(LoopWaker {
            tx,
            rx,
            ready: Mutex::new(Vec::new()),
            signalled: AtomicBool::new(false),
            event_loop: PyWeakrefReference::new(event_loop)?.unbind(),
            tasks: Mutex::new(Default::default()),
            runq: Mutex::new(Vec::new()),
            next_task: Default::default(),
            id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
        })
    }

    fn is_running_here(&self) -> bool {
        RUNNING.with(|r| std::ptr::eq(r.get(), self))
    }

    /// Makes the loop call `drain` soon, unless this thread is running its executor now.
    fn signal(&self) {
        if self.is_running_here() {
            return;
        }
        if !self.signalled.swap(true, Ordering::AcqRel) {
            // A full socket already holds a wake-up byte, so WouldBlock is fine to ignore.
            let _ = (&self.tx).write(&[1]);
        }
    }

    fn push(&self, shared: Arc<Shared>) {
        self.ready.lock().unwrap().push(shared);
        self.signal();
    }

    /// Runs on the loop: resolves the future of every operation that finished.
    fn drain(self: &Arc<Self>, py: Python<'_>) -> PyResult<()> {
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
        self.run(py, || ())
    }

    fn resolve(&self, py: Python<'_>) -> PyResult<()> {
        let ready = std::mem::take(&mut *self.ready.lock().unwrap());
        let mut failed = None;
        for shared in ready {
            let fut = shared.state.lock().unwrap().waiter.take().map(|(_, f)| f);
            if let Some(fut) = fut {
                let fut = fut.bind(py);
                let woken = fut.call_method0(pyo3::intern!(py, "done")).and_then(|d| match d.is_truthy()? {
                    true => Ok(()),
                    false => fut.call_method1(pyo3::intern!(py, "set_result"), (py.None(),)).map(|_| ()),
                });
                // One future that cannot be woken must not strand the others.
                if let Err(e) = woken {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    fn spawn(self: &Arc<Self>, fut: Task) {
        let id = self.next_task.fetch_add(1, Ordering::Relaxed);
        let waker = Arc::new(TaskWaker { id, owner: Arc::downgrade(self), queued: AtomicBool::new(true) });
        let slot = TaskSlot { fut: Some(fut), waker: std::task::Waker::from(waker.clone()), flag: waker };
        self.tasks.lock().unwrap().insert(id, slot);
        self.runq.lock().unwrap().push(id);
    }

    /// Runs `first` (which may wake tasks), then every task that is ready, on the loop's
    /// thread with the GIL held; then resolves the futures of what finished.
    fn run(self: &Arc<Self>, py: Python<'_>, first: impl FnOnce()) -> PyResult<()> {
        if self.is_running_here() {
            // Called from inside a run: the outer one picks the work up.
            first();
            return Ok(());
        }
        struct Running(*const LoopWaker);
        impl Drop for Running {
            fn drop(&mut self) {
                RUNNING.with(|r| r.set(self.0));
            }
        }
        let _restore = Running(RUNNING.with(|r| r.replace(Arc::as_ptr(self))));
        first();
        let reactor: std::rc::Rc<dyn Reactor> = std::rc::Rc::new(AioReactor { owner: Arc::downgrade(self) });
        let started = std::time::Instant::now();
        let mut out_of_time = false;
        loop {
            let mut ids = std::mem::take(&mut *self.runq.lock().unwrap());
            if ids.is_empty() {
                break;
            }
            if started.elapsed() > STEP_BUDGET {
                // Rows keep coming faster than they are decoded: give the loop a turn, and
                // come back through the wake-up socket.
                self.runq.lock().unwrap().append(&mut ids);
                out_of_time = true;
                break;
            }
            for id in ids {
                let taken = self
                    .tasks
                    .lock()
                    .unwrap()
                    .get_mut(&id)
                    .and_then(|t| Some((t.fut.take()?, t.waker.clone(), t.flag.clone())));
                let Some((mut fut, waker, flag)) = taken else { continue };
                // Cleared before the poll: a wake during it queues the task again.
                flag.queued.store(false, Ordering::Release);
                let mut cx = std::task::Context::from_waker(&waker);
                // A task that panics is dropped (its awaiter gets an error) rather than
                // taking the rest of the queue down with it.
                let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    with_reactor(&reactor, || fut.as_mut().poll(&mut cx).is_ready())
                }))
                .unwrap_or(true);
                let finished = {
                    let mut tasks = self.tasks.lock().unwrap();
                    if done {
                        tasks.remove(&id)
                    } else {
                        if let Some(t) = tasks.get_mut(&id) {
                            t.fut = Some(fut);
                        }
                        None
                    }
                };
                // A finished task's state (a lease, say) is dropped outside the lock.
                drop(finished);
            }
        }
        drop(_restore);
        if out_of_time {
            self.signal();
        }
        self.resolve(py)
    }
}

/// Watches PostgreSQL sockets with the loop's selector (`add_reader` / `add_writer`).
struct AioReactor {
    owner: std::sync::Weak<LoopWaker>,
}

/// A socket watched by a loop; unwatched when dropped.
struct Watch {
    event_loop: Py<PyAny>,
    fd: i32,
    /// Holds the descriptor open until the loop has let go of it.
    socket: Arc<std::os::fd::OwnedFd>,
    io: std::sync::Weak<IoState>,
    write: bool,
    owner: u64,
    /// Which watch of the socket this is: a callback of an older one must not end it.
    serial: u64,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let (fd, write) = (self.fd, self.write);
        let socket = self.socket.clone();
        let _ = Python::try_attach(|py| -> PyResult<()> {
            let lp = self.event_loop.bind(py);
            let m = if write { pyo3::intern!(py, "remove_writer") } else { pyo3::intern!(py, "remove_reader") };
            let remove = lp.getattr(m)?;
            let ours = running_loop(py).is_ok_and(|l| l.is(lp));
            if ours || !lp.call_method0(pyo3::intern!(py, "is_running"))?.is_truthy()? {
                remove.call1((fd,))?;
                return Ok(());
            }
            // The loop runs on another thread (the connection moved to a loop of this one,
            // or closes here): its selector may only be changed there. The descriptor stays
            // open until then, so that its number cannot be watched anew for another socket
            // first; if the loop closes without running it, dropping the call closes it.
            let remove = remove.unbind();
            let (io, owner) = (self.io.clone(), self.owner);
            let unwatch = PyCFunction::new_closure(py, None, None, move |args, _kwargs| -> PyResult<()> {
                let _open = &socket;
                // The socket may have come back to this loop and been watched anew meanwhile
                // (on this thread, so this check cannot race with it): that watch stays.
                let rewatched = io.upgrade().is_some_and(|io| {
                    let slot = io.slot(write).lock().unwrap();
                    slot.as_ref().and_then(|w| w.downcast_ref::<Watch>()).is_some_and(|w| w.owner == owner)
                });
                if rewatched {
                    return Ok(());
                }
                remove.bind(args.py()).call1((fd,)).map(drop)
            })?;
            lp.call_method1(pyo3::intern!(py, "call_soon_threadsafe"), (unwatch,))?;
            Ok(())
        });
    }
}

/// The watch in `slot`, when it is the one numbered `serial`.
fn take_watch(
    slot: &Mutex<Option<Box<dyn std::any::Any + Send>>>,
    serial: u64,
) -> Option<Box<dyn std::any::Any + Send>> {
    let mut slot = slot.lock().unwrap();
    match slot.as_ref().and_then(|w| w.downcast_ref::<Watch>()) {
        Some(w) if w.serial == serial => slot.take(),
        _ => None,
    }
}

impl Reactor for AioReactor {
    fn watch(&self, io: &Arc<IoState>, write: bool) -> std::io::Result<()> {
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let slot = io.slot(write);
        let owner = self.owner.upgrade().ok_or_else(|| std::io::Error::other("the event loop is gone"))?;
        // The slot's lock is never held across Python: a callback of another loop's thread
        // may want it while this thread waits for the GIL.
        let old = {
            let mut slot = slot.lock().unwrap();
            if slot.as_ref().and_then(|w| w.downcast_ref::<Watch>()).is_some_and(|w| w.owner == owner.id) {
                return Ok(());
            }
            slot.take()
        };
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        let made = Python::attach(|py| -> PyResult<Watch> {
            drop(old);
            let event_loop =
                owner.event_loop.bind(py).upgrade().ok_or_else(|| PyRuntimeError::new_err("the event loop is gone"))?;
            let (weak_io, weak_owner) = (Arc::downgrade(io), Arc::downgrade(&owner));
            let fd = io.fd();
            let on_ready = PyCFunction::new_closure(py, None, None, move |args, _kwargs| -> PyResult<()> {
                let (Some(io), Some(owner)) = (weak_io.upgrade(), weak_owner.upgrade()) else { return Ok(()) };
                owner.run(args.py(), || {
                    let wanted = io.wake(write);
                    if !wanted {
                        // Nobody waits on this socket now (between requests, or a request
                        // waiting on its consumer): stop watching, or the loop would spin.
                        // Done before any task runs, so a task that waits on the socket
                        // again watches it anew.
                        drop(take_watch(io.slot(write), serial));
                    }
                })
            })?;
            let m = if write { pyo3::intern!(py, "add_writer") } else { pyo3::intern!(py, "add_reader") };
            event_loop.call_method1(m, (fd, on_ready))?;
            Ok(Watch {
                event_loop: event_loop.unbind(),
                fd,
                socket: io.keep_open(),
                io: Arc::downgrade(io),
                write,
                owner: owner.id,
                serial,
            })
        })
        .map_err(|e| std::io::Error::other(format!("cannot watch the PostgreSQL socket: {e}")))?;
        let replaced = slot.lock().unwrap().replace(Box::new(made));
        drop(replaced);
        Ok(())
    }
}

/// Runs `task` on the running event loop's thread: polled once now, then whenever it is
/// woken (its socket became readable, another thread finished something it waits on).
/// With no loop running, hands the task back for the caller to start later.
pub fn spawn(py: Python<'_>, task: Task) -> PyResult<Option<Task>> {
    let Ok(event_loop) = running_loop(py) else { return Ok(Some(task)) };
    let waker = waker_for(py, &event_loop)?;
    waker.spawn(task);
    waker.run(py, || ())?;
    Ok(None)
}

/// Runs the work behind `pending` (see [`spawn`]); with no loop running yet, it starts
/// when the awaitable is first awaited.
pub fn start<F>(py: Python<'_>, pending: &Pending, fut: F) -> PyResult<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    if let Some(task) = spawn(py, Box::pin(fut))? {
        pending.shared.state.lock().unwrap().deferred = Some(task);
    }
    Ok(())
}

/// One waker per live event loop, found by the loop's identity.
struct WakerEntry {
    event_loop: Py<PyWeakrefReference>,
    waker: Arc<LoopWaker>,
}

static WAKERS: Mutex<Vec<WakerEntry>> = Mutex::new(Vec::new());

/// Forgets loops that are gone or closed: their sockets close, and their unfinished tasks
/// are dropped, which gives back the connections and pool permits they held. Asking a loop
/// runs Python, and dropping tasks may too, so neither happens under the lock.
fn sweep(py: Python<'_>) {
    let entries = std::mem::take(&mut *WAKERS.lock().unwrap());
    let (kept, gone): (Vec<WakerEntry>, Vec<WakerEntry>) =
        entries.into_iter().partition(|e| match e.event_loop.bind(py).upgrade() {
            Some(l) => !l.call_method0("is_closed").and_then(|c| c.is_truthy()).unwrap_or(true),
            None => false,
        });
    WAKERS.lock().unwrap().extend(kept);
    drop(gone);
}

fn waker_for(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<LoopWaker>> {
    // With other loops about, they are checked every time, not only when a new loop comes:
    // one closed while it still had work (a thread's asyncio.run) would otherwise keep that
    // work's connections from the loops still running.
    let found = {
        let wakers = WAKERS.lock().unwrap();
        let found = wakers
            .iter()
            .find(|e| e.event_loop.bind(py).upgrade().is_some_and(|l| l.is(event_loop)))
            .map(|e| e.waker.clone());
        match found {
            Some(w) if wakers.len() < 2 => return Ok(w),
            other => other,
        }
    };
    sweep(py);
    if let Some(w) = found {
        return Ok(w);
    }
    let waker = Arc::new(LoopWaker::new(event_loop)?);
    let w = Arc::downgrade(&waker);
    let drain = PyCFunction::new_closure(py, None, None, move |args, _kwargs| -> PyResult<()> {
        match w.upgrade() {
            Some(w) => w.drain(args.py()),
            None => Ok(()),
        }
    })?;
    event_loop.call_method1("add_reader", (waker.rx.as_raw_fd(), drain))?;
    let entry = WakerEntry { event_loop: PyWeakrefReference::new(event_loop)?.unbind(), waker: waker.clone() };
    WAKERS.lock().unwrap().push(entry);
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

/// See [`Completer::cancel_probe`].
pub struct CancelProbe {
    shared: Option<Arc<Shared>>,
}

impl CancelProbe {
    pub fn is_cancelled(&self) -> bool {
        consumed(&self.shared)
    }
}

/// Whether the awaiting side of `shared` is gone.
fn consumed(shared: &Option<Arc<Shared>>) -> bool {
    shared.as_ref().is_some_and(|s| s.state.lock().unwrap().consumed)
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
        consumed(&self.shared)
    }

    /// A handle that tells, later and from anywhere, whether the awaiting side went away.
    pub fn cancel_probe(&self) -> CancelProbe {
        CancelProbe { shared: self.shared.clone() }
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
        let (hook, _steps, _result, _deferred) = {
            let mut st = self.shared.state.lock().unwrap();
            let unfinished = st.result.is_none() && !st.consumed;
            st.consumed = true;
            st.waiter = None;
            let steps = std::mem::take(&mut st.steps);
            (if unfinished { st.on_cancel.take() } else { None }, steps, st.result.take(), st.deferred.take())
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
        let deferred = self.shared.state.lock().unwrap().deferred.take();
        if let Some(task) = deferred {
            let event_loop = running_loop(py)?;
            let waker = waker_for(py, &event_loop)?;
            waker.spawn(task);
            waker.run(py, || ())?;
        }
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
