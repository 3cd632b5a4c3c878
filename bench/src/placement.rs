//! Where the bench workers run (`--cpus auto|none|LIST` of `bench link` and `bench allreduce`).
//!
//! Loopback TCP is CPU-bound, and its speed depends on whether the two endpoints share a core or
//! get one each (on the idle 2-core development machine, `bench link --transport tcp` moves
//! about 3.2 GB/s on one core and 5.2 GB/s on two), and the scheduler picks one or the other
//! anew for every thread. A subject measured in one regime against a reference measured in the
//! other gives a ratio that jumps between runs (docs/benchmarks.md, "Placement"). So the parent
//! chooses one CPU per rank, each worker pins itself to its CPU before it starts a thread (the
//! threads it starts later, such as a link's writer thread, inherit it), and the references run
//! on the same CPUs as the subject: the plain-socket reference of `bench link` between the same
//! two processes, the loopback reference of `bench allreduce` between a thread of rank 0 on rank
//! 0's CPU (the writer) and a thread of rank 0 pinned to rank 1's CPU (the reader, as rank 1
//! reads the subject's bytes).
//!
//! - `auto` (default): rank `i` on the `i % n`-th CPU of the `n` this process may run on
//!   (`sched_getaffinity`): one core per rank while there are enough, so `taskset -c 0 lockstep
//!   bench ...` puts every rank on CPU 0.
//! - `none`: no pinning; the scheduler decides (the old behaviour; ratios may then jump).
//! - a list such as `0,1` or `0,0`: rank `i` on `LIST[i % len]`; each must be allowed.

use crate::error::join;
use crate::{BenchError, Result};
use serde_json::{json, Value};

/// The CPUs chosen for a run; `cpus[i]` is rank `i`'s CPU (`None`: not pinned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `auto`, `none` or `list`.
    pub mode: String,
    /// One CPU per rank, at least two entries (the reference's two endpoints run on `cpus[0]`
    /// and `cpus[1]`); `None` with `none`.
    pub cpus: Option<Vec<usize>>,
    /// The CPUs this process may run on.
    pub allowed: Vec<usize>,
}

impl Placement {
    /// Choose CPUs for `world` ranks from `spec` (`auto`, `none` or a comma-separated list).
    ///
    /// # Errors
    /// A malformed list, or a CPU this process may not run on.
    pub fn choose(spec: &str, world: usize) -> Result<Placement> {
        Placement::choose_from(spec, world, allowed_cpus())
    }

    fn choose_from(spec: &str, world: usize, allowed: Vec<usize>) -> Result<Placement> {
        let ranks = world.max(2);
        let spec = spec.trim();
        let (mode, cpus) = match spec {
            "none" => ("none", None),
            "auto" if allowed.is_empty() => ("none", None),
            "auto" => (
                "auto",
                Some((0..ranks).map(|i| allowed[i % allowed.len()]).collect()),
            ),
            list => {
                let l = list
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| BenchError::CpusSpec { spec: list.into() })?;
                if let Some(&cpu) = l.iter().find(|c| !allowed.contains(c)) {
                    return Err(BenchError::CpuNotAllowed {
                        spec: list.into(),
                        cpu,
                        allowed,
                    });
                }
                ("list", Some((0..ranks).map(|i| l[i % l.len()]).collect()))
            }
        };
        Ok(Placement {
            mode: mode.into(),
            cpus,
            allowed,
        })
    }

    /// The CPUs of `world` ranks (`None` when not pinned).
    pub fn ranks(&self, world: usize) -> Option<&[usize]> {
        self.cpus.as_deref().map(|c| &c[..world.min(c.len())])
    }

    /// `{"mode": "auto", "cpus": [0, 1], "allowed": [0, 1]}` (`cpus`: one per rank of `world`,
    /// `null` when not pinned).
    pub fn json(&self, world: usize) -> Value {
        json!({ "mode": self.mode, "cpus": self.ranks(world), "allowed": self.allowed })
    }

    /// One line for the output, e.g. `placement: auto, rank 0 on CPU 0, rank 1 on CPU 1 (allowed
    /// 0,1); the reference's endpoints on CPUs 0 and 1`.
    pub fn line(&self, world: usize) -> String {
        match &self.cpus {
            None => format!(
                "placement: none (not pinned; allowed CPUs {}): subject and reference may run in different regimes",
                join(&self.allowed)
            ),
            Some(c) => {
                let ranks: Vec<String> = c[..world.min(c.len())]
                    .iter()
                    .enumerate()
                    .map(|(r, cpu)| format!("rank {r} on CPU {cpu}"))
                    .collect();
                format!(
                    "placement: {}, {} (allowed CPUs {}); the reference's endpoints on CPUs {} and {}",
                    self.mode,
                    ranks.join(", "),
                    join(&self.allowed),
                    c[0],
                    c[1]
                )
            }
        }
    }
}

