//! Serving an axum app over HTTP/1.1 (hyper, with a header read timeout and a
//! connection cap) until told to stop, then draining the requests in flight
//! for a bounded grace period; and what a server binary's `main` does after
//! loading its configuration (runtime, listeners, run).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

/// Default [`Limits::header_read_timeout`].
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Limits::max_connections`].
pub const MAX_CONNECTIONS: usize = 4096;

/// What one server allows each client, so that slow or idle clients cannot
/// hold its capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for a request's whole head (request line and headers),
    /// counted from the end of the previous response on a kept-alive
    /// connection (or from its accept): past it the connection is closed
    /// without an answer. This also bounds how long a connection may stay
    /// idle between requests (hyper has one timer for both).
    pub header_read_timeout: Duration,
    /// Most connections open at once. Over it a new connection is accepted
    /// and closed at once (the client reads EOF or a reset): the listener's
    /// queue keeps moving and the client learns at once instead of waiting
    /// in a backlog behind connections that may be slow on purpose.
    pub max_connections: usize,
}

impl Limits {
    /// Limits from a server's configuration (`[client_limits]`).
    pub fn new(header_read_timeout: Duration, max_connections: usize) -> Limits {
        Limits {
            header_read_timeout,
            max_connections,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// An axum app served over HTTP/1.1 on its own task, every connection with
/// TCP_NODELAY, keep-alive, a header read timeout and a cap on open
/// connections ([`Limits`]).
///
/// Stopping takes two steps so a server can do its own work in between:
/// [`Server::stop_accepting`], then [`Server::drain`]. Dropping the handle
/// stops accepting too.
pub struct Server {
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    /// `task` has completed and been awaited: it must not be polled again.
    finished: bool,
}

impl Server {
    /// Starts serving `app` on `listener` with the default [`Limits`].
    pub fn start(listener: TcpListener, app: Router) -> Server {
        Server::start_with(listener, app, Limits::default())
    }

    /// Starts serving `app` on `listener` within `limits`.
    pub fn start_with(listener: TcpListener, app: Router, limits: Limits) -> Server {
        let (stop, stopping) = watch::channel(false);
        Server {
            stop,
            task: tokio::spawn(accept_loop(listener, app, limits, stopping)),
            finished: false,
        }
    }

    /// Completes only if the server stops before being asked to, with why.
    /// Cancel-safe: meant for a `select!` against the shutdown signal.
    pub async fn failed(&mut self) -> std::io::Error {
        if self.finished {
            return std::future::pending().await;
        }
        let outcome = (&mut self.task).await;
        self.finished = true;
        match outcome {
            Ok(Ok(())) => std::io::Error::other("server stopped unexpectedly"),
            Ok(Err(e)) => e,
            Err(e) => std::io::Error::other(e),
        }
    }

    /// Stops accepting connections; requests in flight carry on.
    pub fn stop_accepting(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops accepting and waits up to `grace` for the requests in flight,
    /// then gives up on them (their connections end with the runtime).
    /// Whether they all finished in time.
    pub async fn drain(mut self, grace: Duration) -> bool {
        self.stop_accepting();
        if self.finished {
            return true;
        }
        if tokio::time::timeout(grace, &mut self.task).await.is_ok() {
            return true;
        }
        self.task.abort();
        false
    }
}

/// Accepts until `stopping` turns true (or its sender is dropped), serving
/// each connection on its own task; then closes the listener, asks every
/// connection to finish (idle ones close at once, busy ones after their
/// response) and waits for them all.
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut refused = 0u64;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopping.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                on_accept_error(e).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    max_connections = limits.max_connections,
                    "at the connection limit: closing new connections at once"
                );
            }
            drop(stream);
            continue;
        };
        set_nodelay(&stream);
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A failed accept: a connection that broke before it was accepted is only
/// skipped; anything else (out of file descriptors) is logged and retried
/// after a pause, so the loop does not spin.
async fn on_accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!("accept failed: {e}; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn set_nodelay(io: &TcpStream) {
    if let Err(e) = io.set_nodelay(true) {
        tracing::warn!("failed to set TCP_NODELAY: {e}");
    }
}

/// The rest of a server binary's `main` once its configuration is loaded:
/// builds the multi-thread runtime (`worker_threads`, or one per core), binds
/// `listen` in order (`(what, address)`; a failure says "bind {what} on
/// {address}"), and runs `run` on the listeners to completion.
pub fn run_server<const N: usize, Fut, E>(
    worker_threads: Option<usize>,
    listen: [(&'static str, SocketAddr); N],
    run: impl FnOnce([TcpListener; N]) -> Fut,
) -> anyhow::Result<()>
where
    Fut: Future<Output = Result<(), E>>,
    anyhow::Error: From<E>,
{
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(async move {
        let mut bound = Vec::with_capacity(N);
        for (what, addr) in listen {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind {what} on {addr}"))?;
            bound.push(listener);
        }
        let bound: [TcpListener; N] = bound.try_into().expect("one listener per address");
        run(bound).await?;
        Ok(())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends a GET for `path` and returns the whole response (the server closes).
    pub(crate) async fn get_text(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    /// A server whose `/slow` answers after `delay`; `started` fires when a
    /// `/slow` request is in the handler.
    async fn slow_server(delay: Duration) -> (Server, SocketAddr, tokio::sync::mpsc::Receiver<()>) {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let app = Router::new().route(
            "/slow",
            get(move || {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(()).await;
                    tokio::time::sleep(delay).await;
                    "done"
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (Server::start(listener, app), addr, rx)
    }

    #[tokio::test]
    async fn drain_finishes_the_request_in_flight_then_returns() {
        let (server, addr, mut started) = slow_server(Duration::from_millis(200)).await;
        let client = tokio::spawn(get_text(addr, "/slow"));
        started.recv().await.unwrap();
        assert!(server.drain(Duration::from_secs(10)).await);
        let resp = client.await.unwrap().unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.ends_with("done"), "{resp}");
        // No longer accepting.
        assert!(get_text(addr, "/slow").await.is_err());
    }

    #[tokio::test]
    async fn drain_gives_up_after_the_grace_period() {
        let (server, addr, mut started) = slow_server(Duration::from_secs(60)).await;
        let client = tokio::spawn(get_text(addr, "/slow"));
        started.recv().await.unwrap();
        let t0 = std::time::Instant::now();
        assert!(!server.drain(Duration::from_millis(100)).await);
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert!(!client.is_finished());
        client.abort();
    }

    #[tokio::test]
    async fn failed_waits_while_the_server_serves() {
        let (mut server, addr, _started) = slow_server(Duration::ZERO).await;
        let still = tokio::time::timeout(Duration::from_millis(100), server.failed()).await;
        assert!(still.is_err(), "the server stopped by itself");
        assert!(get_text(addr, "/slow").await.unwrap().ends_with("done"));
        assert!(server.drain(Duration::from_secs(10)).await);
    }

    /// A server within `limits`: `GET /hi` answers `done`; `POST /put` reads
    /// its body within `body_deadline` and answers its length, or 408.
    async fn limited_server(limits: Limits, body_deadline: Duration) -> (Server, SocketAddr) {
        use axum::http::{HeaderMap, StatusCode};
        let app = Router::new().route("/hi", get(|| async { "done" })).route(
            "/put",
            axum::routing::post(
                move |headers: HeaderMap, body: axum::body::Body| async move {
                    match crate::body::read_limited_within(&headers, body, 1 << 20, body_deadline)
                        .await
                    {
                        Ok(b) => (StatusCode::OK, b.len().to_string()),
                        Err(e @ crate::body::BodyError::TimedOut { .. }) => {
                            (StatusCode::REQUEST_TIMEOUT, e.to_string())
                        }
                        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
                    }
                },
            ),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (Server::start_with(listener, app, limits), addr)
    }

    /// Sends `GET /hi` on a kept-alive connection and reads its answer.
    async fn hi(s: &mut TcpStream) -> std::io::Result<String> {
        s.write_all(b"GET /hi HTTP/1.1\r\nhost: x\r\n\r\n").await?;
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while !out.ends_with(b"done") {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            out.extend_from_slice(&buf[..n]);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Writes `bytes` one every `every` until the server closes the
    /// connection (EOF or an error); returns how long that took and what
    /// the server sent. Gives up (`None`) after all of `bytes`.
    async fn trickle(
        s: &mut TcpStream,
        bytes: &[u8],
        every: Duration,
    ) -> Option<(Duration, Vec<u8>)> {
        let t0 = std::time::Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        for b in bytes {
            if s.write_all(std::slice::from_ref(b)).await.is_err() {
                return Some((t0.elapsed(), got));
            }
            let until = tokio::time::Instant::now() + every;
            loop {
                match tokio::time::timeout_at(until, s.read(&mut buf)).await {
                    Err(_) => break,
                    Ok(Ok(0)) | Ok(Err(_)) => return Some((t0.elapsed(), got)),
                    Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                }
            }
        }
        None
    }

    #[tokio::test]
    async fn a_client_sending_its_headers_a_byte_at_a_time_is_cut_off() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(1),
            ..Limits::default()
        };
        let (server, addr) = limited_server(limits, Duration::from_secs(10)).await;
        let slow = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let head = b"GET /hi HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaa\r\n\r\n";
            trickle(&mut s, head, Duration::from_millis(500)).await
        });
        // Meanwhile a normal client is served, promptly, twice on one connection.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t0 = std::time::Instant::now();
        let mut normal = TcpStream::connect(addr).await.unwrap();
        assert!(hi(&mut normal).await.unwrap().starts_with("HTTP/1.1 200"));
        assert!(hi(&mut normal).await.unwrap().starts_with("HTTP/1.1 200"));
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
        let (after, got) = slow
            .await
            .unwrap()
            .expect("the slow client was never cut off");
        assert!(
            after >= Duration::from_millis(900),
            "cut off after {after:?}"
        );
        assert!(after < Duration::from_secs(4), "cut off after {after:?}");
        assert!(!String::from_utf8_lossy(&got).contains("done"), "answered");
        assert!(server.drain(Duration::from_secs(10)).await);
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_header_timeout() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let (server, addr) = limited_server(limits, Duration::from_secs(10)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert!(hi(&mut s).await.unwrap().starts_with("HTTP/1.1 200"));
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("the idle connection stayed open")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(server.drain(Duration::from_secs(10)).await);
    }

    #[tokio::test]
    async fn a_body_sent_a_byte_at_a_time_gets_408_at_its_deadline() {
        let (server, addr) = limited_server(Limits::default(), Duration::from_secs(1)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /put HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
            .await
            .unwrap();
        let (after, got) = trickle(&mut s, &[b'x'; 100], Duration::from_millis(300))
            .await
            .expect("the slow body was never cut off");
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(got.contains("timed out"), "{got}");
        assert!(
            after >= Duration::from_millis(900),
            "cut off after {after:?}"
        );
        assert!(after < Duration::from_secs(4), "cut off after {after:?}");
        // A body sent at once is read.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /put HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 3\r\n\r\nabc",
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200") && out.ends_with('3'),
            "{out}"
        );
        assert!(server.drain(Duration::from_secs(10)).await);
    }

    #[tokio::test]
    async fn over_the_connection_cap_a_new_connection_is_closed_and_the_others_served() {
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let (server, addr) = limited_server(limits, Duration::from_secs(10)).await;
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        assert!(hi(&mut a).await.unwrap().starts_with("HTTP/1.1 200"));
        assert!(hi(&mut b).await.unwrap().starts_with("HTTP/1.1 200"));
        // The third is accepted and closed at once, unanswered.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let refused = tokio::time::timeout(Duration::from_secs(2), hi(&mut c))
            .await
            .expect("the connection over the cap was left hanging");
        assert!(refused.is_err(), "{refused:?}");
        // The open ones carry on.
        assert!(hi(&mut a).await.unwrap().starts_with("HTTP/1.1 200"));
        assert!(hi(&mut b).await.unwrap().starts_with("HTTP/1.1 200"));
        // Once one closes, its slot is free again.
        drop(a);
        let t0 = std::time::Instant::now();
        loop {
            let mut d = TcpStream::connect(addr).await.unwrap();
            if hi(&mut d).await.is_ok() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "the slot was never freed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(b);
        assert!(server.drain(Duration::from_secs(10)).await);
    }

    #[test]
    fn run_server_binds_in_order_and_names_what_failed() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap();
        let free: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut ran = false;
        run_server(Some(1), [("first", free), ("second", free)], |[a, b]| {
            ran = true;
            async move {
                assert_ne!(a.local_addr()?, b.local_addr()?);
                Ok::<(), std::io::Error>(())
            }
        })
        .unwrap();
        assert!(ran);
        let e = run_server(None, [("the test API", busy)], |[_]| async {
            Ok::<(), std::io::Error>(())
        })
        .unwrap_err();
        assert_eq!(e.to_string(), format!("bind the test API on {busy}"));
    }
}
