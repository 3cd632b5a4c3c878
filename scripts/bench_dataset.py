"""Streaming benchmark: the mnist-mlp job (784-256-128-10, 2 workers, a fixed number of rounds) on a
generated dataset larger than memory (scripts/make_big_dataset.py) against the same job on
examples/data/mnist5k.parquet in memory, interleaved A B B A ... in one run.

usage: bench_dataset.py BIG_DIR [--rounds 400] [--repeat 3] [--memory-mb 512] [--block-rows N]
                        [--exe PATH]

Prints samples/s of each run (the report's samples_per_s: rounds only, not loading), the ratio
streamed / in memory per pair, and the peak RSS (VmHWM) of every worker process of the streamed runs
against the budget.
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
ap = argparse.ArgumentParser()
ap.add_argument("big")
ap.add_argument("--rounds", type=int, default=400)
ap.add_argument("--repeat", type=int, default=3)
ap.add_argument("--memory-mb", type=int, default=512)
ap.add_argument("--block-rows", type=int, default=0, help="[job.data] block_rows (0: the default)")
ap.add_argument("--exe", default=os.path.join(root, "target", "release", "lockstep"))
a = ap.parse_args()

MANIFEST = """[cluster]
name = "bench-data"
[[nodes]]
name = "coordinator"
roles = ["coordinator"]
[[nodes]]
name = "worker-0"
roles = ["worker"]
[[nodes]]
name = "worker-1"
roles = ["worker"]
[job]
seed = 7
rounds = {rounds}
global_batch = 128
aggregation = "allreduce"
[job.data]
path = "{path}"
label = "label"
features = ["px*"]
task = "multiclass"
classes = 10
scaling = {{ divide = 255.0 }}
test_fraction = 0.2
{extra}
[job.model]
kind = "mlp"
hidden = [256, 128]
[job.optimizer]
kind = "sgd"
lr = 0.05
momentum = 0.9
"""


def peak_rss_poller(run_dir, peaks, stop):
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
                if run_dir not in cmd or "--node worker" not in cmd:
                    continue
                node = cmd.split("--node ")[1].split()[0]
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmHWM:"):
                        kb = int(line.split()[1])
                        peaks[node] = max(peaks.get(node, 0), kb)
            except (OSError, IndexError, ValueError):
                pass
        time.sleep(0.2)


def run(kind, tmp):
    if kind == "memory":
        path, extra = os.path.join(root, "examples/data/mnist5k.parquet"), ""
    else:
        path, extra = a.big, f"memory_mb = {a.memory_mb}"
        if a.block_rows:
            extra += f"\nblock_rows = {a.block_rows}"
    m = os.path.join(tmp, f"{kind}.toml")
    open(m, "w").write(MANIFEST.format(rounds=a.rounds, path=path, extra=extra))
    run_dir = tempfile.mkdtemp(prefix=f"bench-data-{kind}-", dir=tmp)
    report = os.path.join(run_dir, "report.json")
    peaks, stop = {}, threading.Event()
    t = threading.Thread(target=peak_rss_poller, args=(run_dir, peaks, stop))
    t.start()
    subprocess.run([a.exe, "launch", m, "--run-dir", run_dir, "--report", report],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop.set()
    t.join()
    r = json.load(open(report))
    return r["samples_per_s"], peaks


print(f"load average at start {os.getloadavg()}", flush=True)
with tempfile.TemporaryDirectory() as tmp:
    rates = {"memory": [], "stream": []}
    ratios, peaks_all = [], []
    for i in range(a.repeat):
        order = ["memory", "stream"] if i % 2 == 0 else ["stream", "memory"]
        got = {}
        for kind in order:
            rate, peaks = run(kind, tmp)
            got[kind] = rate
            rates[kind].append(rate)
            if kind == "stream":
                peaks_all.append(peaks)
            print(f"pair {i} {kind:6}: {rate:9.0f} samples/s  peak RSS (MiB) "
                  f"{ {k: round(v / 1024) for k, v in sorted(peaks.items())} }", flush=True)
        ratios.append(got["stream"] / got["memory"])
        print(f"pair {i} ratio streamed/in-memory: {ratios[-1]:.3f}", flush=True)
    print(f"in memory: median {statistics.median(rates['memory']):.0f} samples/s "
          f"({min(rates['memory']):.0f}-{max(rates['memory']):.0f})")
    print(f"streamed:  median {statistics.median(rates['stream']):.0f} samples/s "
          f"({min(rates['stream']):.0f}-{max(rates['stream']):.0f})")
    print(f"ratio: median {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
    for node in sorted({k for p in peaks_all for k in p}):
        worst = max(p.get(node, 0) for p in peaks_all) / 1024
        print(f"peak RSS {node}: {worst:.0f} MiB, budget memory_mb = {a.memory_mb} "
              f"({'under' if worst < a.memory_mb else 'OVER'})")
    print(f"load average {os.getloadavg()}")
