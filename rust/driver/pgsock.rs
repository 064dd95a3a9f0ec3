//! The socket of a PostgreSQL connection, read and written on the thread that awaits the
//! query rather than on a runtime thread of its own.
//!
//! tokio-postgres speaks the protocol; it only needs a stream. [`Sock`] is that stream over
//! a non-blocking socket whose readiness comes from the polling thread's [`Reactor`]: for
//! Python callers, the event loop's selector (`add_reader`). A round trip then costs no hand-off
//! between threads: the loop's thread writes the query, sleeps in its own selector, and reads
//! and decodes the answer itself, as a pure-Python driver would.
//!
//! Connecting happens once per pooled connection, on a blocking thread: name resolution, the
//! TCP connect, TLS and authentication block with the connect timeout, then the socket turns
//! non-blocking and the connection moves to whichever thread uses it.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, NoTls};

/// Tells a thread's event loop which sockets to watch.
pub trait Reactor {
    /// Calls [`IoState::wake`] whenever the socket is readable (or writable, with `write`),
    /// until the registration the reactor keeps in `io.slot(write)` is dropped.
    fn watch(&self, io: &Arc<IoState>, write: bool) -> io::Result<()>;
}

thread_local! {
    static REACTOR: RefCell<Option<Rc<dyn Reactor>>> = const { RefCell::new(None) };
}

/// Runs `f` with `reactor` as the reactor of sockets polled on this thread.
pub fn with_reactor<R>(reactor: &Rc<dyn Reactor>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Rc<dyn Reactor>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            REACTOR.with(|r| *r.borrow_mut() = prev);
        }
    }
    let _restore = Restore(REACTOR.with(|r| r.replace(Some(reactor.clone()))));
    f()
}

/// Ignores what sockets wait for: for polling a connection once, to see what came in.
struct Unwatched;

