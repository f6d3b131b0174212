//! Slow clients against a real router: connections that send their headers
//! a byte at a time (slowloris) are cut off at the header read timeout, and
//! while they hang on, other clients are served as usual.

use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use cluster::local::LocalClusterOptions;
use http::Method;
use service::HEADER_READ_TIMEOUT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Slow connections held open at once.
const SLOW: usize = 50;
/// One byte of a slow client's request head every this long.
const BYTE_EVERY: Duration = Duration::from_millis(500);

/// Opens a connection to `addr` and sends a request head a byte every
/// [`BYTE_EVERY`] until the server closes it; how long that took. An error
/// if the server answered instead, or never closed (the head is long
/// enough to outlast the header timeout three times over).
async fn slowloris(addr: String) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let bytes_needed = 3 * HEADER_READ_TIMEOUT.as_millis() / BYTE_EVERY.as_millis();
    let mut head = b"GET /v1/buckets/slow/objects/k HTTP/1.1\r\nhost: x\r\nx-slow: ".to_vec();
    head.resize(head.len() + bytes_needed as usize, b'a');
    let mut buf = [0u8; 256];
    for b in head {
        if s.write_all(&[b]).await.is_err() {
            return Ok(t0.elapsed());
        }
        match tokio::time::timeout(BYTE_EVERY, s.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(t0.elapsed()),
            Ok(Ok(n)) => return Err(format!("answered: {}", String::from_utf8_lossy(&buf[..n]))),
        }
    }
    Err(format!("still open after {:?}", t0.elapsed()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_off_and_others_still_served() {
    bounded_by(TEST_LIMIT, async {
        let dir = TestDir::new("slow_clients");
        let o = LocalClusterOptions {
            cells: 1,
            ..LocalClusterOptions::default()
        };
        let cluster = must_start_cluster(o, dir.path()).await;
        let api = PublicApi::new(&cluster);
        let addr = cluster
            .router_url()
            .trim_start_matches("http://")
            .to_string();

        let slow: Vec<_> = (0..SLOW)
            .map(|_| tokio::spawn(slowloris(addr.clone())))
            .collect();
        // Let them all connect and start trickling.
        tokio::time::sleep(Duration::from_secs(1)).await;

        // A normal client is served, and quickly, meanwhile.
        for i in 0..5 {
            let t = Instant::now();
            let key = format!("k{i}");
            let value = Bytes::from(format!("value {i}"));
            api.must_put("slow", &key, value.clone(), &[]).await;
            let g = api
                .must_send(Method::GET, &obj_path("slow", &key), &[], Bytes::new())
                .await;
            assert_eq!(g.status, 200, "{}", g.text());
            assert_eq!(g.body, value);
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "PUT+GET took {:?} beside {SLOW} slow connections",
                t.elapsed()
            );
        }

        // Every slow connection is closed by the router at the header timeout.
        let mut times = Vec::with_capacity(SLOW);
        for h in slow {
            let after = h
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("slow client: {e}"));
            times.push(after);
        }
        times.sort();
        eprintln!(
            "slow connections closed after {:?} .. {:?}",
            times[0],
            times[SLOW - 1]
        );
        assert!(times[0] >= HEADER_READ_TIMEOUT - Duration::from_millis(100));
        assert!(times[SLOW - 1] < HEADER_READ_TIMEOUT + Duration::from_secs(3));
        assert_cluster_logs_clean(&cluster);
    })
    .await;
}
