//! The monitoring listener (`--metrics-listen`): `GET /metrics` (Prometheus text
//! format), `/healthz` and `/readyz`, over plain HTTP/1.1.
//!
//! It is a separate listener so that metrics can stay on a private address while the
//! WebSocket port faces clients. It runs on the JSON-RPC runtime and stops with it.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;

use crate::{Shared, StartError};

/// Binds the monitoring listener (so a busy port is a start error).
pub(crate) fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let listener = TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves the listener until the runtime stops. Call inside a tokio runtime.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot use the metrics listener");
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
                std::future::ready(Ok::<_, std::convert::Infallible>(answer(&request, &shared)))
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn answer<B>(request: &http::Request<B>, shared: &Shared) -> http::Response<Full<Bytes>> {
    let path = request.uri().path();
    let (status, content_type, body) = if request.method() != http::Method::GET {
        (http::StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "only GET is served here\n".to_owned())
    } else if path == "/metrics" {
        (http::StatusCode::OK, crate::metrics::CONTENT_TYPE, shared.metrics.render(shared))
    } else if let Some(p) = crate::health::probe(path, shared) {
        (p.status, "text/plain; charset=utf-8", p.body)
    } else {
        (
            http::StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found; try /metrics, /healthz or /readyz\n".into(),
        )
    };
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}