impl Reactor for Unwatched {
    fn watch(&self, _io: &Arc<IoState>, _write: bool) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with sockets that would block left unwatched.
pub fn unwatched<R>(f: impl FnOnce() -> R) -> R {
    let reactor: Rc<dyn Reactor> = Rc::new(Unwatched);
    with_reactor(&reactor, f)
}

fn current_reactor() -> Option<Rc<dyn Reactor>> {
    REACTOR.with(|r| r.borrow().clone())
}

/// What a connection's socket shares with the reactor watching it.
pub struct IoState {
    /// The descriptor, closed when the connection and every registration still holding it
    /// are gone.
    socket: Arc<OwnedFd>,
    /// The tasks waiting to read and to write.
    wakers: [AtomicWaker; 2],
    /// The reactor's registrations for reading and for writing; dropping one stops the
    /// watching.
    watches: [Mutex<Option<Box<dyn Any + Send>>>; 2],
}

impl IoState {
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Wakes the task waiting to read (or to write); false when none is (the readiness is
    /// not wanted).
    pub fn wake(&self, write: bool) -> bool {
        match self.wakers[write as usize].take() {
            Some(w) => {
                w.wake();
                true
            }
            None => false,
        }
    }

    /// Keeps the descriptor open for as long as the handle lives: for a registration that
    /// is undone later on another thread, so that the number cannot go to another socket
    /// first.
    pub fn keep_open(&self) -> Arc<OwnedFd> {
        self.socket.clone()
    }

    /// Where the reactor keeps its registration for reading (or writing).
    pub fn slot(&self, write: bool) -> &Mutex<Option<Box<dyn Any + Send>>> {
        &self.watches[write as usize]
    }

    /// After an `EAGAIN`: wait until the thread's reactor sees the socket ready.
    fn would_block(self: &Arc<Self>, cx: &Context<'_>, write: bool) -> Poll<io::Result<usize>> {
        let Some(reactor) = current_reactor() else {
            return Poll::Ready(Err(io::Error::other("a PostgreSQL connection was used outside an event loop")));
        };
        self.wakers[write as usize].register(cx.waker());
        match reactor.watch(self, write) {
            // The reactor is level-triggered: readiness that came in meanwhile still wakes.
            Ok(()) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for IoState {
    fn drop(&mut self) {
        // Unwatched before the socket closes (or, for a loop running on another thread,
        // holding it open until that loop unwatches it): a closed descriptor's number may be
        // reused at once.
        let watches: Vec<_> = self.watches.iter().map(|w| w.lock().unwrap().take()).collect();
        drop(watches);
    }
}

/// The stream tokio-postgres reads and writes.
pub struct Sock(Arc<IoState>);

impl AsyncRead for Sock {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let io = &self.0;
        loop {
            // SAFETY: bytes are only written into the unfilled part, and only the `n` the
            // kernel wrote are then marked initialised.
            let n = unsafe {
                let dst = buf.unfilled_mut();
                libc::read(io.fd(), dst.as_mut_ptr().cast(), dst.len())
            };
            if n >= 0 {
                let n = n as usize;
                // SAFETY: the kernel initialised `n` bytes of the unfilled part.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return io.would_block(cx, false).map_ok(|_| ()),
                _ => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncWrite for Sock {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let io = &self.0;
        loop {
            // SAFETY: `data` is a valid buffer; MSG_NOSIGNAL turns a closed peer into EPIPE.
            let n = unsafe { libc::send(io.fd(), data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
            if n >= 0 {
                return Poll::Ready(Ok(n as usize));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return io.would_block(cx, true),
                _ => return Poll::Ready(Err(err)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // SAFETY: shutting down the write side of this state's open socket.
        unsafe { libc::shutdown(self.0.fd(), libc::SHUT_WR) };
        Poll::Ready(Ok(()))
    }
}

/// A connection's protocol task, polled by whoever runs a request on it.
pub type ConnFuture = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// While connecting: records what the socket waits for, for [`block_on`] to `poll(2)`.
#[derive(Default)]
struct Blocking {
    read: std::cell::Cell<bool>,
    write: std::cell::Cell<bool>,
}

impl Reactor for Blocking {
    fn watch(&self, _io: &Arc<IoState>, write: bool) -> io::Result<()> {
        if write { &self.write } else { &self.read }.set(true);
        Ok(())
    }
}

/// Runs `fut` (a connection handshake on `fd`) to the end on this thread, sleeping in
/// `poll(2)` while the socket is not ready; gives up at `deadline`.
fn block_on<F: Future>(fd: RawFd, deadline: std::time::Instant, fut: F) -> io::Result<F::Output> {
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut fut = pin!(fut);
    let blocking = Rc::new(Blocking::default());
    let reactor: Rc<dyn Reactor> = blocking.clone();
    loop {
        blocking.read.set(false);
        blocking.write.set(false);
        if let Poll::Ready(v) = with_reactor(&reactor, || fut.as_mut().poll(&mut cx)) {
            return Ok(v);
        }
        let mut events = 0;
        if blocking.read.get() {
            events |= libc::POLLIN;
        }
        if blocking.write.get() {
            events |= libc::POLLOUT;
        }
        if events == 0 {
            // The handshake waits on nothing this thread can see: it cannot finish.
            return Err(io::Error::other("the connection handshake stalled"));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out talking to the server"));
        }
        let mut pfd = libc::pollfd { fd, events, revents: 0 };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for an open descriptor.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Why a connection attempt failed, for the caller to word.
pub enum ConnectError {
    Io(io::Error),
    Pg(tokio_postgres::Error),
}

fn open(host: &Host, port: u16, timeout: Duration) -> io::Result<OwnedFd> {
    match host {
        Host::Tcp(name) => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, format!("no address found for {name}"));
            for addr in (name.as_str(), port).to_socket_addrs()? {
                match TcpStream::connect_timeout(&addr, timeout) {
                    Ok(s) => {
                        s.set_nodelay(true)?;
                        s.set_nonblocking(true)?;
                        // Keepalive as libpq and tokio-postgres have it: a server that
                        // vanished is noticed instead of waited on forever.
                        let on: libc::c_int = 1;
                        // SAFETY: a valid int option on this open socket.
                        unsafe {
                            libc::setsockopt(
                                s.as_raw_fd(),
                                libc::SOL_SOCKET,
                                libc::SO_KEEPALIVE,
                                (&on as *const libc::c_int).cast(),
                                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                            )
                        };
                        return Ok(s.into());
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
        Host::Unix(dir) => {
            let s = UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))?;
            s.set_nonblocking(true)?;
            Ok(s.into())
        }
    }
}

/// Connects and authenticates, blocking the calling thread (at most the connect timeout per
/// step). `tls` makes the TLS connector when the config asks for TLS.
pub fn connect<M>(config: &tokio_postgres::Config, tls: impl Fn() -> M) -> Result<(Client, ConnFuture), ConnectError>
where
    M: MakeTlsConnect<Sock>,
    M::Stream: Send + 'static,
    M::TlsConnect: Send,
    <M::TlsConnect as tokio_postgres::tls::TlsConnect<Sock>>::Future: Send,
{
    let timeout = config.get_connect_timeout().copied().unwrap_or(Duration::from_secs(10));
    let ports = config.get_ports();
    let mut last = ConnectError::Io(io::Error::new(io::ErrorKind::NotFound, "no host to connect to"));
    for (i, host) in config.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let socket = match open(host, port, timeout) {
            Ok(s) => s,
            Err(e) => {
                last = ConnectError::Io(e);
                continue;
            }
        };
        let fd = socket.as_raw_fd();
        let io =
            Arc::new(IoState { socket: Arc::new(socket), wakers: Default::default(), watches: Default::default() });
        let sock = Sock(io);
        let deadline = std::time::Instant::now() + timeout;
        let made: Result<(Client, ConnFuture), tokio_postgres::Error> = match (config.get_ssl_mode(), host) {
            (SslMode::Disable, _) | (_, Host::Unix(_)) => {
                match block_on(fd, deadline, config.connect_raw(sock, NoTls)) {
                    Ok(made) => made.map(|(c, conn)| (c, Box::pin(conn) as ConnFuture)),
                    Err(e) => {
                        last = ConnectError::Io(e);
                        continue;
                    }
                }
            }
            (_, Host::Tcp(name)) => {
                let mut maker = tls();
                match maker.make_tls_connect(name) {
                    Ok(t) => match block_on(fd, deadline, config.connect_raw(sock, t)) {
                        Ok(made) => made.map(|(c, conn)| (c, Box::pin(conn) as ConnFuture)),
                        Err(e) => {
                            last = ConnectError::Io(e);
                            continue;
                        }
                    },
                    Err(e) => {
                        last = ConnectError::Io(io::Error::other(e.into()));
                        continue;
                    }
                }
            }
        };
        match made {
            Ok(made) => return Ok(made),
            Err(e) => last = ConnectError::Pg(e),
        }
    }
    Err(last)
}
