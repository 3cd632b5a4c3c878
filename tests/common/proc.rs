//! Processes a test owns: every process a test starts (a `lockstep launch` and its nodes, a
//! producer, a moto server) runs in its own process group, and the [`Proc`] guard kills that whole
//! group when it is dropped — at the end of the test, on an early `return`, and while a panic
//! unwinds — so a failing test leaves nothing running.
#![allow(dead_code)]

use std::ops::{Deref, DerefMut};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A child process that leads its own process group, killed with that group on drop.
pub struct Proc {
    child: Option<Child>,
    pgid: i32,
}

/// `Command::spawn_owned()`: spawn in a new process group owned by a [`Proc`] guard.
pub trait SpawnOwned {
    /// Spawn the command as the leader of a new process group; the guard kills the group.
    ///
    /// # Errors
    /// As [`Command::spawn`].
    fn spawn_owned(&mut self) -> std::io::Result<Proc>;

    /// `Command::output()` through [`SpawnOwned::spawn_owned`]: stdin closed, stdout and stderr
    /// collected; if the waiting test panics elsewhere, the process still dies with the guard.
    ///
    /// # Errors
    /// As [`Command::output`].
    fn output_owned(&mut self) -> std::io::Result<Output>;
}

impl SpawnOwned for Command {
    fn spawn_owned(&mut self) -> std::io::Result<Proc> {
        let child = self.process_group(0).spawn()?;
        let pgid = child.id() as i32;
        Ok(Proc {
            child: Some(child),
            pgid,
        })
    }

    fn output_owned(&mut self) -> std::io::Result<Output> {
        self.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_owned()?
            .wait_with_output()
    }
}

impl Proc {
    /// Wait for the process and collect its output, then kill whatever is left of its group.
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        let child = self.child.take().expect("a live child");
        let out = child.wait_with_output();
        kill_group(self.pgid);
        gone(-self.pgid);
        out
    }

    /// Wait for the process, killing its group at the deadline (then panic with its stderr).
    /// Its piped stdout and stderr are drained meanwhile, so a child that writes more than a
    /// pipe holds never blocks on a full pipe.
    pub fn wait_with_deadline(mut self, limit: Duration) -> Output {
        let start = Instant::now();
        let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
            r.map(|mut r| {
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let _ = r.read_to_end(&mut buf);
                    buf
                })
            })
        };
        let child = self.child.as_mut().expect("a live child");
        let out = drain(child.stdout.take().map(|o| Box::new(o) as _));
        let err = drain(child.stderr.take().map(|e| Box::new(e) as _));
        let collect = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
            h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
        };
        loop {
            if let Some(status) = self.try_wait().expect("wait") {
                kill_group(self.pgid);
                gone(-self.pgid);
                self.child = None;
                return Output {
                    status,
                    stdout: collect(out),
                    stderr: collect(err),
                };
            }
            if start.elapsed() > limit {
                let family = self.kill_family();
                if let Some(c) = self.child.as_mut() {
                    let _ = c.wait();
                }
                self.child = None;
                family.into_iter().for_each(gone);
                gone(-self.pgid);
                panic!(
                    "process did not finish within {limit:?}\nstderr:\n{}",
                    String::from_utf8_lossy(&collect(err))
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill the whole process group now and reap the leader.
    pub fn kill_all(&mut self) {
        let family = self.kill_family();
        if let Some(c) = self.child.as_mut() {
            let _ = c.wait();
        }
        gone(-self.pgid);
        family.into_iter().for_each(gone);
    }

    /// SIGKILL to the group and to every descendant of the leader, which may sit in groups of
    /// their own (`lockstep launch` starts each node in its own group, dying with the launcher
    /// through `PR_SET_PDEATHSIG`, which is asynchronous); returns the descendants.
    fn kill_family(&mut self) -> Vec<i32> {
        let family = descendants(self.pgid);
        kill_group(self.pgid);
        for &p in &family {
            // SAFETY: kill(2) of a process this test's child started (read from /proc).
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        family
    }
}

/// SIGKILL to every process of group `pgid` (an error such as "no such group" is ignored: the
/// group is already gone).
fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals the process group this test created with
        // process_group(0); the leader's pid is its id, never this test's own group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// Wait (at most 10 s) until process `pid` (a group when negative) no longer exists: SIGKILL is
/// delivered asynchronously, and processes orphaned by the kill (a launch's nodes) are reaped by
/// init, so a test that returns right after a kill could otherwise still see them, as zombies,
/// in `pgrep`.
fn gone(pid: i32) {
    if pid.abs() <= 1 {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    // SAFETY: kill(2) with signal 0 only checks that the process (or group) exists.
    while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every live descendant of `pid` (children, their children, ...), read from `/proc`.
fn descendants(pid: i32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|x| x.parse().ok()) {
            parent_of.push((p, ppid));
        }
    }
    let (mut out, mut frontier) = (Vec::new(), vec![pid]);
    while let Some(q) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == q && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

impl Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.child.as_ref().expect("a live child")
    }
}

impl DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("a live child")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let family = self.kill_family();
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        gone(-self.pgid);
        family.into_iter().for_each(gone);
    }
}
