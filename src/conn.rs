//! Inbound connections: how many, how long a silent one is held, and what an accept
//! error does.
//!
//! Every TCP connection (gRPC and management) holds a slot of its port's budget from
//! accept to close; past the budget a new connection is closed at once (counted, logged
//! at most once a second), so the process never runs out of descriptors, and the
//! management port has a budget of its own so `/healthz` answers while the gRPC port is
//! full. A connection must send its first complete request head (the HTTP/2 preface,
//! SETTINGS and a HEADERS frame; or an HTTP/1 request line and headers) within
//! [`FIRST_REQUEST_TIMEOUT`] of being accepted (of its TLS handshake ending, on TLS), or
//! it is closed. Accept errors (EMFILE…) are logged at most once a second and followed
//! by a growing pause (10 ms … 1 s), never a busy loop.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tracing::{info, warn};

/// How long a new connection may take to send its first complete request head.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections the management port holds at once: probes and scrapers need a handful.
pub const MANAGEMENT_MAX_CONNECTIONS: usize = 64;

/// Descriptors left aside from `--max-connections`' default: Redis connections, the
/// management port's budget, the listeners, certificate and snapshot files, the runtime.
pub const DESCRIPTOR_RESERVE: usize = 128 + MANAGEMENT_MAX_CONNECTIONS;

/// The default gRPC connection budget: the open-files limit less [`DESCRIPTOR_RESERVE`].
pub fn default_max_connections(open_files: u64) -> usize {
    (open_files as usize)
        .saturating_sub(DESCRIPTOR_RESERVE)
        .max(16)
}

/// Raises the soft open-files limit to the hard one (as the Go runtime does for flagd)
/// and returns it.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let Some(current) = limit.current else {
        return u64::MAX;
    };
    if let Some(max) = limit.maximum.filter(|&m| m > current) {
        let raised = Rlimit {
            current: Some(max),
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return max;
        }
    }
    current
}

/// Which protocol's first request head to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http2,
    Http1,
}

/// Accepts connections within a budget; what is over it is closed at once.
pub struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    limit: usize,
    /// Which port, for logs: "gRPC" or "management".
    port: &'static str,
    over_limit: RateLimited,
    errors: RateLimited,
    /// Called once per connection closed because the budget was full.
    on_refused: Box<dyn Fn() + Send + Sync>,
}

