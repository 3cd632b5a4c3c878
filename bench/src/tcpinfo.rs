//! What the kernel says about the loopback TCP connections of a bench (`TCP_INFO`), to tell a run
//! in which one connection was slowed by spurious retransmissions from one that was not.
//!
//! With the two endpoints on two CPUs, loopback segments of one connection are sent from both
//! CPUs (by the writer, and by the ACK processing on the reader's CPU) and can arrive out of
//! order; the sender then retransmits segments that were not lost (the reader's duplicate-SACKs
//! say so) and Reno halves its congestion window. Most of the time the cut is undone; sometimes a
//! connection stays with a window of 20-60 segments instead of ~300, and runs at about half speed
//! for the rest of the run (docs/benchmarks.md, "Placement"). Rank 0 reads `TCP_INFO` of every
//! connected TCP socket it has sent at least [`MIN_BYTES`] on, after the timed samples (`bench
//! link`) or after each size (`bench allreduce`); the parent stores them as `tcp` in the JSON
//! and warns when one retransmitted more than [`SLOW_RETRANS`] of its bytes.

use serde_json::{json, Value};
use std::os::fd::RawFd;

/// Sockets that sent less than this are not data connections of the bench (rendezvous, acks).
pub(crate) const MIN_BYTES: u64 = 1 << 20;

/// Retransmitted bytes, as a fraction of bytes sent, above which a connection is reported as
/// slowed: on the development machine (kernel 6.18, two CPUs), the connections that ran at a
/// half or less of their usual speed retransmitted 0.12-1% of their bytes, the others at most
/// 0.07%.
pub const SLOW_RETRANS: f64 = 0.001;

/// `TCP_INFO` of `fd` as JSON (connected TCP sockets only; `None` otherwise).
pub(crate) fn of_fd(fd: RawFd) -> Option<Value> {
    let mut b = [0u8; 256];
    let mut len = b.len() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `b`, which outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            b.as_mut_ptr().cast(),
            &mut len,
        )
    };
    // Offsets of struct tcp_info (linux/tcp.h); fields past `len` are absent (older kernels).
    let len = len as usize;
    // ESTABLISHED, or CLOSE_WAIT once the peer has closed; not a listener.
    if rc != 0 || len < 104 || !matches!(b[0], 1 | 8) {
        return None;
    }
    let u32_at =
        |o: usize| (o + 4 <= len).then(|| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap()));
    let u64_at =
        |o: usize| (o + 8 <= len).then(|| u64::from_ne_bytes(b[o..o + 8].try_into().unwrap()));
    let ssthresh = u32_at(76).filter(|&s| s < 0x7fff_ffff);
    Some(json!({
        "bytes_sent": u64_at(200).or(u64_at(120)),
        "bytes_retrans": u64_at(208),
        "retrans_segs": u32_at(100),
        "dsack_dups": u32_at(216),
        "reordering": u32_at(88),
        "cwnd": u32_at(80),
        "ssthresh": ssthresh,
        "snd_wnd": u32_at(228),
    }))
}

/// Every established TCP socket of this process that sent at least [`MIN_BYTES`], the one whose
/// descriptor is `reference` labelled `"reference"`, the others `"link"` (the subject's links,
/// or with `--tls` the plain twin too).
pub(crate) fn sockets(reference: Option<RawFd>) -> Value {
    let (mut out, mut seen) = (Vec::new(), std::collections::HashSet::new());
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Value::Array(out);
    };
    for e in dir.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else {
            continue;
        };
        // One entry per socket: a link may hold it under several descriptors (`try_clone`).
        let target = std::fs::read_link(e.path()).map(|t| t.to_string_lossy().into_owned());
        let Some(inode) = target.ok().filter(|t| t.starts_with("socket:")) else {
            continue;
        };
        let Some(Value::Object(mut m)) = of_fd(fd) else {
            continue;
        };
        if !seen.insert(inode) {
            continue;
        }
        if m.get("bytes_sent").and_then(Value::as_u64).unwrap_or(0) < MIN_BYTES {
            continue;
        }
        let role = if Some(fd) == reference {
            "reference"
        } else {
            "link"
        };
        m.insert("role".into(), Value::from(role));
        out.push(Value::Object(m));
    }
    Value::Array(out)
}

/// Warning lines for the sockets in `tcp` (as [`sockets`] gives them) that retransmitted more
/// than [`SLOW_RETRANS`] of their bytes.
pub fn warnings(tcp: &Value) -> Vec<String> {
    let f = |s: &Value, k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
    tcp.as_array()
        .into_iter()
        .flatten()
        .filter(|s| f(s, "bytes_retrans") as f64 > SLOW_RETRANS * f(s, "bytes_sent") as f64)
        .map(|s| {
            format!(
                "warning: the {} connection retransmitted {:.2}% of its bytes ({} segments, {} reported spurious by the receiver; congestion window {} segments): reordering between the two CPUs slowed it, so this run's ratio is not comparable (docs/benchmarks.md, \"Placement\")",
                s.get("role").and_then(Value::as_str).unwrap_or("?"),
                100.0 * f(s, "bytes_retrans") as f64 / f(s, "bytes_sent").max(1) as f64,
                f(s, "retrans_segs"),
                f(s, "dsack_dups"),
                f(s, "cwnd"),
            )
        })
        .collect()
}

