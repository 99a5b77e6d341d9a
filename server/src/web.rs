//! The plain-HTTP side of the listen address: the voice-room demo page at `/` and the
//! OpenRPC document at `/openrpc.json`.
//!
//! The page (built from `sdk/examples/voice-room`, committed under its `dist/`) is
//! embedded in the binary, so `cargo run -p dspeak-server` and a browser are the whole
//! demo. The connection layer (`conn`) asks [`respond`] for every request that is not
//! a WebSocket upgrade; later HTTP routes go here.

use jsonrpsee::server::{HttpBody, HttpResponse};

/// The page's files: path, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", include_str!("../../sdk/examples/voice-room/dist/index.html")),
    ("/index.html", "text/html; charset=utf-8", include_str!("../../sdk/examples/voice-room/dist/index.html")),
    ("/app.js", "text/javascript; charset=utf-8", include_str!("../../sdk/examples/voice-room/dist/app.js")),
    ("/style.css", "text/css; charset=utf-8", include_str!("../../sdk/examples/voice-room/dist/style.css")),
];

/// Headers every answer carries: the page runs only its own scripts, talks only to
/// its own origin's WebSocket, and may use the microphone.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; \
         base-uri 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("permissions-policy", "microphone=(self)"),
];

/// The answer to a plain HTTP request (not a WebSocket upgrade).
pub(crate) fn respond(method: &http::Method, path: &str) -> HttpResponse {
    let found = if method == http::Method::GET || method == http::Method::HEAD {
        match path {
            "/openrpc.json" => Some(("application/json", crate::api::openrpc_document().get())),
            _ => FILES.iter().find(|(p, _, _)| *p == path).map(|(_, content_type, body)| (*content_type, *body)),
        }
    } else {
        None
    };
    let builder = SECURITY_HEADERS.iter().fold(http::Response::builder(), |b, (name, value)| b.header(*name, *value));
    let response = match found {
        Some((content_type, body)) => builder
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CACHE_CONTROL, "no-cache")
            .body(HttpBody::from(body)),
        None => builder
            .status(http::StatusCode::NOT_FOUND)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(HttpBody::from("not found; the voice-room page is at /, JSON-RPC is a WebSocket here\n")),
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
