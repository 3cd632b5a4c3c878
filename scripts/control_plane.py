"""Control-plane figures of two lockstep binaries, measured interleaved (A B A B ...) in one run:

- coordinator CPU per round: the coordinator process's user + system CPU time (from
  /proc/PID/stat, sampled every 10 ms until it exits) over the rounds of the credit example
  (examples/credit/cluster.toml, 2 workers over tcp, --epochs epochs);
- abort to stop: from worker-1's injected failure in round 40 (LOCKSTEP_FAULT=fail, its log
  line's timestamp) to `lockstep launch` exiting, while worker-0 is blocked on worker-1 in the
  allreduce and the coordinator waits for worker-0's report.

Both binaries need the fault-injection feature (`cargo build --features fault-injection`; the
test builds have it). usage: control_plane.py A_EXE B_EXE [--repeat 6] [--epochs 60]
"""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
ap = argparse.ArgumentParser()
ap.add_argument("a")
ap.add_argument("b")
ap.add_argument("--repeat", type=int, default=6)
ap.add_argument("--epochs", type=int, default=60)
args = ap.parse_args()
env = dict(os.environ, LOCKSTEP_TOKEN=os.environ.get("LOCKSTEP_TOKEN", "control-plane-figures"))
TICK = os.sysconf("SC_CLK_TCK")
TCP = ["--set", 'cluster.transport="tcp"']


def cpu_seconds(pid):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except OSError:
        return None


def coordinator_of(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    for child in out.split():
        try:
            if "coordinator" in open(f"/proc/{child}/cmdline").read():
                return int(child)
        except OSError:
            pass
    return None


def cpu_per_round(exe):
    d = tempfile.mkdtemp(prefix="lockstep-cp.")
    cmd = [exe, "launch", "examples/credit/cluster.toml", "--run-dir", d, "--report", d + "/report.json",
           "--set", f"job.epochs={args.epochs}"] + TCP
    p = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    coord, cpu = None, 0.0
    while p.poll() is None:
        coord = coord or coordinator_of(p.pid)
        if coord is not None:
            cpu = cpu_seconds(coord) or cpu
        time.sleep(0.01)
    rounds = json.load(open(d + "/report.json"))["rounds"]
    return cpu / rounds * 1e3


def abort_to_stop(exe):
    d = tempfile.mkdtemp(prefix="lockstep-cp.")
    cmd = [exe, "launch", "examples/credit/cluster.toml", "--run-dir", d, "--report", d + "/report.json",
           "--set", "job.epochs=2", "--set", "cluster.progress_timeout_ms=600000"] + TCP
    e = dict(env, LOCKSTEP_FAULT="fail:node=worker-1:round=40")
    out = subprocess.run(cmd, cwd=root, env=e, capture_output=True, text=True)
    end = time.time()
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("[worker-1]") and "LOCKSTEP_FAULT" in line:
            stamp = re.search(r"\] (\S+Z) ", line).group(1)
            t0 = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            return (end - t0) * 1e3
    raise SystemExit(f"{exe}: no injected failure in the log; built without fault-injection?")


figures = {x: ([], []) for x in (args.a, args.b)}
for rep in range(args.repeat):
    for exe in (args.a, args.b):
        cpu, stop = cpu_per_round(exe), abort_to_stop(exe)
        figures[exe][0].append(cpu)
        figures[exe][1].append(stop)
        print(f"{exe} run {rep + 1}: coordinator CPU {cpu:.3f} ms/round, abort to stop {stop:.0f} ms", flush=True)
for exe, (cpu, stop) in figures.items():
    print(f"{exe}: median coordinator CPU {statistics.median(cpu):.3f} ms/round, "
          f"median abort to stop {statistics.median(stop):.0f} ms")