/// The CPUs this thread may run on (`sched_getaffinity`), ascending; empty when unknown.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE, the set's capacity.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pin the calling thread to `cpu` (threads it starts afterwards inherit it).
///
/// # Errors
/// When the kernel refuses (a CPU outside this process's cpuset, say).
pub fn pin_thread(cpu: usize) -> Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(BenchError::CpuOutOfRange { cpu });
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(BenchError::Pin {
            cpu,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The `cpus` field of a worker's JSON config (absent: not pinned).
pub fn cpus_of(config: &str) -> Option<Vec<usize>> {
    let v: Value = serde_json::from_str(config).ok()?;
    let a = v.get("cpus")?.as_array()?;
    let cpus: Vec<usize> = a
        .iter()
        .filter_map(|c| c.as_u64().map(|c| c as usize))
        .collect();
    (cpus.len() >= 2).then_some(cpus)
}

/// Pin this worker's thread to its rank's CPU, when the config names CPUs (before the worker
/// starts any thread, so all of them inherit it).
///
/// # Errors
/// When the kernel refuses.
pub fn pin_worker(config: &str, rank: usize) -> Result<()> {
    match cpus_of(config) {
        Some(c) => pin_thread(c[rank % c.len()]),
        None => Ok(()),
    }
}

/// The CPU the reference's second endpoint (rank 1's role) runs on, when pinned.
pub fn peer_cpu(config: &str) -> Option<usize> {
    cpus_of(config).map(|c| c[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_cpus_per_rank() {
        let p = Placement::choose_from("auto", 2, vec![0, 1]).unwrap();
        assert_eq!(p.cpus, Some(vec![0, 1]));
        assert_eq!(p.json(2)["cpus"], json!([0, 1]));
        let p = Placement::choose_from("auto", 3, vec![2, 5]).unwrap();
        assert_eq!(p.cpus, Some(vec![2, 5, 2]));
        // One allowed CPU (taskset -c 0): every rank and both reference endpoints on it.
        let p = Placement::choose_from("auto", 1, vec![0]).unwrap();
        assert_eq!(p.cpus, Some(vec![0, 0]));
        assert_eq!(p.ranks(1), Some(&[0][..]));
        let p = Placement::choose_from("0,0", 2, vec![0, 1]).unwrap();
        assert_eq!((p.mode.as_str(), p.cpus), ("list", Some(vec![0, 0])));
        let p = Placement::choose_from("1", 3, vec![0, 1]).unwrap();
        assert_eq!(p.cpus, Some(vec![1, 1, 1]));
        let p = Placement::choose_from("none", 2, vec![0, 1]).unwrap();
        assert_eq!(p.cpus, None);
        assert!(p.json(2)["cpus"].is_null());
        assert!(Placement::choose_from("0,7", 2, vec![0, 1]).is_err());
        assert!(Placement::choose_from("zero", 2, vec![0, 1]).is_err());
        assert!(p.line(2).starts_with("placement: none"));
    }

    #[test]
    fn reads_the_workers_cpus_and_pins() {
        assert_eq!(cpus_of(r#"{"cpus":[3,1]}"#), Some(vec![3, 1]));
        assert_eq!(cpus_of(r#"{"mode":"bench"}"#), None);
        assert_eq!(peer_cpu(r#"{"cpus":[0,1,0]}"#), Some(1));
        let allowed = allowed_cpus();
        assert!(!allowed.is_empty());
        // Pin a fresh thread (not the test harness's) to the last allowed CPU.
        let last = *allowed.last().unwrap();
        let got = std::thread::spawn(move || {
            pin_thread(last).unwrap();
            allowed_cpus()
        })
        .join()
        .unwrap();
        assert_eq!(got, vec![last]);
    }
}
