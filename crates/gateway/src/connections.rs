//! The edge of the server: accepting connections under a cap, and the timeouts that keep one slow
//! client from holding a connection, a file descriptor or memory for ever.
//!
//! - **Connection cap**: a permit is taken *before* `accept`, so beyond
//!   [`ServerLimits::max_connections`] new connections wait in the kernel's listen backlog (which
//!   the kernel bounds) instead of costing the gateway memory and descriptors.
//! - **Header timeout**: hyper's header-read timer runs from the moment a connection waits for a
//!   request head (the first one, or the next one on a kept-alive connection) until the head is
//!   complete; trickling bytes does not reset it.
//! - **Body timeout**: the whole request body must arrive within the deadline, counted from the
//!   end of the head (a per-frame timer would let a client send one byte every few seconds).
//! - **Idle timeout**: a connection on which no byte moved for that long is asked to close once its
//!   responses are done (an audit stream sends a keep-alive every 15 s and a long poll ends within
//!   60 s, so neither is cut); a connection whose client stopped reading a response is closed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use http_body_util::BodyExt as _;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

use crate::config::ServerLimits;

/// The largest request head, answered 431 beyond; it also bounds what a connection buffers.
/// hyper's default (~400 KB) times the connection cap would let slow clients pin gigabytes.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// A request body that did not arrive within the body timeout; the extractors answer it with 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {}s", .0.as_secs_f64())]
pub struct BodyTimeout(pub Duration);

/// A request body with a deadline for the whole of it.
struct DeadlineBody {
    inner: Body,
    deadline: Instant,
    limit: Duration,
    /// Created on the first wait only: a body already buffered with the head costs no timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl axum::body::HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(this.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// When bytes last moved on a connection, and since when a write has been waiting for the client
/// to read, in milliseconds since the connection opened (0: no write waiting).
#[derive(Debug)]
struct Activity {
    opened: Instant,
    last: AtomicU64,
    write_blocked_since: AtomicU64,
}

impl Activity {
    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
    fn touch(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }
}

/// A connection (TCP, or TLS over TCP) that records its activity for the idle watchdog.
struct WatchedStream<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WatchedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> WatchedStream<S> {
    fn note_write(&self, polled: &Poll<std::io::Result<usize>>) {
        match polled {
            Poll::Pending => {
                let _ = self.activity.write_blocked_since.compare_exchange(
                    0,
                    self.activity.now(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Poll::Ready(_) => {
                self.activity
                    .write_blocked_since
                    .store(0, Ordering::Relaxed);
                self.activity.touch();
            }
        }
    }
}

/// What the idle watchdog decided about a connection.
enum Idle {
    /// No byte moved for the idle timeout: close once the responses in flight are done.
    Quiet,
    /// A response has waited for the client to read it for the idle timeout: close now.
    Stalled,
}

/// Resolves when the connection's writes stalled, or (unless it is already `closing`) it has been
/// quiet, for `limit`.
async fn idle(activity: &Activity, limit: Duration, closing: bool) -> Idle {
    let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    let tick = (limit / 4).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(tick).await;
        let now = activity.now();
        let blocked = activity.write_blocked_since.load(Ordering::Relaxed);
        if blocked != 0 && now.saturating_sub(blocked) >= limit_ms {
            return Idle::Stalled;
        }
        if !closing && now.saturating_sub(activity.last.load(Ordering::Relaxed)) >= limit_ms {
            return Idle::Quiet;
        }
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` resolves; then stops accepting,
/// asks every connection to close once its responses are done, and waits for all of them.
/// `on_shutdown` runs between the two, to end the responses that never end by themselves.
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_shutdown: impl FnOnce(),
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    // HTTP/1.1 only: the header timer then runs from the first byte awaited (a protocol sniff
    // before it would wait untimed), and HTTP/2 comes from the TLS terminator in front.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_REQUEST_HEAD)
        .max_buf_size(MAX_REQUEST_HEAD);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // The permit comes first: at the cap, connections wait in the kernel's backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit,
            () = &mut shutdown => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // Out of descriptors (EMFILE) or a connection reset before accept: wait a little
                // rather than spin, and go on.
                tracing::warn!(error = %err, "cannot accept a connection; retrying in 100 ms");
                drop(permit);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let builder = builder.clone();
        let router = router.clone();
        let mut stop = stop_rx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_one(stream, router, &builder, limits, &mut stop).await,
                Some(acceptor) => {
                    // The handshake is bounded like a request head: a client that never finishes
                    // it gives its connection (and its permit) up.
                    let handshake =
                        tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            serve_one(stream, router, &builder, limits, &mut stop).await;
                        }
                        Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
    // Closed now, so new clients are refused at once rather than queued until the drain ends.
    drop(listener);
    on_shutdown();
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it ends: all of them back means all connections done.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

async fn serve_one<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    router: Router,
    builder: &http1::Builder,
    limits: ServerLimits,
    stop: &mut watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity {
        opened: Instant::now(),
        last: AtomicU64::new(1),
        write_blocked_since: AtomicU64::new(0),
    });
    let io = TokioIo::new(WatchedStream {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let body_timeout = limits.body_timeout;
    let service = router.map_request(move |request: axum::http::Request<hyper::body::Incoming>| {
        let deadline = Instant::now() + body_timeout;
        request.map(|body| {
            Body::new(DeadlineBody {
                inner: Body::new(body.map_err(axum::Error::new)),
                deadline,
                limit: body_timeout,
                sleep: None,
            })
        })
    });
    let connection = builder.serve_connection(io, TowerToHyperService::new(service));
    let mut connection = std::pin::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(err) = served {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            quiet = idle(&activity, limits.idle_timeout, closing) => match quiet {
                Idle::Quiet => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                Idle::Stalled => {
                    tracing::debug!("closing a connection whose client stopped reading");
                    return;
                }
            },
            _ = stop.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}
