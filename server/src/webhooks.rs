//! Webhooks: room and peer events POSTed to the application's backend.
//!
//! Sessions call [`Webhooks::emit`] right after a room change; it serializes the event
//! once, signs it and queues it for each receiver without waiting (a full queue drops
//! the event for that receiver, counts and logs it), so signaling never waits on a
//! receiver. Deliveries run on their own thread, each receiver in its own few lanes, so
//! a receiver that fails or hangs delays and loses only its own events; a room always
//! maps to the same lane, which delivers its events one at a time, so the events of one
//! room arrive in order. A failed delivery (a network error, 5xx, 408 or 429) is retried
//! with exponential backoff, at most [`MAX_TRIES`] times; any other 4xx is final.
//!
//! Each request carries `X-Dspeak-Signature: sha256=<hex>`, the HMAC-SHA256 of the raw
//! body keyed with the server's auth secret.
//!
//! At shutdown ([`Webhooks::close`]) the lanes take no more events, deliver what they
//! hold (the last members' `peerLeft` and `roomFinished` come as their connections
//! close) and end; the shutdown waits for that, up to the webhook timeout.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::hmac;
use dspeak_schema::ProducerId;
use dspeak_schema::admin::{WebhookEvent, WebhookEventKind};
use dspeak_schema::rooms::PeerInfo;
use tokio::sync::{mpsc, oneshot, watch};

use crate::StartError;
use crate::config::Config;

/// Tries per receiver and event before it is given up.
pub(crate) const MAX_TRIES: u32 = 5;

/// The signature header.
pub(crate) const SIGNATURE_HEADER: &str = "x-dspeak-signature";

/// Delivery lanes per receiver: a room's events all go through one, in order.
const LANES: usize = 4;

/// One signed event, ready to send.
#[derive(Debug)]
struct Delivery {
    id: String,
    body: String,
    signature: String,
}

/// The sending side: queues events for the delivery thread.
#[derive(Debug)]
pub(crate) struct Webhooks {
    /// `None` when no receiver is configured; else [`LANES`] per receiver, receiver
    /// by receiver.
    lanes: Option<Vec<mpsc::Sender<Arc<Delivery>>>>,
    key: Option<hmac::Key>,
    dropped: Arc<AtomicUsize>,
    /// Set at shutdown: the lanes deliver what they hold and end.
    closing: watch::Sender<bool>,
    /// Resolves when the delivery thread has ended (taken by [`Webhooks::close`]).
    ended: std::sync::Mutex<Option<oneshot::Receiver<()>>>,
    /// How long [`Webhooks::close`] waits for the queued events.
    flush: Duration,
}

