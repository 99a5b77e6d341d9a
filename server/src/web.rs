//! The plain-HTTP side of the listen address: the voice-room demo page at `/`, the
//! OpenRPC document at `/openrpc.json` and the probes `/healthz` and `/readyz`.
//!
//! The page (built from `sdk/examples/voice-room`, committed under its `dist/`) is
//! embedded in the binary, so `cargo run -p dspeak-server` and a browser are the whole
//! demo. The connection layer (`conn`) asks [`respond`] for every `GET` or `HEAD`:
//! the page's files, `/openrpc.json` and the health probes (`health`); JSON-RPC POSTs
//! and WebSocket upgrades go to jsonrpsee.

use jsonrpsee::server::{HttpBody, HttpResponse};

use crate::Shared;
use crate::config::Environment;

/// The page's files: path, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", include_str!("../../sdk/examples/voice-room/dist/index.html")),
    ("/index.html", "text/html; charset=utf-8", include_str!("../../sdk/examples/voice-room/dist/index.html")),
    ("/app.js", "text/javascript; charset=utf-8", include_str!("../../sdk/examples/voice-room/dist/app.js")),
    ("/style.css", "text/css; charset=utf-8", include_str!("../../sdk/examples/voice-room/dist/style.css")),
];

/// The page's `Content-Security-Policy`: it runs only its own scripts and may use the
/// microphone. In development it may connect to any WebSocket server (the page's
/// `?server=ws://host:port`); in production only to its own origin.
fn content_security_policy(environment: Environment) -> &'static str {
    match environment {
        Environment::Development => {
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; \
             base-uri 'none'; frame-ancestors 'none'"
        }
        Environment::Production => {
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; \
             base-uri 'none'; frame-ancestors 'none'"
        }
    }
}

/// Headers every answer carries besides the content security policy.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("permissions-policy", "microphone=(self)"),
];

/// The answer to a plain HTTP request that is not a JSON-RPC POST: the page's files,
/// `/openrpc.json` and the probes for `GET`/`HEAD`, else 404.
pub(crate) fn respond(method: &http::Method, path: &str, shared: &Shared) -> HttpResponse {
    let csp = content_security_policy(shared.config.environment());
    let builder = SECURITY_HEADERS
        .iter()
        .fold(http::Response::builder().header("content-security-policy", csp), |b, (name, value)| {
            b.header(*name, *value)
        });
    let readable = method == http::Method::GET || method == http::Method::HEAD;
    let probe = readable.then(|| crate::health::probe(path, shared)).flatten();
    let file = match path {
        _ if !readable => None,
        "/openrpc.json" => Some(("application/json", crate::api::openrpc_document().get())),
        _ => FILES.iter().find(|(p, _, _)| *p == path).map(|(_, content_type, body)| (*content_type, *body)),
    };
    let response = match (probe, file) {
        (Some(probe), _) => builder
            .status(probe.status)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(http::header::CACHE_CONTROL, "no-store")
            .body(HttpBody::from(probe.body)),
        (None, Some((content_type, body))) => builder
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CACHE_CONTROL, "no-cache")
            .body(HttpBody::from(body)),
        (None, None) => builder
            .status(http::StatusCode::NOT_FOUND)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(HttpBody::from("not found; the voice-room page is at /, JSON-RPC is a WebSocket or a POST here\n")),
    };
    response.expect("static headers are valid")
}

/// A refusal of a WebSocket upgrade: `status` with a one-line reason.
pub(crate) fn refuse(status: http::StatusCode, reason: &str) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::from(format!("{reason}\n")));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
