//! `cluster-join`: how long a client takes from opening its WebSocket to its `join`
//! answer, on a single node (no Redis) and in cluster mode against a real
//! `redis-server`: on the node that hosts the room, and on another node (`wrongNode`,
//! then a new connection to the owner and `join` again). The three are measured in
//! the same run, interleaved sample by sample.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use dspeak_schema::client::{DspeakClient, connect, wrong_node};
use dspeak_schema::rooms::JoinParams;
use jsonrpsee::ws_client::WsClient;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::report::{Report, Spread, ms, percentile};
use crate::target::{Cpus, Running, bench_config, dspeak_in_process};

/// `redis-server` on a free loopback port, without persistence; killed on drop.
struct Redis {
    _child: Child,
    url: String,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn redis() -> anyhow::Result<Redis> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting redis-server (apt-get install -y redis-server)")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        ensure!(Instant::now() < deadline, "redis-server does not listen on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Redis { _child: child, url: format!("redis://127.0.0.1:{port}/0") })
}

/// A cluster node in this process, listening on a port chosen first for its node URL.
async fn node(redis: &Redis, cpus: &Cpus) -> anyhow::Result<Running> {
    let port = free_port()?;
    let mut config = bench_config(1_000);
    config.listen = ([127, 0, 0, 1], port).into();
    config.cluster.redis_url = Some(redis.url.clone());
    config.cluster.node_url = Some(format!("ws://127.0.0.1:{port}"));
    dspeak_in_process(config, cpus).await
}

fn params(room: &str) -> JoinParams {
    JoinParams { room: room.into(), display_name: "bench".into(), token: None }
}

/// A measured join: the time taken, the redirects followed, the client (still joined)
/// and the URL of the node it joined on.
struct Joined {
    took: Duration,
    hops: usize,
    client: WsClient,
    url: String,
}

/// Connects to `url` and joins `room`, following `wrongNode`.
async fn timed_join(url: &str, room: &str) -> anyhow::Result<Joined> {
    let started = Instant::now();
    let mut url = url.to_owned();
    for hops in 0..=3 {
        let client = connect(&url).await?;
        match client.join(params(room)).await {
            Ok(_) => return Ok(Joined { took: started.elapsed(), hops, client, url }),
            Err(e) => match wrong_node(&e) {
                Some(moved) => url = moved.url,
                None => bail!("join {room}: {e}"),
            },
        }
    }
    bail!("join {room}: more than 3 redirects")
}

/// One measured way of joining.
struct Case {
    name: &'static str,
    samples: Vec<Duration>,
    hops: usize,
}

pub(crate) async fn cluster_join(cpus: &Cpus, rooms: usize, runs: usize) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "cluster-join",
        &["setup", "redirects", "p50 ms (median of runs)", "p95 ms (median of runs)", "max ms (median of runs)"],
    );
    let mut per_case: Vec<(&'static str, usize, Vec<[f64; 3]>)> = Vec::new();
    for _ in 0..runs {
        let redis = redis().await?;
        let single = dspeak_in_process(bench_config(1_000), cpus).await?;
        let nodes = [node(&redis, cpus).await?, node(&redis, cpus).await?];
        // Both nodes registered (each beats when it starts).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut cases = [
            Case { name: "single node (no Redis)", samples: Vec::new(), hops: 0 },
            Case { name: "cluster, on the room's node", samples: Vec::new(), hops: 0 },
            Case { name: "cluster, on another node (wrongNode → owner)", samples: Vec::new(), hops: 0 },
        ];
        let mut held = Vec::new();
        for i in 0..rooms {
            // A member holds each room, so every measured join is into an existing room
            // (placed on the less loaded node).
            let room = format!("bench-{i}");
            let holder = timed_join(&nodes[i % 2].url, &room).await?;
            let owner = holder.url.clone();
            let other = nodes.iter().map(|n| n.url.clone()).find(|u| *u != owner).context("two nodes")?;
            held.push(holder.client);
            held.push(timed_join(&single.url, &room).await?.client);
            for (case, url) in cases.iter_mut().zip([&single.url, &owner, &other]) {
                let joined = timed_join(url, &room).await?;
                ensure!(*url == *other || joined.hops == 0, "{room}: a join on its node is not redirected");
                case.samples.push(joined.took);
                case.hops = case.hops.max(joined.hops);
            }
        }
        drop(held);
        for case in &cases {
            let mut sorted = case.samples.clone();
            sorted.sort();
            let figures =
                [ms(percentile(&sorted, 50.0)), ms(percentile(&sorted, 95.0)), ms(percentile(&sorted, 100.0))];
            match per_case.iter_mut().find(|(name, _, _)| *name == case.name) {
                Some((_, _, runs)) => runs.push(figures),
                None => per_case.push((case.name, case.hops, vec![figures])),
            }
        }
        let [a, b] = nodes;
        for running in [single, a, b] {
            running.stop().await;
        }
    }
    for (name, hops, runs) in per_case {
        let spread = |k: usize| Spread::of(&runs.iter().map(|f| f[k]).collect::<Vec<_>>());
        let (p50, p95, max) = (spread(0), spread(1), spread(2));
        report.row(
            vec![name.to_owned(), hops.to_string(), p50.show(2), p95.show(2), max.show(2)],
            json!({ "setup": name, "redirects": hops, "p50_ms": p50.json(), "p95_ms": p95.json(), "max_ms": max.json() }),
        );
    }
    report.note(format!(
        "{rooms} joins per setup and run, one at a time, interleaved (single, owner, other) into rooms \
         that already have a member; the clock runs from opening the WebSocket to the `join` answer \
         (with a redirect: both connections and both joins); {}",
        cpus.describe()
    ));
    Ok(report)
}
