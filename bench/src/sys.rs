//! Linux process facts the benchmarks need: CPU pinning, the fd limit, CPU time of
//! threads and processes (`schedstat`), memory (`VmRSS`) and kernel UDP drop counters.

use std::time::Duration;

use anyhow::Context;
use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::unistd::Pid;

/// Number of online CPUs (of the machine, whatever this thread is pinned to).
pub(crate) fn cpus() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .map(|n| n.max(1) as usize)
        .unwrap_or(1)
}

/// Pins a thread or process (`tid` 0 = the calling thread) to the given CPUs.
pub(crate) fn pin(tid: i32, cpus: &[usize]) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).context("cpu index")?;
    }
    sched_setaffinity(Pid::from_raw(tid), &set).context("sched_setaffinity")
}

/// Pins every thread of a process (all its tasks) to `cpus`.
pub(crate) fn pin_process(pid: u32, cpus: &[usize]) -> anyhow::Result<()> {
    for tid in tasks(pid) {
        let _ = pin(tid, cpus);
    }
    Ok(())
}

/// Raises the soft (and, as root, hard) open-files limit to at least `want`.
pub(crate) fn raise_fd_limit(want: u64) -> anyhow::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= want {
        return Ok(soft);
    }
    let new_hard = hard.max(want);
    if setrlimit(Resource::RLIMIT_NOFILE, want, new_hard).is_err() {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        return Ok(hard);
    }
    Ok(want)
}

/// Thread ids of a process.
pub(crate) fn tasks(pid: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Thread ids of this process whose name (`comm`) starts with `prefix`.
pub(crate) fn own_threads(prefix: &str) -> Vec<i32> {
    named_threads(std::process::id(), prefix)
}

/// Thread ids of process `pid` whose name (`comm`) starts with `prefix`.
pub(crate) fn named_threads(pid: u32, prefix: &str) -> Vec<i32> {
    tasks(pid)
        .into_iter()
        .filter(|tid| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with(prefix))
        })
        .collect()
}

/// CPU time a thread of process `pid` has run (from `schedstat`, nanoseconds).
pub(crate) fn thread_cpu(pid: u32, tid: i32) -> Duration {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// CPU time of threads of this process, summed.
pub(crate) fn threads_cpu(tids: &[i32]) -> Duration {
    let pid = std::process::id();
    tids.iter().map(|&t| thread_cpu(pid, t)).sum()
}

/// CPU time of a whole process (all its threads, live ones), summed.
pub(crate) fn process_cpu(pid: u32) -> Duration {
    tasks(pid).into_iter().map(|t| thread_cpu(pid, t)).sum()
}

/// Resident set size of a process, in bytes.
pub(crate) fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

/// The kernel's UDP counters (`/proc/net/snmp`): receive-buffer and send-buffer drops.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UdpDrops {
    pub(crate) rcvbuf_errors: u64,
    pub(crate) sndbuf_errors: u64,
}

impl UdpDrops {
    pub(crate) fn read() -> UdpDrops {
        let Ok(text) = std::fs::read_to_string("/proc/net/snmp") else {
            return UdpDrops::default();
        };
        let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return UdpDrops::default();
        };
        let mut drops = UdpDrops::default();
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            let v = v.parse().unwrap_or(0);
            match n {
                "RcvbufErrors" => drops.rcvbuf_errors = v,
                "SndbufErrors" => drops.sndbuf_errors = v,
                _ => {}
            }
        }
        drops
    }

    pub(crate) fn since(self, before: UdpDrops) -> UdpDrops {
        UdpDrops {
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(before.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(before.sndbuf_errors),
        }
    }
}

/// The 1-minute load average.
pub(crate) fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0.0)
}

/// The CPU model name.
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `sendmmsg(2)` calls of up to `batch` datagrams, each datagram to the next of a list
/// of destinations in round-robin order: the worker's batched sends (one to each
/// consumer's client in turn), and with one destination the one-socket baseline.
pub(crate) struct Batches {
    headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
    /// The destinations, then their first `batch` again, so that the `batch`
    /// destinations from any position on are one slice.
    addrs: Vec<Option<nix::sys::socket::SockaddrStorage>>,
    destinations: usize,
    batch: usize,
    /// Where the next datagram goes.
    next: usize,
}

impl Batches {
    pub(crate) fn new(to: &[std::net::SocketAddr], batch: usize) -> anyhow::Result<Batches> {
        use nix::sys::socket::{MultiHeaders, SockaddrStorage};
        anyhow::ensure!(!to.is_empty() && batch > 0, "sendmmsg batches need a destination and a batch size");
        let addrs = to.iter().cycle().take(to.len() + batch).map(|a| Some(SockaddrStorage::from(*a))).collect();
        Ok(Batches { headers: MultiHeaders::preallocate(batch, None), addrs, destinations: to.len(), batch, next: 0 })
    }

    /// Sends `total` copies of `data`, going on with the destinations where the last
    /// call stopped.
    pub(crate) fn send(&mut self, socket: &std::net::UdpSocket, data: &[u8], total: usize) -> anyhow::Result<()> {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmmsg};
        use std::io::IoSlice;
        use std::os::fd::AsRawFd;
        let slices: Vec<[IoSlice<'_>; 1]> = (0..self.batch).map(|_| [IoSlice::new(data)]).collect();
        let no_control: [ControlMessage<'_>; 0] = [];
        let mut sent = 0;
        while sent < total {
            let n = self.batch.min(total - sent);
            let to = &self.addrs[self.next..self.next + n];
            let done = sendmmsg(socket.as_raw_fd(), &mut self.headers, &slices[..n], to, no_control, MsgFlags::empty())
                .context("sendmmsg")?
                .count()
                .max(1);
            sent += done;
            self.next = (self.next + done) % self.destinations;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::Duration;

    use super::Batches;

    /// Datagrams go to the destinations in turn, across batches and across calls.
    #[test]
    fn batches_go_round_robin() {
        let rx: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let to: Vec<_> = rx.iter().map(|s| s.local_addr().unwrap()).collect();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batches = Batches::new(&to, 2).unwrap();
        for k in 0..7u8 {
            batches.send(&tx, &[k], 1).unwrap();
        }
        batches.send(&tx, &[7], 5).unwrap();
        let mut got = vec![Vec::new(); 3];
        for (socket, got) in rx.iter().zip(&mut got) {
            socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let mut buf = [0u8; 8];
            while let Ok(n) = socket.recv(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert_eq!(got, vec![vec![0, 3, 6, 7], vec![1, 4, 7, 7], vec![2, 5, 7, 7]]);
    }
}
