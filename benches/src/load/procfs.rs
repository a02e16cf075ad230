//! RSS and open file descriptors of processes, from `/proc` (Linux).

use serde::Serialize;

/// A process to watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

/// One reading of one process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reading {
    pub t_s: f64,
    pub rss_bytes: u64,
    pub open_fds: u64,
}

/// Resident set size (`VmRSS`), `None` once the process is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

pub fn read(pid: u32, t_s: f64) -> Option<Reading> {
    Some(Reading {
        t_s,
        rss_bytes: rss_bytes(pid)?,
        open_fds: open_fds(pid).unwrap_or(0),
    })
}

fn comm(pid: u32) -> Option<String> {
    Some(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim()
            .to_owned(),
    )
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Processes of a stack started elsewhere: mabeam services whose environment names this NATS
/// URL, and the nats-server / redis-server listening on the URLs' ports.
pub fn find_stack(nats_url: &str, redis_url: &str) -> Vec<Watched> {
    let env_needle = format!("MABEAM_NATS_URL={nats_url}");
    let port_of = |url: &str| {
        url.rsplit(':')
            .next()
            .map(|p| p.trim_end_matches('/').to_owned())
    };
    let nats_port = port_of(nats_url);
    let redis_port = port_of(redis_url);
    let mut out = Vec::new();
    for pid in pids() {
        let Some(name) = comm(pid) else { continue };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let listens_on = |port: &Option<String>| {
            port.as_ref()
                .is_some_and(|p| cmdline.split([' ', ':']).any(|w| w == p))
        };
        let ours = if name.starts_with("mabeam-") {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|b| b.split(|c| *c == 0).any(|kv| kv == env_needle.as_bytes()))
                .unwrap_or(false)
        } else if name == "nats-server" {
            listens_on(&nats_port)
        } else if name == "redis-server" {
            listens_on(&redis_port)
        } else {
            false
        };
        if ours {
            out.push(Watched { name, pid });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn this_process_has_memory_and_descriptors() {
        let me = std::process::id();
        let r = read(me, 0.0).unwrap();
        assert!(r.rss_bytes > 1024 * 1024, "{r:?}");
        assert!(r.open_fds >= 3, "{r:?}");
        assert!(read(u32::MAX, 0.0).is_none());
    }
}
