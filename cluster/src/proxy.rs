//! A latency-injecting TCP proxy (`LatencyProxy`) for the `slow_cell` fault:
//! it listens on a loopback port, forwards every connection to one upstream
//! address byte for byte, and holds each chunk for a delay that can change
//! while it runs (one per direction, in microseconds behind an `Arc`).
//!
//! ```text
//! client ──▶ [reader ─(bounded queue of (due, chunk))─▶ writer] ──▶ upstream
//!        ◀── [writer ◀─(bounded queue of (due, chunk))─ reader] ◀──
//! ```
//!
//! Each direction is a delay line, not a sleep per read: a chunk is due at
//! its arrival plus the delay in force when it arrived, so a delayed
//! connection keeps its throughput and only its latency grows. The queues are
//! bounded ([`QUEUE_CHUNKS`] × [`CHUNK_BYTES`] per direction): a full queue
//! stops reading, and TCP flow control pushes back on the sender. Both sockets
//! are `TCP_NODELAY`. A half-close (EOF) is passed on once the queue drained;
//! an error on either side closes both. [`LatencyProxy::shutdown`] (or Drop)
//! closes the listener and every connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Largest chunk read at once.
pub const CHUNK_BYTES: usize = 16 << 10;
/// Chunks queued per direction and connection (at most 512 KiB in flight).
pub const QUEUE_CHUNKS: usize = 32;
/// Deadline of the connection to the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The delays a proxy applies, changeable at any time from any thread.
#[derive(Debug, Default)]
pub struct Delays {
    /// Client → upstream, in µs.
    to_upstream_us: AtomicU64,
    /// Upstream → client, in µs.
    from_upstream_us: AtomicU64,
}

impl Delays {
    /// Sets both directions (each rounded down to whole microseconds).
    pub fn set(&self, to_upstream: Duration, from_upstream: Duration) {
        self.to_upstream_us
            .store(micros(to_upstream), Ordering::Relaxed);
        self.from_upstream_us
            .store(micros(from_upstream), Ordering::Relaxed);
    }

    /// Splits an added round trip over the two directions (the odd
    /// microsecond goes upstream → client).
    pub fn set_round_trip(&self, rtt: Duration) {
        let half = rtt / 2;
        self.set(half, rtt - half);
    }

    /// No delay either way.
    pub fn clear(&self) {
        self.set(Duration::ZERO, Duration::ZERO);
    }

    pub fn to_upstream(&self) -> Duration {
        Duration::from_micros(self.to_upstream_us.load(Ordering::Relaxed))
    }

    pub fn from_upstream(&self) -> Duration {
        Duration::from_micros(self.from_upstream_us.load(Ordering::Relaxed))
    }

    fn get(&self, dir: Direction) -> Duration {
        match dir {
            Direction::ToUpstream => self.to_upstream(),
            Direction::FromUpstream => self.from_upstream(),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[derive(Clone, Copy, Debug)]
enum Direction {
    ToUpstream,
    FromUpstream,
}

/// One proxy: a listener in front of one upstream address. Runs on the tokio
/// runtime it was started on.
pub struct LatencyProxy {
    listen: SocketAddr,
    upstream: SocketAddr,
    delays: Arc<Delays>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl LatencyProxy {
    /// Listens on `listen` (port 0: any free one) and forwards to `upstream`,
    /// with no delay until one is set.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<LatencyProxy> {
        let listener = TcpListener::bind(listen).await?;
        let listen = listener.local_addr()?;
        let delays = Arc::new(Delays::default());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, upstream, delays.clone(), stopped));
        Ok(LatencyProxy {
            listen,
            upstream,
            delays,
            stop,
            task: Some(task),
        })
    }

    /// Where clients connect.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn upstream_addr(&self) -> SocketAddr {
        self.upstream
    }

    /// The delays, shared: set them from anywhere while the proxy runs.
    pub fn delays(&self) -> &Arc<Delays> {
        &self.delays
    }

