//! PostgreSQL through tokio-postgres: URL parsing, TLS, the connection pool with its
//! per-connection statement cache, binding by the server's parameter types, and row decoding.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use futures_util::{pin_mut, TryStreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

use super::pgsock::{self, ConnFuture};
use super::{Observer, Request, Response};
use crate::compile::Columns;
use crate::errors::{Error, Kind, Result};
use crate::rows::RowSet;
use crate::value::{text_format, Value};

#[derive(Clone, Debug)]
pub struct PgConfig {
    pub config: tokio_postgres::Config,
    pub display: String,
    pub pool_size: usize,
    pub pool_timeout: Duration,
}

fn percent_decode(s: &str, what: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => return Err(Error::interface(format!("bad percent-encoding in the {what} of the URL"))),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| Error::interface(format!("the {what} of the URL is not UTF-8")))
}

impl PgConfig {
    /// Parses `postgresql://user:password@host:port/dbname?sslmode=...&application_name=...`.
    pub fn from_url(url: &str) -> Result<PgConfig> {
        let rest = url
            .strip_prefix("postgresql://")
            .or_else(|| url.strip_prefix("postgres://"))
            .ok_or_else(|| Error::interface(format!("not a PostgreSQL URL: {url:?}")))?;
        let (main, query) = match rest.split_once('?') {
            Some((m, q)) => (m, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match main.split_once('/') {
            Some((a, p)) => (a, p),
            None => (main, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut config = tokio_postgres::Config::new();
        let mut user = None;
        if let Some(ui) = userinfo {
            let (u, p) = match ui.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (ui, None),
            };
            if !u.is_empty() {
                user = Some(percent_decode(u, "user name")?);
            }
            if let Some(p) = p {
                config.password(percent_decode(p, "password")?);
            }
        }
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, rest) = h.split_once(']').ok_or_else(|| Error::interface("unclosed [ in the URL host"))?;
            (h.to_string(), rest.strip_prefix(':').map(|p| p.to_string()))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.to_string())),
                None => (hostport.to_string(), None),
            }
        };
        let host = if host.is_empty() { "localhost".to_string() } else { percent_decode(&host, "host")? };
        let port: u16 = match port {
            Some(p) if !p.is_empty() => {
                p.parse().map_err(|_| Error::interface(format!("bad port {p:?} in the URL")))?
            }
            _ => 5432,
        };
        config.host(&host).port(port);
        let user = user.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "postgres".to_string());
        config.user(&user);
        let dbname = if path.is_empty() { user.clone() } else { percent_decode(path, "database name")? };
        config.dbname(&dbname);
        config.ssl_mode(SslMode::Prefer);
        config.connect_timeout(Duration::from_secs(10));
        config.application_name("ormkit");
        if let Some(q) = query {
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let v = percent_decode(v, k)?;
                match k {
                    "sslmode" => {
                        config.ssl_mode(match v.as_str() {
                            "disable" => SslMode::Disable,
                            "prefer" | "allow" => SslMode::Prefer,
                            "require" => SslMode::Require,
                            _ => {
                                return Err(Error::interface(format!(
                                    "sslmode={v:?} is not supported; use disable, prefer or require"
                                )))
                            }
                        });
                    }
                    "application_name" => {
                        config.application_name(&v);
                    }
                    "connect_timeout" => {
                        let secs: f64 = v.parse().map_err(|_| {
                            Error::interface(format!("connect_timeout={v:?} is not a number of seconds"))
                        })?;
                        config.connect_timeout(Duration::from_secs_f64(secs.max(0.001)));
                    }
                    "options" => {
                        config.options(&v);
                    }
                    _ => {
                        return Err(Error::interface(format!(
                        "unknown URL parameter {k:?}; supported: sslmode, application_name, connect_timeout, options"
                    )))
                    }
                }
            }
        }
        Ok(PgConfig {
            config,
            display: format!("{host}:{port}/{dbname}"),
            pool_size: 10,
            pool_timeout: Duration::from_secs(30),
        })
    }
}

mod tls {
    //! `sslmode=require` means "encrypted", as in libpq: the server certificate is not
    //! checked against a CA, so any certificate is accepted.
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::sync::Arc;

    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    pub fn connector() -> tokio_postgres_rustls::MakeRustlsConnect {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth();
        tokio_postgres_rustls::MakeRustlsConnect::new(config)
    }
}

/// Past this many statements a connection's cache starts over.
const STATEMENT_CACHE: usize = 256;

pub struct PgConn {
    /// Dropped by hand, first: the protocol task says goodbye once its client is gone.
    client: std::mem::ManuallyDrop<Client>,
    /// The connection's protocol task, polled with each request (see [`drive`]); None once
    /// it ended (the server closed the connection).
    conn: Arc<Mutex<Option<ConnFuture>>>,
    /// A request is under way; a connection dropped in that state is never reused.
    busy: bool,
    statements: HashMap<Arc<str>, Statement>,
    /// Values each cached statement returned last time: the next result's vector starts at
    /// that size instead of growing (and copying) its way there.
    sizes: HashMap<Arc<str>, usize>,
    /// Inside BEGIN ... COMMIT (set by `Control` requests): batches then use savepoints.
    in_tx: bool,
    /// A statement failed inside the transaction, so PostgreSQL has aborted it: COMMIT
    /// would silently roll back, and is refused instead.
    tx_failed: bool,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, and never used again.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.client) };
        // Nobody polls the protocol task any more: one last poll lets it see the client
        // gone and send Terminate (through TLS if any) after what it still had to write,
        // so that the server does not log a client that vanished.
        if !self.busy {
            self.poll_unwatched();
        }
    }
}

