//! Same-run baselines for the worker's CPU per forwarded packet: what a thread on the
//! server CPUs spends to send one 150-byte loopback datagram. On loopback the sender's
//! CPU also runs the receive side (socket lookup, enqueue, the reader's wake-up), so
//! the fan-out baseline sends like the worker does, to many client sockets in turn,
//! each read by a task on a runtime like the load client's. Both use the loopback
//! address of the run's family (`127.0.0.1`, or `::1` with `--ipv6`).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::sys;
use crate::target::{self, Cpus};

/// Datagrams a baseline sends (the fan-out one at most, see [`fanout_sendmmsg`]).
const SENDS: usize = 50_000;
/// The size of an Opus packet as the load tool's speakers send it, sealed.
const DATAGRAM: usize = 150;
/// The worker's `sendmmsg` batch.
pub(super) const BATCH: usize = 32;
/// How long the fan-out baseline paces its sends at most.
const FANOUT_SECS: f64 = 0.5;

/// A thread on the server CPUs, pinned like the worker, with its CPU time so far.
fn pin_sender(cpus: &Cpus) -> impl Fn() -> Duration {
    let _ = sys::pin(0, &cpus.server);
    let tid = nix::unistd::gettid().as_raw();
    let pid = std::process::id();
    move || sys::thread_cpu(pid, tid)
}

/// How many times [`one_socket`] measures; it reports the median. One shot of
/// [`SENDS`] datagrams varied by a third between runs on a quiet machine.
const ONE_SOCKET_RUNS: usize = 5;

/// CPU time per datagram of sending a 150-byte datagram over loopback from a thread on
/// the server CPUs to ONE socket a blocking thread on the client CPUs drains: one
/// `sendto` each with `batch` 1, else `sendmmsg` calls of `batch` datagrams (the
/// worker's batches are 32). The target is in units of the latter. The median
/// of [`ONE_SOCKET_RUNS`] measurements, on the loopback address `ip`.
pub(super) fn one_socket(cpus: &Cpus, batch: usize, ip: IpAddr) -> anyhow::Result<f64> {
    let mut runs =
        (0..ONE_SOCKET_RUNS).map(|_| one_socket_once(cpus, batch, ip)).collect::<anyhow::Result<Vec<f64>>>()?;
    runs.sort_by(f64::total_cmp);
    Ok(runs[runs.len() / 2])
}

/// One measurement of [`one_socket`]: [`SENDS`] datagrams.
fn one_socket_once(cpus: &Cpus, batch: usize, ip: IpAddr) -> anyhow::Result<f64> {
    let rx = std::net::UdpSocket::bind((ip, 0))?;
    rx.set_read_timeout(Some(Duration::from_millis(200)))?;
    let to = rx.local_addr()?;
    let client = cpus.client.clone();
    let drain = std::thread::spawn(move || {
        let _ = sys::pin(0, &client);
        let mut buf = [0u8; 2048];
        while rx.recv_from(&mut buf).is_ok() {}
    });
    let cpus = cpus.clone();
    let sender = std::thread::spawn(move || -> anyhow::Result<f64> {
        let cpu = pin_sender(&cpus);
        let tx = std::net::UdpSocket::bind((ip, 0))?;
        let data = [0u8; DATAGRAM];
        let cpu0 = cpu();
        if batch <= 1 {
            for _ in 0..SENDS {
                let _ = tx.send_to(&data, to);
            }
        } else {
            sys::Batches::new(&[to], batch)?.send(&tx, &data, SENDS)?;
        }
        Ok(cpu().saturating_sub(cpu0).as_nanos() as f64 / SENDS as f64)
    });
    let ns = sender.join().map_err(|_| anyhow::anyhow!("baseline sender panicked"))??;
    let _ = drain.join();
    Ok(ns)
}

