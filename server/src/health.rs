//! Health and readiness probes, answered on the main listener and on the metrics
//! listener alike.
//!
//! `GET /healthz` is 200 while the process serves. `GET /readyz` is 200 when every
//! media worker runs, the server is not draining and (in cluster mode) its last
//! heartbeat reached Redis, else 503 with a one-line reason,
//! so an orchestrator sends no new calls to a server about to stop.

use crate::Shared;

/// A probe's answer: HTTP status and a one-line body.
pub(crate) struct Probe {
    pub(crate) status: http::StatusCode,
    pub(crate) body: String,
}

/// The answer to `GET path` if `path` is a probe.
pub(crate) fn probe(path: &str, shared: &Shared) -> Option<Probe> {
    let answer = |status, body: String| Some(Probe { status, body });
    match path {
        "/healthz" => answer(http::StatusCode::OK, "ok\n".into()),
        "/readyz" => match not_ready(shared) {
            None => answer(http::StatusCode::OK, "ready\n".into()),
            Some(reason) => answer(http::StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
        },
        _ => None,
    }
}

/// Why the server should get no new calls, if it should not.
fn not_ready(shared: &Shared) -> Option<String> {
    if shared.drain.is_draining() {
        return Some("draining, existing calls continue and new joins are refused".into());
    }
    if shared.cluster.as_ref().is_some_and(|c| c.redis_unreachable()) {
        return Some("cluster: Redis unreachable, open rooms continue and new rooms are refused".into());
    }
    let down: Vec<String> =
        shared.engine.workers().iter().filter(|w| !w.running).map(|w| w.index.to_string()).collect();
    (!down.is_empty()).then(|| format!("media worker {} is down", down.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn readiness_follows_the_workers_and_the_drain() {
        let config = Config::for_tests();
        let engine = dspeak_media::Engine::start(&crate::engine_config(&config).expect("a valid config"))
            .expect("engine starts");
        let webhooks = crate::webhooks::Webhooks::start(&config).expect("no webhooks configured");
        let shared = Shared {
            config,
            rooms: Default::default(),
            engine,
            counts: Default::default(),
            metrics: Default::default(),
            drain: Default::default(),
            webhooks,
            resume_tokens: Default::default(),
            cluster: None,
        };
        let ready = probe("/readyz", &shared).unwrap();
        assert_eq!((ready.status, ready.body.as_str()), (http::StatusCode::OK, "ready\n"));
        assert!(probe("/elsewhere", &shared).is_none());

        shared.engine.stop(); // waits for the worker threads to end
        let down = probe("/readyz", &shared).unwrap();
        assert_eq!(down.status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(down.body, "not ready: media worker 0 is down\n");
        assert_eq!(probe("/healthz", &shared).unwrap().status, http::StatusCode::OK);

        shared.drain.start(0);
        assert!(probe("/readyz", &shared).unwrap().body.contains("draining"));
    }
}