impl PgConn {
    pub fn is_closed(&self) -> bool {
        self.client.is_closed() || self.conn.lock().unwrap().is_none()
    }

    /// Whether an idle connection can take a request: its protocol task reads what came
    /// in meanwhile (answers to messages sent without waiting; a server that ended the
    /// session has sent an error and closed).
    fn idle_ok(&self) -> bool {
        self.poll_unwatched();
        !self.is_closed()
    }

    /// Polls the protocol task once, outside any request, without watching its socket.
    fn poll_unwatched(&self) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        pgsock::unwatched(|| poll_task(&self.conn, &mut cx));
    }

    pub fn in_transaction(&self) -> bool {
        self.in_tx
    }

    pub fn cancel_token(&self) -> tokio_postgres::CancelToken {
        self.client.cancel_token()
    }

    async fn prepare(&mut self, sql: &Arc<str>) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let stmt = self.client.prepare(sql).await.map_err(Error::from)?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
            self.sizes.clear();
        }
        self.statements.insert(sql.clone(), stmt.clone());
        Ok(stmt)
    }
}

struct PoolInner {
    cfg: PgConfig,
    /// What a cancel request needs, shared without the pool (see [`PgPool::cancel`]).
    cancel: Arc<tokio_postgres::Config>,
    idle: Mutex<Vec<PgConn>>,
    permits: Arc<Semaphore>,
}

#[derive(Clone)]
pub struct PgPool {
    inner: Arc<PoolInner>,
}

/// A connection borrowed from the pool; it goes back on drop unless discarded.
pub struct Lease {
    conn: Option<PgConn>,
    _permit: OwnedSemaphorePermit,
    pool: Arc<PoolInner>,
}

impl Lease {
    pub fn conn(&mut self) -> &mut PgConn {
        self.conn.as_mut().expect("lease holds a connection until dropped")
    }

    /// Closes the connection instead of returning it (its protocol state is unknown).
    pub fn discard(&mut self) {
        self.conn = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            // A connection still inside a transaction (a session dropped mid-way) is closed,
            // never handed to the next caller.
            if !c.busy && !c.is_closed() && !c.in_tx && !self.pool.permits.is_closed() {
                self.pool.idle.lock().unwrap().push(c);
            }
        }
    }
}

impl PgPool {
    pub fn new(cfg: PgConfig) -> PgPool {
        let permits = Arc::new(Semaphore::new(cfg.pool_size.max(1)));
        let cancel = Arc::new(cfg.config.clone());
        PgPool { inner: Arc::new(PoolInner { cfg, cancel, idle: Mutex::new(Vec::new()), permits }) }
    }

    pub fn config(&self) -> &PgConfig {
        &self.inner.cfg
    }

    async fn connect(&self) -> Result<PgConn> {
        let cfg = self.inner.cfg.clone();
        // Connecting blocks (resolving, TLS, authentication), so it runs on a blocking
        // thread; the connection then lives on the threads that await its queries.
        let made = super::runtime()
            .spawn_blocking(move || {
                pgsock::connect(&cfg.config, tls::connector).map_err(|e| {
                    // Whatever the server said (no such database, bad password), the engine
                    // could not connect: an operational failure, as in PEP 249 drivers.
                    let mut err = match e {
                        pgsock::ConnectError::Pg(e) => Error::from(e),
                        pgsock::ConnectError::Io(e) => Error::operational(e.to_string()),
                    };
                    err.kind = Kind::Operational;
                    err.message = format!("cannot connect to PostgreSQL at {}: {}", cfg.display, err.message);
                    err
                })
            })
            .await
            .map_err(|e| Error::operational(format!("connecting to PostgreSQL failed: {e}")))?;
        let (client, conn) = made?;
        Ok(PgConn {
            client: std::mem::ManuallyDrop::new(client),
            conn: Arc::new(Mutex::new(Some(conn))),
            busy: false,
            statements: HashMap::new(),
            sizes: HashMap::new(),
            in_tx: false,
            tx_failed: false,
        })
    }

