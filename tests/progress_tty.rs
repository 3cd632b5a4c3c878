//! The progress bar of `lockstep launch` on a real terminal: the launcher runs on the slave side
//! of a pseudo-terminal made here (openpty), and the test reads what a terminal would show from
//! the master side. The bar is drawn and redrawn as rounds go by, the node logs are printed above
//! it (a log line never shares a screen line with the bar), and it is cleared at the end; piped
//! to a file, the same run prints no bar at all.

mod common;
use common::*;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The bar's fixed text (runtime/src/observe/progress.rs's template).
const BAR_TEXT: &str = " rounds, ETA";
/// What the terminal erases a line with before the bar or a log line is drawn over it.
const CLEAR_LINE: &str = "\x1b[2K";

/// A pseudo-terminal of 160 columns: (master, slave).
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 160,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty(3) writes two new descriptors into the out-parameters; the name and
    // termios arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created by openpty and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

fn launch_args(dir: &std::path::Path) -> Vec<String> {
    vec![
        "launch".into(),
        "examples/credit/cluster.toml".into(),
        "--workers".into(),
        "2".into(),
        "--set".into(),
        "job.epochs=60".into(),
        "--run-dir".into(),
        dir.display().to_string(),
    ]
}

#[test]
fn the_progress_bar_redraws_on_a_terminal_with_the_logs_above_it() {
    let dir = run_dir("progress-tty");
    let (master, slave) = openpty();
    let job = Command::new(exe())
        .args(launch_args(dir.path()))
        .current_dir(root())
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave.try_clone().expect("dup the pty")))
        .stderr(Stdio::from(slave))
        .spawn_owned()
        .expect("start lockstep launch");
    // Read the terminal until the launcher (the last holder of the slave side) exits: then a
    // read fails with EIO.
    let reader = std::thread::spawn(move || {
        let mut screen = Vec::new();
        let mut f = std::fs::File::from(master);
        let mut buf = [0u8; 8192];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            screen.extend_from_slice(&buf[..n]);
        }
        screen
    });
    let out = job.wait_with_deadline(Duration::from_secs(240));
    assert!(out.status.success(), "launch failed: {:?}", out.status);
    let screen = String::from_utf8_lossy(&reader.join().expect("reader")).to_string();

    let draws = screen.matches(BAR_TEXT).count();
    // "N/M rounds" of every drawing of the bar: it moves as rounds go by.
    let positions: std::collections::BTreeSet<&str> = screen
        .split(BAR_TEXT)
        .filter_map(|before| before.trim_end().rsplit(' ').next())
        .filter(|n| n.contains('/'))
        .collect();
    assert!(
        draws >= 3 && positions.len() >= 2,
        "the bar was drawn {draws} times at {positions:?}, not redrawn as rounds went by:\n{screen}"
    );
    assert!(
        screen.contains(CLEAR_LINE),
        "the bar is never erased before it is redrawn:\n{screen}"
    );
    // Screen lines: what sits between two line feeds, after the last carriage return or line
    // erase (what a terminal leaves visible of it).
    let visible: Vec<&str> = screen
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .map(|l| l.rsplit('\r').next().unwrap_or(l))
        .map(|l| l.rsplit(CLEAR_LINE).next().unwrap_or(l))
        .collect();
    let logs: Vec<&&str> = visible
        .iter()
        .filter(|l| l.starts_with("[coordinator]") && l.contains("epoch"))
        .collect();
    assert!(
        !logs.is_empty(),
        "no node log line with an epoch on the terminal:\n{screen}"
    );
    for l in &logs {
        assert!(
            !l.contains(BAR_TEXT),
            "a log line shares its screen line with the bar: {l:?}"
        );
    }
    // At the end the bar is cleared: the last visible line is not the bar.
    let last = visible
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .copied()
        .unwrap_or("");
    assert!(
        !last.contains(BAR_TEXT),
        "the bar is left on screen after the run: {last:?}"
    );
    println!(
        "{draws} draws of the bar, {} log lines above it",
        logs.len()
    );
}

#[test]
fn piped_output_has_no_bar() {
    let dir = run_dir("progress-pipe");
    let args = launch_args(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args, Duration::from_secs(240));
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains(BAR_TEXT), "a bar in piped output:\n{text}");
    assert!(!text.contains(CLEAR_LINE), "terminal codes in piped output");
}
