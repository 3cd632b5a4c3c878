#!/usr/bin/env python3
"""The punisher: run an elastic job and SIGKILL a random member every T seconds (exponentially
distributed with a given mean), letting `lockstep launch --max-restarts` start it again, for a
set duration or until the job ends; then compare the job's weights with an uninterrupted run.

    cargo build --release
    python3 scripts/punisher.py examples/mnist/cluster.toml --mean 20 --duration 600 \
        --elastic 2 --set job.epochs=40

Prints every kill (which node, at which round), then: kills survived, restarts, the pause each
membership change cost (from `report.json`'s `membership_changes`), whether `weights_sha256`
equals the uninterrupted run's, and whether any process of the job is left. Exit status 0 only
when the weights are equal and nothing is left.

Which members: `--kinds worker,coordinator` (the default: both). A killed coordinator is
started again by `launch` and takes over from the surviving workers (docs/elastic.md,
"Coordinator failover"). Parameter-server shards and stream producers are not chosen: elastic
membership applies to allreduce jobs with a file or dataset source (a parameter-server or stream
job is not elastic yet; killing one of those members stops or stalls the job by design).
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

p = argparse.ArgumentParser()
p.add_argument("manifest")
p.add_argument("--mean", type=float, default=20.0, help="mean seconds between kills")
p.add_argument("--duration", type=float, default=600.0, help="stop killing after this long")
p.add_argument("--elastic", default="2", help="MIN (or MIN:MAX) workers, as for launch")
p.add_argument("--max-restarts", type=int, default=1000)
p.add_argument("--set", action="append", default=[], help="manifest overrides, as for launch")
p.add_argument("--seed", type=int, default=1)
p.add_argument("--kinds", default="worker,coordinator",
               help="which members to kill: worker, coordinator (comma-separated)")
p.add_argument("--exe", default="target/release/lockstep")
p.add_argument("--keep", action="store_true", help="keep the run directories")
args = p.parse_args()
rng = random.Random(args.seed)
sets = [a for s in args.set for a in ("--set", s)]


def launch(run_dir, extra):
    cmd = [args.exe, "launch", args.manifest, "--run-dir", run_dir,
           "--report", os.path.join(run_dir, "report.json")] + sets + extra
    os.makedirs(run_dir, exist_ok=True)
    # The launcher's output goes to a file: a pipe nobody reads until the end would fill up
    # and stop the launcher at its next log line.
    log = open(os.path.join(run_dir, "launch.log"), "w")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)


def tail(run_dir):
    try:
        return open(os.path.join(run_dir, "launch.log")).read()[-3000:]
    except OSError:
        return ""



def processes(run_dir):
    """(pid, node name) of every `lockstep node` process of this run directory."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in argv]
        if "node" in argv and run_dir in argv and "--node" in argv:
            out.append((int(pid), argv[argv.index("--node") + 1]))
    return out


kinds = set(args.kinds.split(","))


def kind(name):
    return "coordinator" if name == "coordinator" else "worker"


def newest_round(run_dir):
    try:
        return json.load(open(os.path.join(run_dir, "progress.json"))).get("round")
    except (OSError, ValueError):
        return None


base = tempfile.mkdtemp(prefix="punisher-")
print(f"run directories under {base}", flush=True)
ref_dir = os.path.join(base, "reference")
t0 = time.monotonic()
ref = launch(ref_dir, [])
ref.wait()
if ref.returncode != 0:
    sys.exit(f"the uninterrupted run failed:\n{tail(ref_dir)}")
want = json.load(open(os.path.join(ref_dir, "report.json")))["weights_sha256"]
print(f"uninterrupted run: {time.monotonic() - t0:.1f} s, weights {want[:16]}", flush=True)

run_dir = os.path.join(base, "punished")
t0 = time.monotonic()
job = launch(run_dir, ["--elastic", args.elastic, "--max-restarts", str(args.max_restarts)])
kills = []
waiting = []   # kills whose job has not advanced yet: (when, node, round at the kill)
lost = []      # (node, seconds from the kill until the job's round advanced past it)
next_kill = t0 + rng.expovariate(1.0 / args.mean)
while job.poll() is None:
    now = time.monotonic()
    if now - t0 < args.duration and now >= next_kill:
        victims = [(pid, n) for pid, n in processes(run_dir) if kind(n) in kinds]
        if victims:
            pid, name = rng.choice(victims)
            try:
                os.kill(pid, signal.SIGKILL)
                kills.append((now - t0, name, newest_round(run_dir)))
                waiting.append((now, name, kills[-1][2] or 0))
                print(f"{now - t0:7.1f} s: killed {name} (pid {pid}) near round "
                      f"{kills[-1][2]}", flush=True)
            except ProcessLookupError:
                pass
        next_kill = now + rng.expovariate(1.0 / args.mean)
    r = newest_round(run_dir) or 0
    for w in [w for w in waiting if r > w[2]]:
        waiting.remove(w)
        lost.append((w[1], time.monotonic() - w[0]))
    time.sleep(0.05)
job.wait()
wall = time.monotonic() - t0
left = processes(run_dir)
ok = job.returncode == 0
report = json.load(open(os.path.join(run_dir, "report.json"))) if ok else {}
got = report.get("weights_sha256")
changes = report.get("membership_changes", [])
pauses = [c.get("pause_ms", 0) for c in changes]
print(f"\npunished run: {wall:.1f} s, exit {job.returncode}")
by_kind = {k: sum(kind(n) == k for _, n, _ in kills) for k in sorted(kinds)}
print(f"kills survived: {len(kills)} {by_kind}; restarts: {report.get('restarts')}; membership "
      f"changes: {len(changes)} (lost {sum(c['kind'] == 'lost' for c in changes)}, joined "
      f"{sum(c['kind'] == 'joined' for c in changes)}, coordinator "
      f"{sum(c['kind'] == 'coordinator' for c in changes)})")
ref_rounds = json.load(open(os.path.join(ref_dir, "report.json"))).get("rounds")
print(f"rounds: {report.get('rounds')} (uninterrupted: {ref_rounds}); a round lost to a kill is "
      f"run again from the newest survivor's state, so no row is trained twice into the weights")
for k in sorted(kinds):
    secs = sorted(t for n, t in lost if kind(n) == k)
    if secs:
        print(f"time lost per {k} kill (kill to the next round in progress.json, 200 ms resolution): median "
              f"{secs[len(secs) // 2] * 1e3:.0f} ms, max {secs[-1] * 1e3:.0f} ms over {len(secs)}")
if pauses:
    pauses.sort()
    print(f"pause per change in the report: median {pauses[len(pauses) // 2]:.0f} ms, max {pauses[-1]:.0f} ms")
print(f"weights: {'the uninterrupted run' if got == want else 'DIFFERENT'} ({got})")
print(f"processes left: {len(left)}")
if not ok:
    print(tail(run_dir))
if not args.keep:
    subprocess.run(["rm", "-rf", base])
sys.exit(0 if ok and got == want and not left else 1)