    /// Waits (at most the pool timeout) for a connection; a broken idle one is replaced.
    pub async fn acquire(&self) -> Result<Lease> {
        let timeout = self.inner.cfg.pool_timeout;
        let disposed = || Error::interface("the engine is disposed; create a new engine");
        let permit = match self.inner.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return Err(disposed()),
            Err(TryAcquireError::NoPermits) => {
                // The timer runs on the runtime's thread: waiting for a free connection is
                // the slow path, and the awaiting thread may have no timer of its own.
                let (fire, fired) = tokio::sync::oneshot::channel::<()>();
                let timer = super::runtime().spawn(async move {
                    tokio::time::sleep(timeout).await;
                    let _ = fire.send(());
                });
                let waited =
                    futures_util::future::select(Box::pin(self.inner.permits.clone().acquire_owned()), fired).await;
                timer.abort();
                match waited {
                    futures_util::future::Either::Left((Ok(p), _)) => p,
                    futures_util::future::Either::Left((Err(_), _)) => return Err(disposed()),
                    futures_util::future::Either::Right(_) => {
                        return Err(Error::new(
                            Kind::PoolTimeout,
                            format!(
                                "no PostgreSQL connection became free within {:.1}s (pool_size={}); raise pool_size or pool_timeout, or hold connections for less time",
                                timeout.as_secs_f64(),
                                self.inner.cfg.pool_size
                            ),
                        ))
                    }
                }
            }
        };
        loop {
            let idle = self.inner.idle.lock().unwrap().pop();
            match idle {
                Some(c) if !c.idle_ok() => continue,
                Some(c) => return Ok(Lease { conn: Some(c), _permit: permit, pool: self.inner.clone() }),
                None => break,
            }
        }
        let conn = self.connect().await?;
        Ok(Lease { conn: Some(conn), _permit: permit, pool: self.inner.clone() })
    }

    pub fn close(&self) {
        self.inner.permits.close();
        // Dropped outside the lock: closing a connection unwatches its socket (Python).
        let idle = std::mem::take(&mut *self.inner.idle.lock().unwrap());
        drop(idle);
    }

    pub fn cancel_config(&self) -> Arc<tokio_postgres::Config> {
        self.inner.cancel.clone()
    }

    /// Sends a cancel request for whatever `token`'s connection is running (on the
    /// runtime's thread: a new connection, opened and closed there). Takes the config
    /// alone, so that a cancel in flight never holds the pool and its connections.
    pub async fn cancel(config: &tokio_postgres::Config, token: tokio_postgres::CancelToken) {
        use tokio_postgres::config::Host;
        use tokio_postgres::tls::MakeTlsConnect;
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let timeout = config.get_connect_timeout().copied().unwrap_or(Duration::from_secs(10));
        let sent = async {
            match config.get_hosts().first() {
                Some(Host::Tcp(name)) => {
                    let stream = tokio::net::TcpStream::connect((name.as_str(), port)).await.ok()?;
                    if config.get_ssl_mode() == SslMode::Disable {
                        token.cancel_query_raw(stream, NoTls).await.ok()
                    } else {
                        let tls =
                            MakeTlsConnect::<tokio::net::TcpStream>::make_tls_connect(&mut tls::connector(), name)
                                .ok()?;
                        token.cancel_query_raw(stream, tls).await.ok()
                    }
                }
                Some(Host::Unix(dir)) => {
                    let stream = tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).await.ok()?;
                    token.cancel_query_raw(stream, NoTls).await.ok()
                }
                None => None,
            }
        };
        let _ = tokio::time::timeout(timeout, sent).await;
    }
}

type BoxError = Box<dyn StdError + Sync + Send>;

fn mismatch(v: &Value, ty: &Type) -> BoxError {
    let what = match v {
        Value::Null => "None",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Text(_) => "str",
        Value::Bytes(_) => "bytes",
        Value::Json(_) => "JSON",
        Value::Date(_) => "date",
        Value::Time(_) => "time",
        Value::DateTime(_) => "datetime",
        Value::DateTimeTz(_) => "aware datetime",
        Value::Decimal(_) => "Decimal",
        Value::List(_) => "list",
    };
    format!("cannot send a {what} value to a parameter of type {ty}").into()
}