/// Measuring a whole run again when `TCP_INFO` shows that one of its connections was slowed by
/// spurious retransmissions (`--attempts` of `bench link` and `bench allreduce`). A run in that
/// regime compares a subject and a reference that did not run under the same conditions (one of
/// them lost half its speed to the kernel's congestion control, not to the code under test), so
/// it is set aside, listed in the JSON as `discarded` (its ratio and its connections), and the
/// run is repeated, at most `attempts` times in all; the last attempt is kept whatever it shows,
/// with its warning printed.
#[derive(Debug)]
pub struct Remeasure {
    attempts: usize,
    tried: usize,
    discarded: Vec<Value>,
}

impl Remeasure {
    /// At most `attempts` runs (at least one).
    pub fn new(attempts: usize) -> Remeasure {
        Remeasure {
            attempts: attempts.max(1),
            tried: 0,
            discarded: Vec::new(),
        }
    }

    /// After a run whose connections are `tcp` (as [`sockets`] gives them; `null` for shm) and
    /// whose ratio is `ratio`: whether to run again. Prints why when it does.
    pub fn again(&mut self, tcp: &Value, ratio: impl Into<Value>) -> bool {
        self.tried += 1;
        let w = warnings(tcp);
        if w.is_empty() || self.tried >= self.attempts {
            return false;
        }
        let ratio = ratio.into();
        println!(
            "attempt {} of {}: ratio {ratio} set aside, measuring again: {}",
            self.tried,
            self.attempts,
            w.join("; ")
        );
        self.discarded
            .push(json!({ "attempt": self.tried, "ratio": ratio, "tcp": tcp }));
        true
    }

    /// `attempts` (runs made) and `discarded` (the runs set aside) into a JSON object.
    pub fn add_json(&self, m: &mut serde_json::Map<String, Value>) {
        m.insert("attempts".into(), Value::from(self.tried));
        m.insert("discarded".into(), Value::Array(self.discarded.clone()));
    }

    /// One line when runs were set aside.
    pub fn print_summary(&self) {
        if !self.discarded.is_empty() {
            println!(
                "{} of {} runs set aside for a TCP connection slowed by spurious retransmissions; the figures above are from run {}",
                self.discarded.len(),
                self.tried,
                self.tried
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    #[test]
    fn reads_a_loopback_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut v = vec![0u8; 2 << 20];
            s.read_exact(&mut v).unwrap();
            s.write_all(&[1]).unwrap();
            v.len()
        });
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(&vec![7u8; 2 << 20]).unwrap();
        s.read_exact(&mut [0u8; 1]).unwrap(); // every byte sent and read
        let info = of_fd(s.as_raw_fd()).expect("an established TCP socket");
        assert!(info["bytes_sent"].as_u64().unwrap() >= 1 << 20, "{info}");
        assert!(info["cwnd"].as_u64().unwrap() > 0);
        let all = sockets(Some(s.as_raw_fd()));
        let mine: Vec<_> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["role"] == "reference")
            .collect();
        assert_eq!(mine.len(), 1, "{all}");
        assert!(warnings(&all).is_empty() || info["bytes_retrans"].as_u64().unwrap() > 0);
        drop(s);
        assert_eq!(reader.join().unwrap(), 2 << 20);
        assert!(of_fd(-1).is_none());
        let slow = json!([{ "role": "link", "bytes_sent": 1000_u64, "bytes_retrans": 10_u64 }]);
        assert_eq!(warnings(&slow).len(), 1);
    }

    #[test]
    fn remeasures_slowed_runs_at_most_attempts_times() {
        let slow =
            json!([{ "role": "reference", "bytes_sent": 1000_u64, "bytes_retrans": 10_u64 }]);
        let fine = json!([{ "role": "reference", "bytes_sent": 1000_u64, "bytes_retrans": 0_u64 }]);
        let mut r = Remeasure::new(3);
        assert!(r.again(&slow, 0.55));
        assert!(!r.again(&fine, 1.01));
        let mut m = serde_json::Map::new();
        r.add_json(&mut m);
        assert_eq!(m["attempts"], 2);
        assert_eq!(m["discarded"][0]["ratio"], 0.55);
        // The last attempt is kept whatever it shows; shm (no connections) never repeats.
        let mut r = Remeasure::new(2);
        assert!(r.again(&slow, 0.5));
        assert!(!r.again(&slow, 0.5));
        assert!(!Remeasure::new(3).again(&Value::Null, 1.0));
    }
}
