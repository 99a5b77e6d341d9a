//! Prometheus metrics, in the text exposition format, for `--metrics-listen`.
//!
//! Two kinds of numbers. Request metrics ([`Metrics`]: requests by method and code,
//! their durations, evictions) are counted as they happen, off the media path. Live
//! counts (sessions, rooms, transports…), the media workers' packet totals and
//! process figures are read at scrape time from what the server already keeps: the
//! per-packet path pays nothing for monitoring beyond its workers' own counters
//! (`media::traffic`).

use std::borrow::Cow;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dspeak_schema::{EVENTS, METHODS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Shared;
use dspeak_media::{DropReason, TrafficSnapshot};

/// `Content-Type` of a scrape answer.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type RpcLabels = [(&'static str, Cow<'static, str>); 2];
type MethodLabel = [(&'static str, &'static str); 1];

/// Metrics counted as things happen.
#[derive(Debug)]
pub(crate) struct Metrics {
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_duration: Family<MethodLabel, Histogram, fn() -> Histogram>,
    evictions: Counter,
    /// CPU time of each worker at the previous scrape, for its busy ratio.
    worker_cpu: Mutex<Vec<CpuSample>>,
}

#[derive(Clone, Copy, Debug)]
struct CpuSample {
    at: Instant,
    seconds: f64,
    ratio: f64,
}

/// Scrapes closer together than this reuse the previous busy ratio.
const MIN_RATIO_WINDOW: Duration = Duration::from_secs(1);

impl Default for Metrics {
    fn default() -> Self {
        fn histogram() -> Histogram {
            // 0.25 ms … ~4 s.
            Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
        }
        Metrics {
            rpc_requests: Family::default(),
            rpc_duration: Family::new_with_constructor(histogram),
            evictions: Counter::default(),
            worker_cpu: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Counts one answered request. `method` comes from [`known_method`]; `code` is the
    /// JSON-RPC error code, `None` for a result.
    pub(crate) fn rpc(&self, method: &'static str, code: Option<i32>, elapsed: Duration) {
        let code = match code {
            None => Cow::Borrowed("ok"),
            Some(c) => Cow::Owned(c.to_string()),
        };
        self.rpc_requests.get_or_create(&[("method", Cow::Borrowed(method)), ("code", code)]).inc();
        self.rpc_duration.get_or_create(&[("method", method)]).observe(elapsed.as_secs_f64());
    }

    /// Counts one session evicted for not reading its events.
    pub(crate) fn evicted(&self) {
        self.evictions.inc();
    }

    /// The scrape answer: every metric in the Prometheus text format.
    pub(crate) fn render(&self, shared: &Shared) -> String {
        let mut registry = Registry::default();
        registry.register(
            "dspeak_rpc_requests",
            "JSON-RPC requests answered, by method and code (ok or the error code)",
            self.rpc_requests.clone(),
        );
        registry.register(
            "dspeak_rpc_duration_seconds",
            "Time from a request's arrival to its answer, by method",
            self.rpc_duration.clone(),
        );
        registry.register(
            "dspeak_event_queue_evictions",
            "Sessions evicted from their room because their event queue overflowed",
            self.evictions.clone(),
        );
        registry.register_collector(Box::new(self.live(shared)));
        let mut out = String::new();
        // Writing to a `String` cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }

    /// Reads the live figures now.
    fn live(&self, shared: &Shared) -> Live {
        let counts = shared.counts();
        let workers: Vec<WorkerLive> = shared
            .engine
            .workers()
            .into_iter()
            .map(|w| WorkerLive {
                index: w.index.to_string(),
                rooms: w.rooms,
                transports: w.transports,
                producers: w.producers,
                consumers: w.consumers,
                traffic: w.traffic,
                send_drops: w.send_drops,
                cpu_seconds: w.thread_id.and_then(process::thread_cpu_seconds),
                busy_ratio: None,
            })
            .collect();
        let mut live = Live { counts, workers, process: process::stats() };
        self.busy_ratios(&mut live.workers);
        live
    }

    /// Each worker's share of one core since the previous scrape (at least
    /// [`MIN_RATIO_WINDOW`] ago).
    fn busy_ratios(&self, workers: &mut [WorkerLive]) {
        let now = Instant::now();
        let mut samples = self.worker_cpu.lock().unwrap_or_else(|e| e.into_inner());
        samples.resize(workers.len(), CpuSample { at: now, seconds: 0.0, ratio: 0.0 });
        for (w, sample) in workers.iter_mut().zip(samples.iter_mut()) {
            let Some(seconds) = w.cpu_seconds else { continue };
            let window = now.duration_since(sample.at);
            if window >= MIN_RATIO_WINDOW {
                let ratio = (seconds - sample.seconds) / window.as_secs_f64();
                *sample = CpuSample { at: now, seconds, ratio: ratio.clamp(0.0, 1.0) };
            } else if sample.seconds == 0.0 {
                sample.seconds = seconds;
            }
            w.busy_ratio = Some(sample.ratio);
        }
    }
}

/// The method label of a request: its wire name, or `other` for names the API does not
/// have, so clients cannot grow the label set.
pub(crate) fn known_method(name: &str) -> &'static str {
    let extra = [EVENTS.subscribe, EVENTS.unsubscribe, "rpc.discover"];
    METHODS.iter().map(|m| m.name).chain(extra).find(|m| *m == name).unwrap_or("other")
}

/// Figures read at scrape time.
#[derive(Debug)]
struct Live {
    counts: crate::Counts,
    workers: Vec<WorkerLive>,
    process: Option<process::Stats>,
}

#[derive(Debug)]
struct WorkerLive {
    index: String,
    rooms: usize,
    transports: usize,
    producers: usize,
    consumers: usize,
    traffic: TrafficSnapshot,
    send_drops: u64,
    cpu_seconds: Option<f64>,
    busy_ratio: Option<f64>,
}

/// Writes one metric: a descriptor and its samples.
fn write<'a, L: prometheus_client::encoding::EncodeLabelSet + 'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, f64)>,
    unlabelled: Option<f64>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    let encode = |m: &mut prometheus_client::encoding::MetricEncoder, v: f64| match kind {
        MetricType::Counter => m.encode_counter::<NoLabelSet, _, f64>(&v, None),
        _ => m.encode_gauge(&v),
    };
    if let Some(v) = unlabelled {
        encode(&mut metric, v)?;
    }
    for (labels, v) in samples {
        encode(&mut metric.encode_family(&labels)?, v)?;
    }
    Ok(())
}

impl Collector for Live {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let none = std::iter::empty::<([(&str, &str); 0], f64)>;
        let c = &self.counts;
        write(
            &mut e,
            "dspeak_sessions",
            "Open sessions (WebSocket connections)",
            Gauge,
            none(),
            Some(c.sessions as f64),
        )?;
        write(
            &mut e,
            "dspeak_sessions_detached",
            "Sessions whose connection dropped, waiting for a resume (--resume-grace)",
            Gauge,
            none(),
            Some(c.detached as f64),
        )?;
        write(&mut e, "dspeak_peers", "Peers joined to a room", Gauge, none(), Some(c.peers as f64))?;
        let per_worker = |f: fn(&WorkerLive) -> f64| {
            self.workers.iter().map(move |w| ([("worker", w.index.as_str())], f(w))).collect::<Vec<_>>()
        };
        write(&mut e, "dspeak_rooms", "Rooms, by media worker", Gauge, per_worker(|w| w.rooms as f64), None)?;
        write(&mut e, "dspeak_transports", "WebRTC transports", Gauge, per_worker(|w| w.transports as f64), None)?;
        write(&mut e, "dspeak_producers", "Producers", Gauge, per_worker(|w| w.producers as f64), None)?;
        write(&mut e, "dspeak_consumers", "Consumers", Gauge, per_worker(|w| w.consumers as f64), None)?;
        let traffic = |f: fn(&TrafficSnapshot) -> u64| per_worker_u64(&self.workers, f);
        write(
            &mut e,
            "dspeak_rtp_packets_received",
            "RTP packets received from producers",
            Counter,
            traffic(|t| t.packets_received),
            None,
        )?;
        write(
            &mut e,
            "dspeak_rtp_packets_sent",
            "RTP packets sent to consumers",
            Counter,
            traffic(|t| t.packets_sent),
            None,
        )?;
        write(
            &mut e,
            "dspeak_rtp_bytes_received",
            "RTP payload bytes received from producers",
            Counter,
            traffic(|t| t.bytes_received),
            None,
        )?;
        write(
            &mut e,
            "dspeak_rtp_bytes_sent",
            "RTP payload bytes sent to consumers",
            Counter,
            traffic(|t| t.bytes_sent),
            None,
        )?;
        write(
            &mut e,
            "dspeak_rtp_packets_handed_over",
            "Producer packets handed to other workers with consumers of them (one per worker)",
            Counter,
            traffic(|t| t.handed_over),
            None,
        )?;
        let dropped = self.workers.iter().flat_map(|w| {
            DropReason::ALL.iter().map(move |r| {
                ([("worker", w.index.as_str()), ("reason", r.label())], w.traffic.dropped[*r as usize] as f64)
            })
        });
        write(
            &mut e,
            "dspeak_rtp_packets_dropped",
            "RTP packets not forwarded (per consumer where it applies), by reason",
            Counter,
            dropped,
            None,
        )?;
        write(
            &mut e,
            "dspeak_media_send_drops",
            "Media datagrams and ICE-TCP frames dropped because the send buffer or queue was full",
            Counter,
            per_worker(|w| w.send_drops as f64),
            None,
        )?;
        let cpu = self.workers.iter().filter_map(|w| Some(([("worker", w.index.as_str())], w.cpu_seconds?)));
        write(&mut e, "dspeak_worker_cpu_seconds", "CPU time of each media worker thread", Counter, cpu, None)?;
        let busy = self.workers.iter().filter_map(|w| Some(([("worker", w.index.as_str())], w.busy_ratio?)));
        write(
            &mut e,
            "dspeak_worker_busy_ratio",
            "Share of one core each media worker used since the previous scrape",
            Gauge,
            busy,
            None,
        )?;
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        write(&mut e, "dspeak_build_info", "Build information (always 1)", Gauge, [(version, 1.0)], None)?;
        if let Some(p) = &self.process {
            write(
                &mut e,
                "process_cpu_seconds",
                "User and system CPU time of the process",
                Counter,
                none(),
                Some(p.cpu_seconds),
            )?;
            write(&mut e, "process_resident_memory_bytes", "Resident memory", Gauge, none(), Some(p.resident_bytes))?;
            write(&mut e, "process_open_fds", "Open file descriptors", Gauge, none(), Some(p.open_fds))?;
            if let Some(start) = p.start_time_seconds {
                write(
                    &mut e,
                    "process_start_time_seconds",
                    "Start time, seconds since the Unix epoch",
                    Gauge,
                    none(),
                    Some(start),
                )?;
            }
        }
        Ok(())
    }
}

