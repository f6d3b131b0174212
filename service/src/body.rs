//! [`read_limited`]: reads a request body of at most `max` bytes within a
//! deadline. Over the limit, it first discards (a bounded amount, for a
//! bounded time) what the client is still sending, so a client that sent no
//! `Expect: 100-continue` reads its `413` instead of a connection reset mid-upload.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use http_body_util::BodyExt;

/// Most bytes discarded from an oversized body before giving up on it (the
/// connection is then closed after the answer).
pub const DRAIN_MAX_BYTES: u64 = 64 << 20;
/// Longest time spent discarding an oversized body.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Default deadline for reading a whole body ([`read_limited`]): a client
/// sending slower than `max` bytes in this time is cut off.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a body was not read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Over the limit (by `Content-Length` or while reading). `drained`:
    /// the rest of the body was read and discarded, so the connection can
    /// carry the answer and stay open.
    #[error("body larger than the limit of {max} bytes")]
    TooLarge { max: u64, drained: bool },
    /// `Content-Length` is not a number.
    #[error("Content-Length is not a number")]
    BadLength,
    /// The client's body broke off (reset, bad chunking).
    #[error("read request body: {0}")]
    Read(String),
    /// The body did not arrive whole within the deadline (a client too slow,
    /// or stalled on purpose). What was read is dropped and the connection
    /// is closed after the answer.
    #[error("read request body: timed out after {after:?}")]
    TimedOut { after: Duration },
}

/// Reads all of `body` within [`BODY_READ_TIMEOUT`], refusing more than
/// `max` bytes ([`read_limited_within`]).
pub async fn read_limited(headers: &HeaderMap, body: Body, max: u64) -> Result<Bytes, BodyError> {
    read_limited_within(headers, body, max, BODY_READ_TIMEOUT).await
}

/// Reads all of `body`, refusing more than `max` bytes: early from
/// `Content-Length`, and while reading for bodies without one. Memory stays
/// bounded by `max` whatever the client sends. The whole body must arrive
/// within `deadline` (draining an oversized one has its own bound). A body
/// already received costs a clock read: the timer is armed only if the read
/// has to wait.
pub async fn read_limited_within(
    headers: &HeaderMap,
    mut body: Body,
    max: u64,
    deadline: Duration,
) -> Result<Bytes, BodyError> {
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(BodyError::BadLength)?,
        ),
    };
    if declared.is_some_and(|len| len > max) {
        let drained = drain(&mut body).await;
        return Err(BodyError::TooLarge { max, drained });
    }
    let mut buf = Vec::with_capacity(usize::try_from(declared.unwrap_or(0)).unwrap_or(0));
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buf.len() as u64 + data.len() as u64 > max {
                return Err(BodyError::TooLarge {
                    max,
                    drained: false,
                });
            }
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(Ok(())) => Ok(Bytes::from(buf)),
        Ok(Err(BodyError::TooLarge { .. })) => {
            let drained = drain(&mut body).await;
            Err(BodyError::TooLarge { max, drained })
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BodyError::TimedOut { after: deadline }),
    }
}

/// Reads and drops the rest of `body`, up to [`DRAIN_MAX_BYTES`] within
/// [`DRAIN_TIMEOUT`]; whether it reached the end.
async fn drain(body: &mut Body) -> bool {
    let discard = async {
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > DRAIN_MAX_BYTES {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIMEOUT, discard)
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(len: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(l) = len {
            h.insert(header::CONTENT_LENGTH, l.parse().unwrap());
        }
        h
    }

    #[tokio::test]
    async fn reads_a_body_within_the_limit() {
        let b = read_limited(&headers(Some("5")), Body::from("hello"), 5)
            .await
            .unwrap();
        assert_eq!(&b[..], b"hello");
    }

    #[tokio::test]
    async fn refuses_by_length_after_draining_what_the_client_sends() {
        let e = read_limited(&headers(Some("6")), Body::from("toobig"), 5)
            .await
            .unwrap_err();
        assert_eq!(
            e,
            BodyError::TooLarge {
                max: 5,
                drained: true
            }
        );
    }

    #[tokio::test]
    async fn refuses_a_body_without_length_that_grows_past_the_limit() {
        let e = read_limited(&headers(None), Body::from("toobig"), 5)
            .await
            .unwrap_err();
        assert!(matches!(
            e,
            BodyError::TooLarge {
                max: 5,
                drained: true
            }
        ));
    }

    #[tokio::test]
    async fn a_bad_length_is_a_bad_request() {
        let e = read_limited(&headers(Some("x")), Body::empty(), 5)
            .await
            .unwrap_err();
        assert_eq!(e, BodyError::BadLength);
    }
}
