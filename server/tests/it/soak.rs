//! Soak: thousands of join / createTransport / produce / consume / disconnect cycles
//! with random abrupt disconnects; afterwards every count is zero and memory is flat.

use std::time::Duration;

use dspeak_schema::client::{CallExt, DspeakClient};
use dspeak_schema::media::{
    ConnectTransportParams, ConsumeParams, ConsumerParams, CreateTransportParams, Direction, ProduceParams,
};
use dspeak_schema::rooms::JoinParams;
use dspeak_server::{Config, Counts};

use crate::support::*;

/// Resident memory of this process (the server runs in it), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One cycle: two peers in a fresh room, one produces, the other consumes; then they
/// go in one of four ways, chosen by `seed`.
async fn cycle(
    url: &str,
    seed: u64,
    produce: &ProduceParams,
    consume: &ConsumeParams,
    connect: &ConnectTransportParams,
) {
    let room = format!("soak-{seed}");
    let a = dspeak_schema::client::connect(url).await.unwrap();
    let b = dspeak_schema::client::connect(url).await.unwrap();
    let _events = a.subscribe_events().await.unwrap();
    let join = |name: &str| JoinParams { room: room.clone(), display_name: name.into(), token: None };
    a.join(join("a")).await.unwrap();
    b.join(join("b")).await.unwrap();
    let send = a.create_transport(CreateTransportParams { direction: Direction::Send }).await.unwrap();
    let mut connect = connect.clone();
    connect.transport_id = send.id.clone();
    a.connect_transport(connect).await.unwrap();
    let mut p = produce.clone();
    p.transport_id = send.id;
    let producer = a.produce(p).await.unwrap();
    let recv = b.create_transport(CreateTransportParams { direction: Direction::Recv }).await.unwrap();
    let mut c = consume.clone();
    c.transport_id = recv.id;
    c.producer_id = producer.id;
    let consumer = b.consume(c).await.unwrap();
    b.resume_consumer(ConsumerParams { consumer_id: consumer.id }).await.unwrap();
    match seed % 4 {
        0 => {
            a.leave().await.unwrap();
            b.leave().await.unwrap();
        }
        1 => drop(a), // the producer vanishes mid-call
        2 => drop(b), // the consumer vanishes mid-call
        _ => {
            // Both vanish without a word, with a request in flight.
            let pending = b.ping();
            drop(a);
            drop(pending);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_abrupt_cycles_leave_nothing_behind() {
    let cycles: u64 = std::env::var("DSPEAK_SOAK_CYCLES").ok().and_then(|n| n.parse().ok()).unwrap_or(1200);
    let mut config = Config::for_tests();
    config.limits.request_rate = 100_000;
    let server = spawn_server_with(config).await;
    let url = server.url();
    let produce: ProduceParams =
        serde_json::from_value(fixture("pymediasoup-1.5-aiortc-1.16/produce.params.json")).unwrap();
    let consume: ConsumeParams =
        serde_json::from_value(fixture("chromium-mediasoup-client-3.24/consume.params.json")).unwrap();
    let connect: ConnectTransportParams =
        serde_json::from_value(fixture("pymediasoup-1.5-aiortc-1.16/connectTransport.params.json")).unwrap();

    let run = |from: u64, to: u64| {
        let (url, produce, consume, connect) = (url.clone(), produce.clone(), consume.clone(), connect.clone());
        async move {
            let concurrency = 16;
            let mut tasks = tokio::task::JoinSet::new();
            for seed in from..to {
                if tasks.len() >= concurrency {
                    tasks.join_next().await.unwrap().unwrap();
                }
                let (url, produce, consume, connect) = (url.clone(), produce.clone(), consume.clone(), connect.clone());
                tasks.spawn(async move { cycle(&url, seed, &produce, &consume, &connect).await });
            }
            while let Some(r) = tasks.join_next().await {
                r.unwrap();
            }
        }
    };
    let settle = |what: &'static str| server.wait_counts(what, |c| *c == Counts::default());

    // Warm up (allocator pools, caches), then measure memory across the rest.
    let warmup = cycles / 4;
    run(0, warmup).await;
    settle("warm-up released").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();
    run(warmup, cycles).await;
    settle("every cycle released").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_kib();
    let growth = after.saturating_sub(before);
    println!("soak: {cycles} cycles; RSS {before} KiB after warm-up, {after} KiB at the end (+{growth} KiB)");
    assert!(growth < 16 * 1024, "memory grew by {growth} KiB over {} cycles", cycles - warmup);
}