impl Webhooks {
    /// Starts the delivery thread if `config` names receivers.
    pub(crate) fn start(config: &Config) -> Result<Self, StartError> {
        let dropped = Arc::new(AtomicUsize::new(0));
        let (closing, closed) = watch::channel(false);
        let flush = Duration::from_secs(config.webhook_timeout_secs.max(1));
        if config.webhook_urls.is_empty() {
            return Ok(Webhooks { lanes: None, key: None, dropped, closing, ended: Default::default(), flush });
        }
        let secret = config.auth_secret.as_ref().ok_or_else(|| {
            StartError::Config("--webhook-url needs --auth-secret: webhooks are signed with it".into())
        })?;
        let urls = config
            .webhook_urls
            .iter()
            .map(|u| {
                let url =
                    reqwest::Url::parse(u).map_err(|e| StartError::Config(format!("--webhook-url '{u}': {e}")))?;
                match url.scheme() {
                    "http" | "https" => Ok(url),
                    other => Err(StartError::Config(format!("--webhook-url '{u}': scheme {other} is not http(s)"))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.webhook_timeout_secs.max(1)))
            .build()
            .map_err(|e| StartError::Config(format!("webhook HTTP client: {e}")))?;
        let per_lane = (config.webhook_queue / LANES).max(1);
        let backoff = Duration::from_millis(config.webhook_retry_ms);
        let (mut senders, mut lanes) = (Vec::new(), Vec::new());
        for url in urls {
            for _ in 0..LANES {
                let (tx, rx) = mpsc::channel(per_lane);
                senders.push(tx);
                lanes.push((Lane { client: client.clone(), url: url.clone(), backoff }, rx));
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (ended_tx, ended) = oneshot::channel();
        std::thread::Builder::new().name("dspeak-webhooks".into()).spawn(move || {
            let lanes = lanes.into_iter().map(|(lane, rx)| lane.run(rx, closed.clone()));
            runtime.block_on(futures_util::future::join_all(lanes));
            let _ = ended_tx.send(());
        })?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
        let ended = std::sync::Mutex::new(Some(ended));
        Ok(Webhooks { lanes: Some(senders), key: Some(key), dropped, closing, ended, flush })
    }

    /// At shutdown: the lanes take no more events and deliver what they hold; waits
    /// until they did, or the webhook timeout passed (what is left then is dropped,
    /// and logged).
    pub(crate) async fn close(&self) {
        self.closing.send_replace(true);
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(ended) = ended else { return };
        if tokio::time::timeout(self.flush, ended).await.is_err() {
            tracing::warn!(waited_s = self.flush.as_secs(), "webhooks still undelivered at shutdown are dropped");
        }
    }

    /// Queues `event` of `room` for every receiver, without waiting.
    pub(crate) fn emit(
        &self,
        event: WebhookEventKind,
        room: &str,
        peer: Option<&PeerInfo>,
        producer_id: Option<&ProducerId>,
    ) {
        let (Some(lanes), Some(key)) = (&self.lanes, &self.key) else { return };
        let id = uuid::Uuid::new_v4().to_string();
        let body = WebhookEvent {
            event,
            room: room.to_owned(),
            peer: peer.cloned(),
            producer_id: producer_id.cloned(),
            created_at_ms: crate::unix_millis(),
            id: id.clone(),
        };
        let body = match serde_json::to_string(&body) {
            Ok(body) => body,
            Err(e) => {
                // Plain strings and numbers: this cannot happen.
                tracing::error!(error = %e, "webhook event does not serialize");
                return;
            }
        };
        let signature = signature(key, body.as_bytes());
        let mut h = rustc_hash::FxHasher::default();
        room.hash(&mut h);
        let lane = (h.finish() % LANES as u64) as usize;
        let delivery = Arc::new(Delivery { id, body, signature });
        for receiver in lanes.chunks(LANES) {
            if receiver[lane].try_send(delivery.clone()).is_err() {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(room, ?event, dropped, "webhook queue of a receiver full: event dropped for it");
            }
        }
    }

    /// Events dropped because the queue was full.
    pub(crate) fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body`.
fn signature(key: &hmac::Key, body: &[u8]) -> String {
    let tag = hmac::sign(key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// One delivery lane: sends its events one at a time.
#[derive(Clone, Debug)]
struct Lane {
    client: reqwest::Client,
    url: reqwest::Url,
    backoff: Duration,
}

impl Lane {
    /// Delivers the lane's events until `closing` is set and what it held is sent.
    async fn run(self, mut rx: mpsc::Receiver<Arc<Delivery>>, mut closing: watch::Receiver<bool>) {
        let mut closed = false;
        loop {
            tokio::select! {
                delivery = rx.recv() => {
                    // `None` only once closed and empty.
                    let Some(delivery) = delivery else { return };
                    self.deliver(&delivery).await;
                }
                _ = closing.wait_for(|&c| c), if !closed => {
                    // No new events; what is queued is still received.
                    rx.close();
                    closed = true;
                }
            }
        }
    }

    /// POSTs one event to the lane's receiver, retrying with exponential backoff what
    /// may succeed later (no answer, 5xx, 408, 429).
    async fn deliver(&self, d: &Delivery) {
        let url = &self.url;
        for attempt in 0..MAX_TRIES {
            if attempt > 0 {
                tokio::time::sleep(self.backoff * 2u32.pow(attempt - 1)).await;
            }
            let sent = self
                .client
                .post(url.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, &d.signature)
                .body(d.body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return,
                Ok(r) if r.status().is_client_error() && !matches!(r.status().as_u16(), 408 | 429) => {
                    tracing::warn!(%url, id = d.id, status = %r.status(), "webhook refused by the receiver; not retried");
                    return;
                }
                Ok(r) => tracing::debug!(%url, id = d.id, attempt, status = %r.status(), "webhook refused"),
                Err(e) => tracing::debug!(%url, id = d.id, attempt, error = %e, "webhook failed"),
            }
        }
        tracing::warn!(%url, id = d.id, tries = MAX_TRIES, "webhook given up");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