fn per_worker_u64(workers: &[WorkerLive], f: fn(&TrafficSnapshot) -> u64) -> Vec<([(&'static str, &str); 1], f64)> {
    workers.iter().map(|w| ([("worker", w.index.as_str())], f(&w.traffic) as f64)).collect()
}

/// Process figures from `/proc` (Linux; elsewhere none).
mod process {
    /// What a scrape reports about the process.
    #[derive(Debug)]
    pub(super) struct Stats {
        pub(super) cpu_seconds: f64,
        pub(super) resident_bytes: f64,
        pub(super) open_fds: f64,
        pub(super) start_time_seconds: Option<f64>,
    }

    #[cfg(target_os = "linux")]
    pub(super) fn stats() -> Option<Stats> {
        let stat = Stat::read("/proc/self/stat")?;
        let tick = ticks_per_second()?;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<f64>().ok()));
        Some(Stats {
            cpu_seconds: stat.cpu_ticks() / tick,
            resident_bytes: stat.field(24)? * page as f64,
            open_fds,
            start_time_seconds: boot.zip(stat.field(22)).map(|(boot, start)| boot + start / tick),
        })
    }

    /// CPU time (user + system) of one thread of this process.
    #[cfg(target_os = "linux")]
    pub(super) fn thread_cpu_seconds(tid: i32) -> Option<f64> {
        Some(Stat::read(&format!("/proc/self/task/{tid}/stat"))?.cpu_ticks() / ticks_per_second()?)
    }

    #[cfg(target_os = "linux")]
    fn ticks_per_second() -> Option<f64> {
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()?.map(|t| t as f64)
    }

    /// A `/proc/…/stat` line, split after the command name (which may hold spaces).
    #[cfg(target_os = "linux")]
    struct Stat(Vec<String>);

    #[cfg(target_os = "linux")]
    impl Stat {
        fn read(path: &str) -> Option<Stat> {
            let text = std::fs::read_to_string(path).ok()?;
            let rest = &text[text.rfind(')')? + 1..];
            Some(Stat(rest.split_whitespace().map(str::to_owned).collect()))
        }

        /// Field `n` as numbered in proc(5) (1 is the pid, 3 the state).
        fn field(&self, n: usize) -> Option<f64> {
            self.0.get(n.checked_sub(3)?)?.parse().ok()
        }

        fn cpu_ticks(&self) -> f64 {
            self.field(14).unwrap_or(0.0) + self.field(15).unwrap_or(0.0)
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn stats() -> Option<Stats> {
        None
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn thread_cpu_seconds(_tid: i32) -> Option<f64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(known_method("join"), "join");
        assert_eq!(known_method("subscribeEvents"), "subscribeEvents");
        assert_eq!(known_method("no-such-method-7"), "other");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_figures_are_read() {
        let s = process::stats().expect("/proc is readable");
        assert!(s.resident_bytes > 1e6, "{s:?}");
        assert!(s.open_fds >= 3.0, "{s:?}");
        assert!(s.start_time_seconds.is_some_and(|t| t > 1e9), "{s:?}");
    }
}
