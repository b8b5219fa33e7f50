//! The TLS accept loop feeding tonic's `serve_with_incoming`.
//!
//! tonic's own TLS cannot consult a CRL or our registry, so we terminate TLS here. Handshakes run in
//! their own tasks so one slow client cannot stall the listener, at most `max_concurrent_handshakes`
//! at a time (the rest wait in the kernel backlog) and each within `handshake_timeout`. A failed
//! handshake is logged — remote address and reason, nothing from the certificate beyond its department
//! — and the socket dropped. Completed connections carry the caller identity as tonic connect info, so
//! certificates are parsed once per connection, not once per call.
//!
//! At most `max_connections` connections are open at once, those still in their handshake included. A
//! TCP connection beyond that is closed at once rather than left waiting in the backlog: connections are
//! long-lived (HTTP/2), so a waiting client could wait indefinitely and could not tell a full gateway from
//! a dead one, whereas a closed connection makes a gRPC client back off and reconnect (or a load balancer
//! pick another replica) immediately. Refusals are counted in `fedx_connections_refused_total`.
//!
//! On shutdown the stream of connections ends (tonic drops it), the loop returns and the listening
//! socket is closed, so new connections are refused. If connections are still open when the drain is
//! over ([`crate::resilience::shutdown`], phase `Abort`), their reads and writes fail so they close.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::authn::{caller_from_der, PeerInfo};
use crate::config::DepartmentRegistry;
use crate::resilience::shutdown::{reached, Drain, Phase};

#[derive(Debug, Clone)]
pub struct AcceptSettings {
    pub max_concurrent_handshakes: usize,
    pub handshake_timeout: Duration,
    pub trust_domain: String,
    pub registry: DepartmentRegistry,
    /// Open connections (handshaking included); more are closed at once.
    pub max_connections: usize,
    /// The shutdown phase: at `Abort`, open connections are closed under their calls.
    pub drain: Drain,
}

/// An established mTLS connection and who is on the other end.
pub struct PeerStream {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
    slot: ConnectionSlot,
}

/// A connection's place under `max_connections`, and the shutdown signal that closes it.
struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    abort: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

impl ConnectionSlot {
    fn new(permit: OwnedSemaphorePermit, drain: &Drain) -> ConnectionSlot {
        metrics::gauge!("fedx_connections_open").increment(1.0);
        ConnectionSlot { _permit: permit, abort: Some(Box::pin(reached(drain.subscribe(), Phase::Abort))) }
    }

    /// An error once the gateway aborts its remaining connections (registers for the wake-up until then).
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(abort) = self.abort.as_mut() {
            if abort.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            self.abort = None;
        }
        Err(io::Error::new(io::ErrorKind::ConnectionAborted, "gateway shut down"))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        metrics::gauge!("fedx_connections_open").decrement(1.0);
    }
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.slot.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.slot.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.slot.check(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.slot.check(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Starts accepting on `listener`; the stream ends when it is dropped (server shutdown).
pub fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    settings: AcceptSettings,
) -> ReceiverStream<Result<PeerStream, io::Error>> {
    // A small queue: when tonic stops taking connections, handshake tasks wait here holding their
    // permits, which in turn stops the accept loop — back-pressure instead of unbounded buffering.
    let (tx, rx) = mpsc::channel(32);
    let settings = Arc::new(settings);
    tokio::spawn(accept_loop(listener, acceptor, settings, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    settings: Arc<AcceptSettings>,
    tx: mpsc::Sender<Result<PeerStream, io::Error>>,
) {
    let permits = Arc::new(Semaphore::new(settings.max_concurrent_handshakes));
    let connections = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            _ = tx.closed() => return,
        };
        let Ok(permit) = permit else { return };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin (as mini-redis does).
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = tx.closed() => return,
        };
        let Ok(connection) = connections.clone().try_acquire_owned() else {
            // Closed at once: see the module doc.
            metrics::counter!("fedx_connections_refused_total").increment(1);
            tracing::debug!(%remote, limit = settings.max_connections, "connection refused: at max_connections");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let settings = settings.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(settings.handshake_timeout, acceptor.accept(tcp)).await;
            drop(permit);
            let stream = match outcome {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::info!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            match peer_info(&stream, remote, &settings) {
                Some(info) => {
                    let slot = ConnectionSlot::new(connection, &settings.drain);
                    let _ = tx.send(Ok(PeerStream { inner: stream, info, slot })).await;
                }
                None => {
                    tracing::warn!(%remote, "verified connection without a usable client identity dropped")
                }
            }
        });
    }
}

fn peer_info(
    stream: &TlsStream<TcpStream>,
    remote: SocketAddr,
    settings: &AcceptSettings,
) -> Option<PeerInfo> {
    let (_, connection) = stream.get_ref();
    let leaf = connection.peer_certificates()?.first()?;
    let caller = caller_from_der(leaf.as_ref(), &settings.trust_domain, &settings.registry).ok()?;
    Some(PeerInfo { caller: Arc::new(caller), remote_addr: Some(remote) })
}
