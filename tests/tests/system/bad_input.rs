//! Bad input as clients really send it, on real sockets: an object over the
//! limit sent without `Expect: 100-continue` (as most clients send it) gets
//! its `413 payload_too_large`, not a reset connection, from the router and
//! from a cell, and the connection keeps serving.

use std::time::Duration;

use cluster::local::LocalClusterOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Over both servers' default limit of 4 MiB.
const OVERSIZED: usize = 5 << 20;

/// Reads one HTTP/1.1 response (headers and a `Content-Length` body) from `s`.
async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.expect("read the body");
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let status = head[9..12].parse().expect("a status code");
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
            return (status, body);
        }
        let n = s.read(&mut chunk).await.expect("read the answer");
        assert!(n > 0, "connection closed before an answer: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// PUTs `OVERSIZED` bytes to `addr` with a `Content-Length` and no `Expect`,
/// writing the whole body before reading (as Python's `http.client` does),
/// then asks for the same key again on the same connection.
async fn oversized_put_then_get(addr: &str, path: &str, auth: &str) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\n\
         Content-Length: {OVERSIZED}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let body = vec![b'x'; OVERSIZED];
    s.write_all(&body)
        .await
        .unwrap_or_else(|e| panic!("{addr} broke the connection mid-upload: {e}"));
    let (status, text) = read_response(&mut s).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
    // The body was read to its end: the connection carries the next request.
    let get = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\n\r\n");
    s.write_all(get.as_bytes()).await.unwrap();
    let (status, text) = read_response(&mut s).await;
    assert_eq!(status, 404, "nothing was stored: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_put_without_expect_gets_its_413_from_router_and_cell() {
    let dir = TestDir::new("oversized-put");
    bounded_by(Duration::from_secs(120), async {
        let cluster = must_start_cluster(
            LocalClusterOptions {
                cells: 1,
                ..LocalClusterOptions::default()
            },
            dir.path(),
        )
        .await;
        let router = cluster.router_url();
        let router_addr = router.trim_start_matches("http://");
        oversized_put_then_get(router_addr, &obj_path("big", "k"), &cluster.auth()).await;

        let cell = &cluster.cells()[0];
        let leader = cell.leader().await.expect("a leader");
        let cell_addr = cell.replica(leader).api_addr().to_string();
        oversized_put_then_get(&cell_addr, &obj_path("big", "k"), &cell.api_auth()).await;
        assert_cluster_logs_clean(&cluster);
    })
    .await;
}