impl Acceptor {
    pub fn new(
        listener: TcpListener,
        limit: usize,
        port: &'static str,
        on_refused: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        Acceptor {
            listener,
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            port,
            over_limit: RateLimited::default(),
            errors: RateLimited::default(),
            on_refused: Box::new(on_refused),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection within the budget, with its slot.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
        let mut pause = Duration::from_millis(10);
        loop {
            match self.listener.accept().await {
                Ok((tcp, peer)) => {
                    pause = Duration::from_millis(10);
                    match self.slots.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let _ = tcp.set_nodelay(true);
                            return (tcp, peer, permit);
                        }
                        Err(_) => {
                            (self.on_refused)();
                            drop(tcp);
                            if let Some(n) = self.over_limit.due() {
                                warn!(port = self.port, limit = self.limit, refused = n, last_peer = %peer,
                                    "connection limit reached (--max-connections): closing new connections");
                            }
                        }
                    }
                }
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    if let Some(n) = self.errors.due() {
                        warn!(port = self.port, error = %e, errors = n, pause_ms = pause.as_millis() as u64,
                            "cannot accept connections; pausing");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// A connection whose first request head must arrive within [`FIRST_REQUEST_TIMEOUT`].
    pub async fn accept_guarded(&mut self, protocol: Protocol) -> (Guarded<TcpStream>, SocketAddr) {
        let (tcp, peer, permit) = self.accept().await;
        (Guarded::new(tcp, permit, protocol, peer), peer)
    }
}

/// Plain-TCP gRPC connections, guarded, until `stop` is cancelled.
pub fn incoming(
    mut acceptor: Acceptor,
    stop: tokio_util::sync::CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Guarded<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (conn, _) = tokio::select! {
                c = acceptor.accept_guarded(Protocol::Http2) => c,
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The management port's listener for axum, with its own budget.
pub struct ManagementListener(pub Acceptor);

impl axum::serve::Listener for ManagementListener {
    type Io = Guarded<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.0.accept_guarded(Protocol::Http1).await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Errors about one connection (it went away before it was accepted), not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

thread_local! {
    /// The peer whose bytes this thread last read (for the rapid-reset log line).
    static PEER: std::cell::Cell<Option<SocketAddr>> = const { std::cell::Cell::new(None) };
}

/// Records the peer whose bytes this thread is about to hand to the protocol code.
pub fn note_peer(peer: SocketAddr) {
    PEER.with(|p| p.set(Some(peer)));
}

/// The peer whose bytes this thread last read: during the protocol code's handling of a
/// frame, the connection it came from.
pub fn reading_peer() -> Option<SocketAddr> {
    PEER.with(std::cell::Cell::get)
}

/// "At most once a second, with the count since the last time".
#[derive(Default)]
pub struct RateLimited {
    last: Option<Instant>,
    since: u64,
}

impl RateLimited {
    /// Counts one event; returns the count to log when a log line is due.
    pub fn due(&mut self) -> Option<u64> {
        self.since += 1;
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.last = Some(Instant::now());
            Some(std::mem::take(&mut self.since))
        } else {
            None
        }
    }
}

/// A connection that holds a budget slot until it is dropped, and is closed (a read
/// error) if its first request head is not complete within [`FIRST_REQUEST_TIMEOUT`].
pub struct Guarded<T> {
    inner: T,
    _slot: OwnedSemaphorePermit,
    /// Running until the first request head is complete.
    deadline: Option<Pin<Box<Sleep>>>,
    head: HeadScan,
    peer: SocketAddr,
}

impl<T> Guarded<T> {
    pub fn new(inner: T, slot: OwnedSemaphorePermit, protocol: Protocol, peer: SocketAddr) -> Self {
        Guarded {
            inner,
            _slot: slot,
            deadline: Some(Box::pin(tokio::time::sleep(FIRST_REQUEST_TIMEOUT))),
            head: HeadScan::new(protocol),
            peer,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        note_peer(this.peer);
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.deadline.is_some() && this.head.feed(&buf.filled()[before..]) {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some(deadline) = this.deadline.as_mut() {
                    ready!(deadline.as_mut().poll(cx));
                    info!(peer = %this.peer,
                        "no complete request within {FIRST_REQUEST_TIMEOUT:?} of connecting; connection closed");
                    this.deadline = None;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no complete request head in time",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<T> {
    type ConnectInfo = T::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Recognises the end of the first request head in the bytes a client sends.
#[derive(Debug)]
enum HeadScan {
    /// HTTP/2: the 24-byte preface, then frames; done at the end of a HEADERS (or
    /// CONTINUATION) frame flagged END_HEADERS.
    Http2 {
        preface_left: usize,
        header: [u8; 9],
        header_len: usize,
        /// Payload bytes of the current frame still to skip.
        payload_left: usize,
        /// The current frame ends the first request head.
        ends_head: bool,
    },
    /// HTTP/1: done at the first blank line (`\r\n\r\n`).
    Http1 { tail: u32 },
}

const H2_PREFACE_LEN: usize = 24;
const H2_HEADERS: u8 = 0x1;
const H2_CONTINUATION: u8 = 0x9;
const H2_END_HEADERS: u8 = 0x4;

impl HeadScan {
    fn new(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Http2 => HeadScan::Http2 {
                preface_left: H2_PREFACE_LEN,
                header: [0; 9],
                header_len: 0,
                payload_left: 0,
                ends_head: false,
            },
            Protocol::Http1 => HeadScan::Http1 { tail: 0 },
        }
    }

    /// Reads more bytes; true once the first request head is complete.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        match self {
            HeadScan::Http1 { tail } => bytes.iter().any(|&b| {
                *tail = (*tail << 8) | u32::from(b);
                *tail == u32::from_be_bytes(*b"\r\n\r\n")
            }),
            HeadScan::Http2 {
                preface_left,
                header,
                header_len,
                payload_left,
                ends_head,
            } => {
                let skip = (*preface_left).min(bytes.len());
                *preface_left -= skip;
                bytes = &bytes[skip..];
                while !bytes.is_empty() {
                    if *payload_left > 0 {
                        let n = (*payload_left).min(bytes.len());
                        *payload_left -= n;
                        bytes = &bytes[n..];
                    } else {
                        let n = (9 - *header_len).min(bytes.len());
                        header[*header_len..*header_len + n].copy_from_slice(&bytes[..n]);
                        *header_len += n;
                        bytes = &bytes[n..];
                        if *header_len < 9 {
                            break;
                        }
                        *header_len = 0;
                        *payload_left =
                            u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
                        let kind = header[3];
                        *ends_head = matches!(kind, H2_HEADERS | H2_CONTINUATION)
                            && header[4] & H2_END_HEADERS != 0;
                    }
                    if *payload_left == 0 && *ends_head {
                        return true;
                    }
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 1];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn the_http2_head_ends_with_a_headers_frame_flagged_end_headers() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, &[0; 12])); // SETTINGS
        bytes.extend(frame(H2_HEADERS, 0, &[1; 30])); // HEADERS, more to come
        bytes.extend(frame(H2_CONTINUATION, H2_END_HEADERS, &[2; 5]));
        // Byte by byte and all at once: done exactly at the last byte.
        let mut scan = HeadScan::new(Protocol::Http2);
        for (i, b) in bytes.iter().enumerate() {
            assert_eq!(scan.feed(&[*b]), i == bytes.len() - 1, "byte {i}");
        }
        let mut scan = HeadScan::new(Protocol::Http2);
        assert!(!scan.feed(&bytes[..bytes.len() - 1]));
        assert!(scan.feed(&bytes[bytes.len() - 1..]));
        // The preface and SETTINGS alone (a client that goes quiet) never complete it.
        let mut scan = HeadScan::new(Protocol::Http2);
        assert!(!scan.feed(&bytes[..24 + 9 + 12]));
    }

    #[test]
    fn the_http1_head_ends_at_the_blank_line() {
        let mut scan = HeadScan::new(Protocol::Http1);
        assert!(!scan.feed(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"));
        assert!(scan.feed(b"\r\n"));
    }

    #[test]
    fn the_default_budget_leaves_the_reserve() {
        assert_eq!(default_max_connections(20_000), 20_000 - DESCRIPTOR_RESERVE);
        assert_eq!(default_max_connections(100), 16);
    }

    #[test]
    fn rate_limited_says_it_once_a_second_with_the_count() {
        let mut r = RateLimited::default();
        assert_eq!(r.due(), Some(1));
        assert_eq!(r.due(), None);
        assert_eq!(r.due(), None);
        r.last = Some(Instant::now() - Duration::from_secs(2));
        assert_eq!(r.due(), Some(3));
    }
}
