//! The voice-room demo page, served at `/` of the listen address.
//!
//! The page (built from `sdk/examples/voice-room`, committed under its `dist/`) is
//! embedded in the binary, so `cargo run -p dspeak-server` and a browser are the whole
//! demo. An HTTP middleware answers `GET` for the page's files and the health probes
//! (`health`); everything else, WebSocket upgrades and JSON-RPC POSTs included, goes on
//! to the JSON-RPC server.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse};

use crate::Shared;

/// The page's files: path, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", include_str!("../../sdk/examples/voice-room/dist/index.html")),
    ("/index.html", "text/html; charset=utf-8", include_str!("../../sdk/examples/voice-room/dist/index.html")),
    ("/app.js", "text/javascript; charset=utf-8", include_str!("../../sdk/examples/voice-room/dist/app.js")),
    ("/style.css", "text/css; charset=utf-8", include_str!("../../sdk/examples/voice-room/dist/style.css")),
];

/// Tower middleware serving [`FILES`] and the probes in front of the JSON-RPC service.
#[derive(Clone, Debug)]
pub(crate) struct Page<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Page<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Page { inner, shared }
    }
}

impl<S, B> tower::Service<HttpRequest<B>> for Page<S>
where
    S: tower::Service<HttpRequest<B>, Response = HttpResponse>,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Either<Ready<Result<HttpResponse, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest<B>) -> Self::Future {
        let upgrade = request.headers().contains_key(http::header::UPGRADE);
        if request.method() == http::Method::GET && !upgrade {
            let path = request.uri().path();
            let file = FILES.iter().find(|(p, _, _)| *p == path);
            let response = match (file, crate::health::probe(path, &self.shared)) {
                (_, Some(probe)) => http::Response::builder()
                    .status(probe.status)
                    .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .header(http::header::CACHE_CONTROL, "no-store")
                    .body(HttpBody::from(probe.body)),
                (Some((_, content_type, body)), None) => http::Response::builder()
                    .header(http::header::CONTENT_TYPE, *content_type)
                    .header(http::header::CACHE_CONTROL, "no-cache")
                    .body(HttpBody::from(*body)),
                (None, None) => http::Response::builder()
                    .status(http::StatusCode::NOT_FOUND)
                    .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .body(HttpBody::from(
                        "not found; the voice-room page is at /, JSON-RPC is a WebSocket or a POST here\n",
                    )),
            };
            return Either::Left(ready(Ok(response.expect("static headers are valid"))));
        }
        Either::Right(self.inner.call(request))
    }
}
