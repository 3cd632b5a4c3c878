"""Lockstep's PyTorch path against PyTorch's DistributedDataParallel (gloo), interleaved in one
run: the same MLP (784-256-128-10, batch 64 per rank, one thread per process, train_mlp.py),
`--pairs` times each of: DDP on 2 ranks, Lockstep on 2 ranks, plain PyTorch on 1, Lockstep on 1.
Prints samples/s per run and the ratios (min / median / max over the pairs).

    PYTHONPATH=<dir with the lockstep package> python3 bench.py --pairs 3 --steps 300
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys

p = argparse.ArgumentParser()
p.add_argument("--pairs", type=int, default=3)
p.add_argument("--steps", type=int, default=300)
p.add_argument("--transport", default="auto")
args = p.parse_args()
here = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(mode, world):
    port = str(free_port())
    procs = []
    for r in range(world):
        env = dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, LOCKSTEP_TOKEN="bench",
                   LOCKSTEP_TRANSPORT=args.transport, OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(here, "train_mlp.py"), "--mode", mode,
             "--steps", str(args.steps)], env=env, stdout=subprocess.PIPE, text=True))
    outs = []
    for pr in procs:
        out, _ = pr.communicate(timeout=600)
        if pr.returncode != 0:
            sys.exit(f"{mode} x{world} failed ({pr.returncode})")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return min(o["samples_per_s"] for o in outs)  # the slowest rank sets the pace


ratios2, ratios1 = [], []
for i in range(args.pairs):
    ddp = run("ddp", 2)
    ls2 = run("lockstep", 2)
    plain = run("plain", 1)
    ls1 = run("lockstep", 1)
    ratios2.append(ls2 / ddp)
    ratios1.append(ls1 / plain)
    print(f"pair {i}: 2 ranks: DDP/gloo {ddp:.0f} samples/s, Lockstep {ls2:.0f} ({ls2 / ddp:.3f}x); "
          f"1 rank: plain {plain:.0f}, Lockstep {ls1:.0f} ({ls1 / plain:.3f}x)", flush=True)


def summary(name, r):
    print(f"{name}: min {min(r):.3f} median {statistics.median(r):.3f} max {max(r):.3f}")


summary("Lockstep / DDP-gloo, 2 ranks", ratios2)
summary("Lockstep / plain PyTorch, 1 rank", ratios1)