/// Binds a value in the type the server expects for its parameter, so an int goes to an
/// INTEGER column as int4 and to a BIGINT column as int8.
#[derive(Debug)]
struct Param<'a>(&'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        let v = self.0;
        match (v, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Bool(b), &Type::BOOL) => b.to_sql(ty, out),
            (Value::Bool(b), &Type::INT2 | &Type::INT4 | &Type::INT8) => Param(&Value::Int(*b as i64)).to_sql(ty, out),
            (Value::Int(i), &Type::INT2) => {
                i16::try_from(*i).map_err(|_| format!("{i} is out of range for smallint"))?.to_sql(ty, out)
            }
            (Value::Int(i), &Type::INT4) => i32::try_from(*i)
                .map_err(|_| format!("{i} is out of range for integer (declare the column BigInteger)"))?
                .to_sql(ty, out),
            (Value::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (Value::Int(i), &Type::OID) => {
                u32::try_from(*i).map_err(|_| format!("{i} is out of range for oid"))?.to_sql(ty, out)
            }
            (Value::Int(i), &Type::FLOAT4) => (*i as f32).to_sql(ty, out),
            (Value::Int(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (Value::Int(i), &Type::NUMERIC) => numeric::encode(&i.to_string(), out),
            (Value::Float(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
            (Value::Float(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (Value::Float(f), &Type::NUMERIC) => numeric::encode(&format!("{f}"), out),
            (Value::Decimal(d), &Type::NUMERIC) => numeric::encode(d, out),
            (Value::Decimal(d), &Type::FLOAT8) => d.parse::<f64>()?.to_sql(ty, out),
            (Value::Text(s), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME | &Type::UNKNOWN) => {
                s.as_str().to_sql(&Type::TEXT, out)
            }
            (Value::Text(s), &Type::CHAR) => s.as_str().to_sql(&Type::TEXT, out),
            (Value::Text(s), &Type::JSON) => {
                out.put_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            (Value::Text(s), &Type::JSONB) => {
                out.put_u8(1);
                out.put_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            (Value::Text(s), &Type::NUMERIC) => numeric::encode(s, out),
            (Value::Text(s), &Type::DATE) => text_format::parse_date(s).ok_or_else(|| mismatch(v, ty))?.to_sql(ty, out),
            (Value::Text(s), &Type::TIME) => text_format::parse_time(s).ok_or_else(|| mismatch(v, ty))?.to_sql(ty, out),
            (Value::Text(s), &Type::TIMESTAMP) => {
                text_format::parse_datetime(s).ok_or_else(|| mismatch(v, ty))?.to_sql(ty, out)
            }
            (Value::Text(s), &Type::TIMESTAMPTZ) => {
                text_format::parse_datetime_tz(s).ok_or_else(|| mismatch(v, ty))?.with_timezone(&Utc).to_sql(ty, out)
            }
            (Value::Bytes(b), &Type::BYTEA) => b.as_slice().to_sql(ty, out),
            (Value::Json(j), &Type::JSONB) => {
                out.put_u8(1);
                serde_json::to_writer(out.writer(), j)?;
                Ok(IsNull::No)
            }
            (Value::Json(j), &Type::JSON | &Type::TEXT | &Type::VARCHAR | &Type::UNKNOWN) => {
                serde_json::to_writer(out.writer(), j)?;
                Ok(IsNull::No)
            }
            (Value::Date(d), &Type::DATE) => d.to_sql(ty, out),
            (Value::Time(t), &Type::TIME) => t.to_sql(ty, out),
            (Value::DateTime(t), &Type::TIMESTAMP) => t.to_sql(ty, out),
            // A naive datetime sent to an aware column is taken as UTC, as PostgreSQL does
            // with its default TimeZone=UTC.
            (Value::DateTime(t), &Type::TIMESTAMPTZ) => t.and_utc().to_sql(ty, out),
            (Value::DateTimeTz(t), &Type::TIMESTAMPTZ) => t.with_timezone(&Utc).to_sql(ty, out),
            (Value::DateTimeTz(t), &Type::TIMESTAMP) => t.naive_utc().to_sql(ty, out),
            (Value::List(items), _) if matches!(ty.kind(), tokio_postgres::types::Kind::Array(_)) => {
                items.iter().map(Param).collect::<Vec<_>>().to_sql(ty, out)
            }
            (Value::Text(s), _) if matches!(ty.kind(), tokio_postgres::types::Kind::Enum(_)) => {
                out.put_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            _ => Err(mismatch(v, ty)),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Decodes any supported column type into a [`Value`].
struct Cell(Value);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        let v = match *ty {
            Type::VOID => Value::Null,
            Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)? as i64),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)? as i64),
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::OID => Value::Int(u32::from_sql(ty, raw)? as i64),
            Type::FLOAT4 => Value::Float(f32::from_sql(ty, raw)? as f64),
            Type::FLOAT8 => Value::Float(f64::from_sql(ty, raw)?),
            Type::NUMERIC => Value::Decimal(numeric::decode(raw)?),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::CHAR => {
                Value::Text(crate::value::text_of(raw))
            }
            Type::BYTEA => Value::Bytes(raw.to_vec()),
            Type::TIMESTAMP => Value::DateTime(NaiveDateTime::from_sql(ty, raw)?),
            Type::TIMESTAMPTZ => Value::DateTimeTz(DateTime::<Utc>::from_sql(ty, raw)?.fixed_offset()),
            Type::DATE => Value::Date(NaiveDate::from_sql(ty, raw)?),
            Type::TIME => Value::Time(NaiveTime::from_sql(ty, raw)?),
            Type::JSON | Type::JSONB => Value::Json(serde_json::Value::from_sql(ty, raw)?),
            Type::UUID if raw.len() == 16 => {
                let h: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                Value::Text(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
            }
            _ if matches!(ty.kind(), tokio_postgres::types::Kind::Enum(_)) => Value::Text(crate::value::text_of(raw)),
            _ => {
                return Err(format!("OrmKit cannot read columns of type {ty} yet; cast it in SQL (e.g. ::text)").into())
            }
        };
        Ok(Cell(v))
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, BoxError> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

mod numeric {
    //! NUMERIC in PostgreSQL's binary form (base-10000 digits) to and from decimal text.
    use super::BoxError;
    use bytes::{BufMut, BytesMut};
    use tokio_postgres::types::IsNull;

    pub fn decode(raw: &[u8]) -> Result<String, BoxError> {
        if raw.len() < 8 {
            return Err("truncated numeric".into());
        }
        let rd = |i: usize| u16::from_be_bytes([raw[i], raw[i + 1]]);
        let ndigits = rd(0) as usize;
        let weight = rd(2) as i16 as i32;
        let sign = rd(4);
        let dscale = rd(6) as usize;
        if sign == 0xC000 {
            return Ok("NaN".into());
        }
        if raw.len() < 8 + 2 * ndigits {
            return Err("truncated numeric".into());
        }
        let digit = |i: i32| -> u16 {
            if i >= 0 && (i as usize) < ndigits {
                rd(8 + 2 * i as usize)
            } else {
                0
            }
        };
        let mut s = String::new();
        if sign == 0x4000 {
            s.push('-');
        }
        if weight < 0 {
            s.push('0');
        } else {
            for i in 0..=weight {
                if i == 0 {
                    s.push_str(&digit(i).to_string());
                } else {
                    s.push_str(&format!("{:04}", digit(i)));
                }
            }
        }
        if dscale > 0 {
            let mut frac = String::new();
            let mut i = weight + 1;
            while frac.len() < dscale {
                frac.push_str(&format!("{:04}", digit(i)));
                i += 1;
            }
            frac.truncate(dscale);
            s.push('.');
            s.push_str(&frac);
        }
        Ok(s)
    }

    pub fn encode(text: &str, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let t = text.trim();
        let bad = || -> BoxError { format!("{text:?} is not a decimal number").into() };
        if t.eq_ignore_ascii_case("nan") {
            out.put_u16(0);
            out.put_i16(0);
            out.put_u16(0xC000);
            out.put_u16(0);
            return Ok(IsNull::No);
        }
        let (neg, t) = match t.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        // Exponent notation (from floats such as 1e-07) is expanded first.
        let (mantissa, exp) = match t.split_once(['e', 'E']) {
            Some((m, e)) => (m, e.parse::<i32>().map_err(|_| bad())?),
            None => (t, 0),
        };
        let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        if !int_part.chars().chain(frac_part.chars()).all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let mut digits: String = format!("{int_part}{frac_part}");
        let mut point = int_part.len() as i32 + exp;
        if point < 0 {
            digits = "0".repeat((-point) as usize) + &digits;
            point = 0;
        }
        while (digits.len() as i32) < point {
            digits.push('0');
        }
        let (ip, fp) = digits.split_at(point as usize);
        let dscale = fp.len();
        let ip = ip.trim_start_matches('0');
        let pad_left = (4 - ip.len() % 4) % 4;
        let ip = format!("{}{}", "0".repeat(pad_left), ip);
        let pad_right = (4 - fp.len() % 4) % 4;
        let fp = format!("{}{}", fp, "0".repeat(pad_right));
        let mut groups: Vec<i16> = Vec::new();
        for chunk in ip.as_bytes().chunks(4).chain(fp.as_bytes().chunks(4)) {
            groups.push(std::str::from_utf8(chunk).unwrap().parse().unwrap());
        }
        let mut weight = (ip.len() / 4) as i32 - 1;
        while groups.first() == Some(&0) {
            groups.remove(0);
            weight -= 1;
        }
        while groups.last() == Some(&0) {
            groups.pop();
        }
        if groups.is_empty() {
            weight = 0;
        }
        out.put_u16(groups.len() as u16);
        out.put_i16(weight as i16);
        out.put_u16(if neg && !groups.is_empty() { 0x4000 } else { 0 });
        out.put_u16(dscale as u16);
        for g in groups {
            out.put_i16(g);
        }
        Ok(IsNull::No)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn round(s: &str) -> String {
            let mut b = BytesMut::new();
            encode(s, &mut b).unwrap();
            decode(&b).unwrap()
        }

        #[test]
        fn numeric_round_trips() {
            for (i, o) in [
                ("0", "0"),
                ("1", "1"),
                ("-12345.678", "-12345.678"),
                ("10000", "10000"),
                ("0.0001", "0.0001"),
                ("123456789012345678901234567890.5", "123456789012345678901234567890.5"),
                ("1e-07", "0.0000001"),
                ("2.50", "2.50"),
            ] {
                assert_eq!(round(i), o, "{i}");
            }
            assert!(encode("abc", &mut BytesMut::new()).is_err());
        }
    }
}

fn columns_of(stmt: &Statement, known: &Option<Columns>) -> Columns {
    match known {
        Some(c) if c.names.len() == stmt.columns().len() => c.clone(),
        _ => {
            let names: Vec<String> = stmt.columns().iter().map(|c| c.name().to_string()).collect();
            let types = vec![None; names.len()];
            Columns { names: names.into(), types: types.into() }
        }
    }
}

fn check_arity(stmt: &Statement, params: &[Value]) -> Result<()> {
    if stmt.params().len() != params.len() {
        return Err(Error::programming(format!(
            "the statement has {} placeholder(s) but {} parameter(s) were given",
            stmt.params().len(),
            params.len()
        )));
    }
    Ok(())
}

async fn query(
    conn: &mut PgConn,
    sql: &Arc<str>,
    params: &[Value],
    known: &Option<Columns>,
    obs: &Observer,
) -> Result<RowSet> {
    query_into(conn, sql, params, known, obs, None).await
}

/// `query`, sending the rows to `chunks` as they are read when it is given (the result
/// then holds none).
async fn query_into(
    conn: &mut PgConn,
    sql: &Arc<str>,
    params: &[Value],
    known: &Option<Columns>,
    obs: &Observer,
    mut chunks: Option<&mut super::Chunks<'_>>,
) -> Result<RowSet> {
    let started = std::time::Instant::now();
    let stmt = conn.prepare(sql).await?;
    check_arity(&stmt, params)?;
    let columns = columns_of(&stmt, known);
    let width = columns.names.len();
    let stream = conn.client.query_raw(&stmt, params.iter().map(Param)).await?;
    pin_mut!(stream);
    let hint = conn.sizes.get(sql).copied().unwrap_or(0).min(super::SIZE_HINT_CAP);
    let mut values = Vec::with_capacity(chunks.as_ref().map_or(hint, |c| hint.min(c.capacity())));
    let mut count = 0usize;
    while let Some(row) = stream.try_next().await? {
        for i in 0..width {
            values.push(row.try_get::<_, Cell>(i)?.0);
        }
        count += 1;
        if let Some(c) = chunks.as_deref_mut() {
            if c.full(&values) {
                c.send(&columns, &mut values);
            }
        }
    }
    if let Some(c) = chunks {
        c.finish(&columns, &mut values);
    }
    conn.sizes.insert(sql.clone(), count * width);
    super::fit(&mut values);
    let affected = stream.rows_affected().unwrap_or(0);
    obs.record(sql, started, count as u64);
    Ok(RowSet { columns, values, affected })
}

/// Serves a query in batches from a portal inside a transaction, one batch per request,
/// until the requests stop. Rolls the transaction back at the end.
pub async fn stream<A, F>(
    conn: &mut PgConn,
    sql: &Arc<str>,
    params: &[Value],
    columns: &Columns,
    batch: usize,
    asks: &mut tokio::sync::mpsc::UnboundedReceiver<A>,
    deliver: F,
) -> Result<()>
where
    F: FnMut(A, Result<RowSet>),
{
    drive(conn, async |c| stream_rows(c, sql, params, columns, batch, asks, deliver).await).await
}

async fn stream_rows<A, F>(
    conn: &mut PgConn,
    sql: &Arc<str>,
    params: &[Value],
    columns: &Columns,
    batch: usize,
    asks: &mut tokio::sync::mpsc::UnboundedReceiver<A>,
    mut deliver: F,
) -> Result<()>
where
    F: FnMut(A, Result<RowSet>),
{
    let stmt = match conn.prepare(sql).await.and_then(|s| check_arity(&s, params).map(|_| s)) {
        Ok(s) => s,
        Err(e) => {
            while let Some(a) = asks.recv().await {
                deliver(a, Err(e.clone()));
            }
            return Ok(());
        }
    };
    let txn = conn.client.transaction().await?;
    let bound: Vec<Param<'_>> = params.iter().map(Param).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let portal = match txn.bind(&stmt, &refs).await {
        Ok(p) => p,
        Err(e) => {
            let e = Error::from(e);
            while let Some(a) = asks.recv().await {
                deliver(a, Err(e.clone()));
            }
            return Ok(());
        }
    };
    let width = columns.names.len();
    let mut finished = false;
    while let Some(a) = asks.recv().await {
        let mut out = RowSet { columns: columns.clone(), ..Default::default() };
        if !finished {
            match txn.query_portal(&portal, batch as i32).await {
                Ok(rows) => {
                    finished = rows.len() < batch;
                    for row in rows {
                        for i in 0..width {
                            match row.try_get::<_, Cell>(i) {
                                Ok(c) => out.values.push(c.0),
                                Err(e) => {
                                    deliver(a, Err(e.into()));
                                    return Ok(());
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    deliver(a, Err(e.into()));
                    return Ok(());
                }
            }
        }
        deliver(a, Ok(out));
    }
    // Rolling back closes the portal. Awaited rather than left to the transaction's drop,
    // which only queues it.
    let _ = txn.rollback().await;
    Ok(())
}

/// Rows per pipelined burst in a batch: enough to fill the socket, bounded in memory.
const PIPELINE: usize = 1000;

async fn batch(
    conn: &mut PgConn,
    groups: &[(Arc<str>, Vec<Vec<Value>>)],
    known: &Option<Columns>,
    obs: &Observer,
) -> Result<RowSet> {
    let mut out = RowSet::default();
    for (sql, rows) in groups {
        let started = std::time::Instant::now();
        let stmt = conn.prepare(sql).await?;
        out.columns = columns_of(&stmt, known);
        let width = out.columns.names.len();
        for chunk in rows.chunks(PIPELINE) {
            for r in chunk {
                check_arity(&stmt, r)?;
            }
            let client = &conn.client;
            let stmt = &stmt;
            // Polled together, these queries go out pipelined in one stream of messages.
            let results = futures_util::future::try_join_all(chunk.iter().map(|r| async move {
                let params: Vec<Param<'_>> = r.iter().map(Param).collect();
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                client.query(stmt, &refs).await
            }))
            .await?;
            for rows in results {
                out.affected += 1;
                for row in rows {
                    for i in 0..width {
                        out.values.push(row.try_get::<_, Cell>(i)?.0);
                    }
                }
            }
        }
        obs.record(sql, started, rows.len() as u64);
    }
    Ok(out)
}

/// Runs `f` in a transaction (or a savepoint inside one).
async fn transaction<'c, T, F, Fut>(conn: &'c mut PgConn, in_tx: bool, f: F) -> Result<T>
where
    F: FnOnce(&'c mut PgConn) -> Fut,
    Fut: std::future::Future<Output = (Result<T>, &'c mut PgConn)>,
{
    let (begin, commit, undo) = if in_tx {
        (
            "SAVEPOINT ormkit_batch",
            "RELEASE SAVEPOINT ormkit_batch",
            "ROLLBACK TO SAVEPOINT ormkit_batch; RELEASE SAVEPOINT ormkit_batch",
        )
    } else {
        ("BEGIN", "COMMIT", "ROLLBACK")
    };
    conn.client.batch_execute(begin).await?;
    let (result, conn) = f(conn).await;
    match result {
        Ok(rows) => {
            conn.client.batch_execute(commit).await?;
            Ok(rows)
        }
        Err(e) => {
            let _ = conn.client.batch_execute(undo).await;
            Err(e)
        }
    }
}

/// Polls a connection's protocol task; true when it ended (the server closed the
/// connection), and then drops it, which fails whatever request still waits on it.
fn poll_task(task: &Mutex<Option<ConnFuture>>, cx: &mut std::task::Context<'_>) -> bool {
    let mut guard = task.lock().unwrap();
    if !guard.as_mut().is_some_and(|c| c.as_mut().poll(cx).is_ready()) {
        return false;
    }
    let ended = guard.take();
    drop(guard);
    drop(ended);
    true
}

/// Runs `request` on `conn` with the connection's protocol task polled beside it,
/// which writes what the request queued and reads what the server answers, on this thread.
/// The socket stays watched afterwards: a connection is mostly reused on the same loop, and
/// watching it anew would cost two selector calls per statement; a readiness nobody waits
/// for ends the watch (see the loop's reactor).
async fn drive<T>(conn: &mut PgConn, request: impl AsyncFnOnce(&mut PgConn) -> T) -> T {
    use std::future::Future;
    let task = conn.conn.clone();
    conn.busy = true;
    let out = {
        let mut fut = std::pin::pin!(request(conn));
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(v) = fut.as_mut().poll(cx) {
                // Messages the request queued without waiting for an answer (closing a
                // dropped statement, say) go out now rather than with the next request.
                poll_task(&task, cx);
                return std::task::Poll::Ready(v);
            }
            if poll_task(&task, cx) {
                return fut.as_mut().poll(cx);
            }
            std::task::Poll::Pending
        })
        .await
    };
    conn.busy = false;
    out
}

pub async fn run(conn: &mut PgConn, req: Request, obs: &Observer) -> Result<Response> {
    drive(conn, async |c| run_checked(c, req, obs).await).await
}

async fn run_checked(conn: &mut PgConn, req: Request, obs: &Observer) -> Result<Response> {
    // Batches, writes and scripts run under a savepoint inside a transaction and undo
    // themselves on failure; a plain statement that fails aborts the transaction.
    let unprotected = matches!(req, Request::Query { .. } | Request::Load { .. });
    let result = run_any(conn, req, obs).await;
    if result.is_err() && conn.in_tx && unprotected {
        conn.tx_failed = true;
    }
    result
}

async fn run_any(conn: &mut PgConn, req: Request, obs: &Observer) -> Result<Response> {
    if let Request::Writes { ops } = req {
        let in_tx = conn.in_tx;
        return transaction(conn, in_tx, |c| async move {
            let mut done: Vec<RowSet> = Vec::with_capacity(ops.len());
            for op in &ops {
                let params = match super::write_params(op, &done) {
                    Ok(p) => p,
                    Err(e) => return (Err(e), c),
                };
                match query(c, &op.sql, &params, &op.columns, obs).await {
                    Ok(rows) => done.push(rows),
                    Err(e) => return (Err(e), c),
                }
            }
            (Ok(Response::Units(done)), c)
        })
        .await;
    }
    if let Request::Load { units, progress } = req {
        let mut keys = super::SourceKeys::new(&units);
        let mut done: Vec<RowSet> = Vec::with_capacity(units.len());
        for (i, unit) in units.into_iter().enumerate() {
            let columns = Some(unit.columns.clone());
            let rows = match (unit.given, keys.params(&unit.source, &unit.params)) {
                (Some(given), _) => given,
                (None, Some(mut params)) => {
                    if unit.source.is_some() {
                        let stmt = conn.prepare(&unit.sql).await?;
                        fit_keys(&stmt, &mut params);
                    }
                    let width = unit.columns.names.len();
                    let mut chunks = progress.as_ref().map(|p| super::Chunks::new(p, &mut keys, i, width));
                    query_into(conn, &unit.sql, &params, &columns, obs, chunks.as_mut()).await?
                }
                (None, None) => RowSet { columns: unit.columns.clone(), ..Default::default() },
            };
            keys.gather(i, &rows);
            done.push(rows);
        }
        return Ok(Response::Units(done));
    }
    run_one(conn, req, obs).await.map(Response::Rows)
}

/// Leaves out of a keyed unit's key list the integers too large for the column they are
/// matched against (`= ANY($1)`): such a key equals none of its values, and would otherwise
/// fail the whole list (parents with big keys, children whose key column is narrower).
fn fit_keys(stmt: &Statement, params: &mut [Value]) {
    let (Some(ty), Some(Value::List(keys))) = (stmt.params().first(), params.first_mut()) else { return };
    let tokio_postgres::types::Kind::Array(elem) = ty.kind() else { return };
    let fits: fn(i64) -> bool = match *elem {
        Type::INT2 => |i| i16::try_from(i).is_ok(),
        Type::INT4 => |i| i32::try_from(i).is_ok(),
        _ => return,
    };
    keys.retain(|k| !matches!(k, Value::Int(i) if !fits(*i)));
}

async fn run_one(conn: &mut PgConn, req: Request, obs: &Observer) -> Result<RowSet> {
    match req {
        Request::Query { sql, params, columns } => query(conn, &sql, &params, &columns, obs).await,
        Request::Batch { groups, columns, .. } => {
            let in_tx = conn.in_tx;
            transaction(conn, in_tx, |c| async move {
                let r = batch(c, &groups, &columns, obs).await;
                (r, c)
            })
            .await
        }
        Request::Script { statements } => {
            let in_tx = conn.in_tx;
            transaction(conn, in_tx, |c| async move {
                for s in &statements {
                    let started = std::time::Instant::now();
                    if let Err(e) = c.client.batch_execute(s).await {
                        return (Err(e.into()), c);
                    }
                    obs.record(&Arc::from(s.as_str()), started, 0);
                }
                (Ok(RowSet::default()), c)
            })
            .await
        }
        Request::Control { sql } => {
            let started = std::time::Instant::now();
            let upper = sql.trim().to_ascii_uppercase();
            let head = upper.split_whitespace().next().unwrap_or_default().to_string();
            if (head == "COMMIT" || head == "END") && conn.tx_failed {
                let _ = conn.client.batch_execute("ROLLBACK").await;
                conn.in_tx = false;
                conn.tx_failed = false;
                return Err(Error::operational(
                    "the transaction was aborted by an earlier error and has been rolled back; nothing was committed",
                ));
            }
            let result = conn.client.batch_execute(&sql).await;
            match head.as_str() {
                "BEGIN" | "START" if result.is_ok() => {
                    conn.in_tx = true;
                    conn.tx_failed = false;
                }
                "COMMIT" | "END" => conn.in_tx = false,
                "ROLLBACK" if upper.contains(" TO ") => conn.tx_failed = result.is_err(),
                "ROLLBACK" => {
                    conn.in_tx = false;
                    conn.tx_failed = false;
                }
                _ => {}
            }
            result?;
            obs.record(&Arc::from(sql.as_str()), started, 0);
            Ok(RowSet::default())
        }
        Request::Load { .. } | Request::Writes { .. } => unreachable!("handled by run"),
    }
}

/// Rewrites `?` placeholders to `$1, $2, ...` outside string literals, quoted identifiers,
/// dollar-quoted strings and comments. SQL that already uses `$n` is left alone (so the
/// JSONB `?` operators stay usable there).
pub fn rewrite_qmarks(sql: &str) -> String {
    let b = sql.as_bytes();
    let has_dollar_n = b.windows(2).any(|w| w[0] == b'$' && w[1].is_ascii_digit());
    if has_dollar_n || !sql.contains('?') {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' => {
                let end = b[i + 1..].iter().position(|&x| x == c).map(|p| i + 1 + p).unwrap_or(b.len() - 1);
                out.push_str(&sql[i..=end]);
                i = end + 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let end = b[i..].iter().position(|&x| x == b'\n').map(|p| i + p).unwrap_or(b.len());
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = sql[i + 2..].find("*/").map(|p| i + 2 + p + 2).unwrap_or(b.len());
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'$' => {
                // A dollar-quote tag: $$ or $tag$ ... $tag$.
                let tag_end =
                    b[i + 1..].iter().position(|&x| !(x.is_ascii_alphanumeric() || x == b'_')).map(|p| i + 1 + p);
                match tag_end {
                    Some(te) if b[te] == b'$' => {
                        let tag = &sql[i..=te];
                        let end = sql[te + 1..].find(tag).map(|p| te + 1 + p + tag.len()).unwrap_or(b.len());
                        out.push_str(&sql[i..end]);
                        i = end;
                    }
                    _ => {
                        out.push('$');
                        i += 1;
                    }
                }
            }
            b'?' => {
                n += 1;
                out.push_str(&format!("${n}"));
                i += 1;
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap();
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            let kind = match &code[..2] {
                "23" => Kind::Integrity,
                "42" | "26" | "34" | "3D" | "3F" | "25" => Kind::Programming,
                "22" => Kind::Data,
                "08" | "53" | "54" | "55" | "57" | "58" | "40" | "HV" | "F0" => Kind::Operational,
                "0A" => Kind::NotSupported,
                "XX" => Kind::Internal,
                _ => Kind::Database,
            };
            let mut msg = db.message().to_string();
            if let Some(d) = db.detail() {
                msg.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                msg.push_str(&format!("; hint: {h}"));
            }
            return Error::new(kind, msg).with_code(code);
        }
        if e.is_closed() {
            return Error::operational("the PostgreSQL connection was closed");
        }
        let mut msg = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        // Errors raised while binding (our `Param`) are about the values.
        let kind = if msg.starts_with("error serializing parameter") { Kind::Data } else { Kind::Operational };
        Error::new(kind, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c =
            PgConfig::from_url("postgresql://u%40x:p%3Aw@db.example:6543/my%20db?sslmode=require&application_name=app")
                .unwrap();
        assert_eq!(c.config.get_user(), Some("u@x"));
        assert_eq!(c.config.get_password(), Some(&b"p:w"[..]));
        assert_eq!(c.config.get_dbname(), Some("my db"));
        assert_eq!(c.config.get_ports(), &[6543]);
        assert_eq!(c.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(c.config.get_application_name(), Some("app"));
        let c = PgConfig::from_url("postgres://localhost/mydb").unwrap();
        assert_eq!(c.config.get_ports(), &[5432]);
        assert!(PgConfig::from_url("postgresql://h/db?sslmode=verify-full").is_err());
        assert!(PgConfig::from_url("postgresql://h/db?bogus=1").is_err());
    }

    #[test]
    fn qmark_rewrite() {
        assert_eq!(rewrite_qmarks("SELECT * FROM t WHERE a > ? AND b = ?"), "SELECT * FROM t WHERE a > $1 AND b = $2");
        assert_eq!(rewrite_qmarks("SELECT '?', \"?\", ? -- ?\n, ?"), "SELECT '?', \"?\", $1 -- ?\n, $2");
        assert_eq!(rewrite_qmarks("SELECT $$ ? $$, ?"), "SELECT $$ ? $$, $1");
        assert_eq!(rewrite_qmarks("SELECT d ? 'k' FROM t WHERE id = $1"), "SELECT d ? 'k' FROM t WHERE id = $1");
    }
}
