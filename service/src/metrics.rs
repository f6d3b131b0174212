//! Prometheus plumbing shared by the servers: registering a metric, the
//! build-info gauge, and the text exposition served on `/metrics`.

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use prometheus::core::Collector;
use prometheus::{IntGaugeVec, Opts, Registry};

/// Registers `metric` in `registry` and hands it back, for building a
/// metrics struct field by field.
pub fn register<T: Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> prometheus::Result<T> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Registers `<prefix>_build_info{version}`, always 1.
pub fn register_build_info(registry: &Registry, prefix: &str) -> prometheus::Result<()> {
    let build = IntGaugeVec::new(
        Opts::new(
            format!("{prefix}_build_info"),
            "Build information; always 1",
        ),
        &["version"],
    )?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    registry.register(Box::new(build))
}

/// The text exposition of every metric in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buf = String::new();
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut buf) {
        tracing::warn!("failed to encode metrics: {e}");
    }
    buf
}

/// The answer to a scrape: `registry` in the text format.
pub fn metrics_response(registry: &Registry) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(registry),
    )
        .into_response()
}

/// `GET /metrics` for a server whose metrics need no refresh at scrape time.
pub fn metrics_route<S: Clone + Send + Sync + 'static>(registry: Registry) -> MethodRouter<S> {
    get(move || std::future::ready(metrics_response(&registry)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntCounter;

    use crate::serve::tests::get_text;

    #[test]
    fn build_info_renders_with_the_version() {
        let r = Registry::new();
        register_build_info(&r, "cellkv_test").unwrap();
        let text = render(&r);
        assert!(
            text.contains(&format!(
                "cellkv_test_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        // Registering twice is an error, not a silent duplicate.
        assert!(register_build_info(&r, "cellkv_test").is_err());
    }

    #[tokio::test]
    async fn metrics_route_serves_the_text_format() {
        let r = Registry::new();
        let hits = register(
            &r,
            IntCounter::new("cellkv_test_hits_total", "hits").unwrap(),
        )
        .unwrap();
        hits.inc_by(3);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/metrics", metrics_route(r.clone()));
        let server = crate::Server::start(listener, app);
        let resp = get_text(addr, "/metrics").await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(
            resp.contains("content-type: text/plain; version=0.0.4\r\n"),
            "{resp}"
        );
        assert!(
            resp.contains("# TYPE cellkv_test_hits_total counter\n"),
            "{resp}"
        );
        assert!(resp.contains("\ncellkv_test_hits_total 3\n"), "{resp}");
        assert!(server.drain(std::time::Duration::from_secs(10)).await);
        // The same metric again is refused.
        assert!(register(&r, hits).is_err());
    }
}
