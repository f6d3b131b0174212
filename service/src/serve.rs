//! Serving an axum app until told to stop, then draining the requests in
//! flight for a bounded grace period; and what a server binary's `main` does
//! after loading its configuration (runtime, listeners, run).

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// An axum app served on its own task, every connection with TCP_NODELAY.
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
    /// Starts serving `app` on `listener`.
    pub fn start(listener: TcpListener, app: Router) -> Server {
        let (stop, mut stopping) = watch::channel(false);
        let serve =
            axum::serve(listener.tap_io(set_nodelay), app).with_graceful_shutdown(async move {
                let _ = stopping.wait_for(|s| *s).await;
            });
        Server {
            stop,
            task: tokio::spawn(serve.into_future()),
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

fn set_nodelay(io: &mut TcpStream) {
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
