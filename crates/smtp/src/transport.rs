//! The transport: up to `pool_size` connections to the SMTP server, each a
//! lettre [`AsyncSmtpConnection`] over a TCP socket of our own with Nagle's
//! algorithm off.
//!
//! Why not lettre's own pooled transport: it leaves Nagle's algorithm on,
//! and writes a mail's closing `.` apart from its body. That second, tiny
//! write then waits for the server to acknowledge the body, which the
//! server's TCP stack delays (40 ms on Linux) because it has nothing to say
//! before the `.` arrives: every mail took at least 40 ms on each
//! connection, 25 a second per connection whatever the server's speed.
//! Its pool also opens a connection past `max_size` when all are busy; this
//! one never has more than `pool_size` open. lettre sets `TCP_NODELAY`
//! itself from its next release on (its pull request 1159): then this
//! module can give way to its pooled transport again.
//!
//! Implicit TLS goes through lettre's `AsyncNetworkStream`, public but
//! deprecated in 0.11 ("not meant to be made public"): the one way to put
//! lettre's TLS, with its certificate checks, on a socket of our own.
#![allow(deprecated)]

use std::sync::Mutex;
use std::time::Duration;

use lettre::Message;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncNetworkStream, AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt as _};

/// Why a mail could not be handed to the server.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The server could not be reached.
    #[error("connecting to the SMTP server: {0}")]
    Connect(#[source] std::io::Error),
    /// The server took longer than the timeout to answer.
    #[error("the SMTP server did not answer within {0:?}")]
    Timeout(Duration),
    /// The SMTP exchange failed, or the server refused.
    #[error(transparent)]
    Smtp(#[from] lettre::transport::smtp::Error),
}

/// How the connection is protected.
#[derive(Clone)]
pub(crate) enum Protection {
    /// Plain SMTP (a relay on this machine only: checked by `transport`).
    Plain,
    /// `STARTTLS`, required.
    StartTls(TlsParameters),
    /// TLS from the first byte.
    Implicit(TlsParameters),
}

/// Where and how to connect.
pub(crate) struct Server {
    pub host: String,
    pub port: u16,
    pub protection: Protection,
    pub credentials: Option<Credentials>,
    pub timeout: Duration,
}

/// Sends mail over up to `pool_size` connections.
pub struct Transport {
    server: Server,
    hello: ClientId,
    /// Connections between mails.
    idle: Mutex<Vec<AsyncSmtpConnection>>,
    /// One per connection: a mail waits for one.
    permits: Semaphore,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the credentials.
        f.debug_struct("Transport").field("host", &self.server.host).field("port", &self.server.port).finish()
    }
}

impl Transport {
    pub(crate) fn new(server: Server, pool_size: usize) -> Self {
        Self { server, hello: ClientId::default(), idle: Mutex::new(Vec::new()), permits: Semaphore::new(pool_size) }
    }

    /// Sends `message` to its envelope's recipients; `Ok` once the server
    /// took it.
    pub async fn send(&self, message: &Message) -> Result<(), SendError> {
        let _permit = self.permits.acquire().await.expect("the transport's semaphore is never closed");
        let timeout = self.server.timeout;
        let mut connection = self.connection().await?;
        let sent = tokio::time::timeout(timeout, connection.send(message.envelope(), &message.formatted())).await;
        match sent {
            Ok(Ok(_)) => {
                self.park(connection);
                Ok(())
            }
            // lettre has ended the exchange (QUIT) and marked it broken.
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err(SendError::Timeout(timeout)),
        }
    }

    /// Whether the server answers: a new connection, and `NOOP`.
    pub async fn test_connection(&self) -> Result<bool, SendError> {
        let timeout = self.server.timeout;
        let test = async {
            let mut connection = self.open().await?;
            let answered = connection.test_connected().await;
            connection.abort().await;
            Ok(answered)
        };
        tokio::time::timeout(timeout, test).await.map_err(|_| SendError::Timeout(timeout))?
    }

    /// An idle connection that still answers, or a new one. Each is asked
    /// (`NOOP`) before it carries a mail, as lettre's pool does: a server
    /// closes connections (idle too long, or after so many mails), and a
    /// mail sent into a closed one would fail as if the server were away.
    async fn connection(&self) -> Result<AsyncSmtpConnection, SendError> {
        while let Some(mut connection) = self.take_idle() {
            let open = !connection.has_broken()
                && tokio::time::timeout(self.server.timeout, connection.test_connected()).await.unwrap_or(false);
            if open {
                return Ok(connection);
            }
        }
        self.open().await
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop()
    }

    fn park(&self, connection: AsyncSmtpConnection) {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(connection);
    }

    /// A new connection: TCP with Nagle off, TLS as configured, EHLO, AUTH.
    async fn open(&self) -> Result<AsyncSmtpConnection, SendError> {
        let timeout = self.server.timeout;
        tokio::time::timeout(timeout, self.open_now()).await.map_err(|_| SendError::Timeout(timeout))?
    }

    async fn open_now(&self) -> Result<AsyncSmtpConnection, SendError> {
        let server = &self.server;
        let tcp = TcpStream::connect((server.host.as_str(), server.port)).await.map_err(SendError::Connect)?;
        tcp.set_nodelay(true).map_err(SendError::Connect)?;
        let mut connection = match &server.protection {
            Protection::Implicit(tls) => {
                let mut stream = AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
                stream.upgrade_tls(tls.clone()).await?;
                AsyncSmtpConnection::connect_with_transport(Box::new(Encrypted(stream.compat())), &self.hello).await?
            }
            Protection::Plain | Protection::StartTls(_) => {
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?
            }
        };
        if let Protection::StartTls(tls) = &server.protection {
            connection.starttls(tls.clone(), &self.hello).await?;
        }
        if let Some(credentials) = &server.credentials {
            connection.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(connection)
    }
}

/// A TLS stream (lettre's, over our socket) as the stream a connection
/// reads and writes.
struct Encrypted(Compat<AsyncNetworkStream>);

impl std::fmt::Debug for Encrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Encrypted")
    }
}

impl AsyncTokioStream for Encrypted {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().peer_addr()
    }
}

impl tokio::io::AsyncRead for Encrypted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Encrypted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