/// The fan-out baseline of one listener count.
#[derive(Clone, Copy, Debug)]
pub(super) struct FanoutSend {
    /// Sender CPU per datagram.
    pub(super) ns: f64,
    /// Client sockets, one datagram to each per round.
    pub(super) sockets: usize,
    /// Rounds per second (the fan-out's incoming packets per second).
    pub(super) rounds_per_s: f64,
    /// Datagrams sent while the sender's CPU was measured.
    pub(super) datagrams: usize,
    /// Of those (and one warm-up round), how many the client sockets' tasks read.
    pub(super) received: u64,
    pub(super) sent: u64,
}

/// CPU time per datagram of the fan-out's sends without its user-space work: 150-byte
/// datagrams in `sendmmsg` calls of 32 from a thread on the server CPUs to `sockets`
/// distinct client UDP sockets in round-robin order (consecutive datagrams go to
/// different sockets, as the worker's fan-out sends them), one round of `sockets`
/// datagrams per incoming packet at `rounds_per_s` (speakers × 50/s). The client
/// sockets are tokio `UdpSocket`s on a runtime like the load client's (same thread
/// count and CPU pinning), each read by a task that loops `recv_from`, as a listener's
/// socket is. Runs for at most [`FANOUT_SECS`] and [`SENDS`] datagrams after one
/// unmeasured warm-up round, on the loopback address `ip`. Blocks the calling thread.
pub(super) fn fanout_sendmmsg(
    cpus: &Cpus,
    sockets: usize,
    rounds_per_s: f64,
    ip: IpAddr,
) -> anyhow::Result<FanoutSend> {
    let cpus = cpus.clone();
    std::thread::spawn(move || fanout_run(&cpus, sockets, rounds_per_s, ip))
        .join()
        .map_err(|_| anyhow::anyhow!("fan-out baseline panicked"))?
}

fn fanout_run(cpus: &Cpus, sockets: usize, rounds_per_s: f64, ip: IpAddr) -> anyhow::Result<FanoutSend> {
    let sockets = sockets.max(1);
    let runtime = target::client_runtime(cpus, "bench-baseline").context("baseline runtime")?;
    let (ready, received) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicU64::new(0)));
    let mut to = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let socket = std::net::UdpSocket::bind((ip, 0)).context("client socket")?;
        socket.set_nonblocking(true)?;
        to.push(socket.local_addr()?);
        let (ready, received) = (ready.clone(), received.clone());
        runtime.spawn(async move {
            let Ok(socket) = tokio::net::UdpSocket::from_std(socket) else { return };
            ready.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 2048];
            while socket.recv_from(&mut buf).await.is_ok() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    wait_until(Duration::from_secs(10), || ready.load(Ordering::Relaxed) == sockets)
        .context("client sockets registered with the runtime")?;
    let cpu = pin_sender(cpus);
    let tx = std::net::UdpSocket::bind((ip, 0))?;
    let data = [0u8; DATAGRAM];
    let mut batches = sys::Batches::new(&to, BATCH)?;
    let period = Duration::from_secs_f64(1.0 / rounds_per_s.max(1.0));
    let rounds = SENDS.div_ceil(sockets).min((FANOUT_SECS * rounds_per_s.max(1.0)).ceil() as usize).max(1);
    batches.send(&tx, &data, sockets)?;
    let start = Instant::now() + period;
    let cpu0 = cpu();
    for r in 0..rounds {
        // Sleeping is not CPU time; it lets the readers idle between packets, as they
        // do between the fan-out's packets.
        if let Some(wait) = (start + period * r as u32).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        batches.send(&tx, &data, sockets)?;
    }
    let ns = cpu().saturating_sub(cpu0).as_nanos() as f64 / (rounds * sockets) as f64;
    let sent = ((rounds + 1) * sockets) as u64;
    // Whatever has not been read after a second was dropped by the kernel.
    let _ = wait_until(Duration::from_secs(1), || received.load(Ordering::Relaxed) >= sent);
    let received = received.load(Ordering::Relaxed);
    runtime.shutdown_background();
    Ok(FanoutSend { ns, sockets, rounds_per_s, datagrams: rounds * sockets, received, sent })
}

/// Polls `ok` until it holds or `timeout` passes.
fn wait_until(timeout: Duration, ok: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !ok() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