    /// Closes the listener and every connection, and waits for them to go.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            // Aborting drops the JoinSet of connections, which aborts them too.
            t.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    delays: Arc<Delays>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    while !*stopped.borrow() {
        let accepted = tokio::select! {
            // A change (or the proxy gone): the loop condition decides.
            r = stopped.changed() => {
                if r.is_err() {
                    break;
                }
                continue;
            }
            // Reap finished connections as we go.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, _)) => {
                conns.spawn(serve(client, upstream, delays.clone()));
            }
            Err(e) => {
                // Out of descriptors and the like: back off, keep serving.
                tracing::warn!("latency proxy {upstream}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// Forwards one connection until both directions ended or one failed.
async fn serve(client: TcpStream, upstream: SocketAddr, delays: Arc<Delays>) {
    let up = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)).await {
        Ok(Ok(s)) => s,
        // The upstream is down: close the client's connection at once (it
        // sees EOF before any answer).
        _ => return,
    };
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (ur, uw) = up.into_split();
    let result = tokio::try_join!(
        pipe(cr, uw, delays.clone(), Direction::ToUpstream),
        pipe(ur, cw, delays, Direction::FromUpstream),
    );
    if let Err(e) = result {
        tracing::debug!("latency proxy {upstream}: connection ended: {e}");
    }
}

/// One direction: reads chunks, queues them with their due time, writes each
/// when due; passes EOF on as a write shutdown.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delays: Arc<Delays>,
    dir: Direction,
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(QUEUE_CHUNKS);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            let due = Instant::now() + delays.get(dir);
            if tx
                .send((due, Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                // The writer failed; it reports why.
                return Ok(());
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(reader, writer).map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

    /// An echo server: writes back what it reads, closes after the client's EOF.
    async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind(LOOPBACK).await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let _ = s.set_nodelay(true);
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        (addr, task)
    }

    async fn connect(p: &LatencyProxy) -> TcpStream {
        let s = TcpStream::connect(p.listen_addr()).await.unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Time for one small message to go through and come back.
    async fn round_trip(s: &mut TcpStream) -> Duration {
        let t0 = std::time::Instant::now();
        s.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        t0.elapsed()
    }

    #[tokio::test]
    async fn bytes_pass_unchanged_both_ways_and_eof_is_passed_on() {
        let (echo, _server) = echo_server().await;
        let p = LatencyProxy::start(LOOPBACK, echo).await.unwrap();
        assert_eq!(p.upstream_addr(), echo);
        assert_ne!(p.listen_addr().port(), 0);
        let s = connect(&p).await;
        // 3 MiB of a non-repeating pattern, more than the queues hold.
        let data: Vec<u8> = (0..3u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let (mut r, mut w) = s.into_split();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            // Half-close: the echo server sees EOF through the proxy and closes.
            w.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "bytes changed on the way");
        p.shutdown().await;
    }

    #[tokio::test]
    async fn added_delay_is_at_least_the_configured_one_and_removal_restores_it() {
        let (echo, _server) = echo_server().await;
        let p = LatencyProxy::start(LOOPBACK, echo).await.unwrap();
        let mut s = connect(&p).await;
        let before = round_trip(&mut s).await;

        let (to, from) = (Duration::from_millis(150), Duration::from_millis(100));
        p.delays().set(to, from);
        assert_eq!(
            (p.delays().to_upstream(), p.delays().from_upstream()),
            (to, from)
        );
        for _ in 0..3 {
            let slowed = round_trip(&mut s).await;
            assert!(
                slowed >= to + from,
                "round trip {slowed:?} < {:?}",
                to + from
            );
        }
        // A new connection is slowed as well.
        let mut s2 = connect(&p).await;
        assert!(round_trip(&mut s2).await >= to + from);

        // Each direction on its own.
        p.delays().set(Duration::ZERO, Duration::from_millis(120));
        assert!(round_trip(&mut s).await >= Duration::from_millis(120));
        p.delays().set_round_trip(Duration::from_millis(201));
        assert_eq!(p.delays().to_upstream(), Duration::from_micros(100_500));
        assert!(round_trip(&mut s).await >= Duration::from_millis(201));

        // Removed: well under the delay again (a generous bound for a busy machine).
        p.delays().clear();
        let after = round_trip(&mut s).await;
        assert!(
            after < Duration::from_millis(200),
            "round trip {after:?} after removing the delay (before: {before:?})"
        );
        p.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_closes_the_listener_and_every_connection() {
        let (echo, _server) = echo_server().await;
        let p = LatencyProxy::start(LOOPBACK, echo).await.unwrap();
        let addr = p.listen_addr();
        let mut s = connect(&p).await;
        round_trip(&mut s).await;
        p.shutdown().await;
        // The open connection ends (EOF or reset), and no new one is accepted.
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the connection stayed open after shutdown");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn a_dead_upstream_closes_the_client_connection() {
        // A port that was free a moment ago: nothing listens there.
        let dead = {
            let l = std::net::TcpListener::bind(LOOPBACK).unwrap();
            l.local_addr().unwrap()
        };
        let p = LatencyProxy::start(LOOPBACK, dead).await.unwrap();
        let mut s = connect(&p).await;
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the proxy kept a connection to nowhere open");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        // Dropping the proxy (no explicit shutdown) stops it too.
        let addr = p.listen_addr();
        drop(p);
        tokio::task::yield_now().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(std::time::Instant::now() < deadline, "still listening");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
