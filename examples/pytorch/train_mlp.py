"""A plain PyTorch MLP (784-256-128-10) trained data-parallel with Lockstep, with PyTorch's own
DistributedDataParallel over gloo, or alone: the same model, data and schedule in every mode, for
`bench.py` and the tests. Start one process per rank with torchrun's variables (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT; LOCKSTEP_TOKEN for Lockstep), or with torchrun itself.

    python3 train_mlp.py --mode lockstep --steps 200 --micro-batches 4 --hash-out weights.sha256

The data: MNIST digits from examples/data/mnist5k.parquet when pyarrow is installed
(`--data mnist`), else a fixed synthetic set whose labels come from a random teacher network
(`--data synthetic`, the default: the same rows on every machine, nothing to install).
"""
import argparse
import hashlib
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn

p = argparse.ArgumentParser()
p.add_argument("--mode", choices=["lockstep", "ddp", "plain"], default="lockstep")
p.add_argument("--steps", type=int, default=200)
p.add_argument("--warmup", type=int, default=20, help="steps before the clock starts")
p.add_argument("--batch", type=int, default=64, help="rows per rank per step")
p.add_argument("--micro-batches", type=int, default=None,
               help="Lockstep's exact mode: the global batch in this many micro-batches")
p.add_argument("--global-batch", type=int, default=None,
               help="with --micro-batches: rows per step over all ranks (default batch x world)")
p.add_argument("--data", choices=["synthetic", "mnist"], default="synthetic")
p.add_argument("--seed", type=int, default=7)
p.add_argument("--lr", type=float, default=0.05)
p.add_argument("--hash-out", default=None)
args = p.parse_args()

torch.set_num_threads(1)
world = int(os.environ.get("WORLD_SIZE", "1"))
rank = int(os.environ.get("RANK", "0"))


def dataset():
    if args.data == "mnist":
        import pyarrow.parquet as pq
        here = os.path.dirname(os.path.abspath(__file__))
        t = pq.read_table(os.path.join(here, "../data/mnist5k.parquet")).to_pandas()
        y = t.pop("label").to_numpy().astype(np.int64)
        x = t.to_numpy().astype(np.float32) / 255.0
        return torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(8192, 784, generator=g)
    teacher = torch.randn(784, 10, generator=g)
    return x, (x @ teacher).argmax(dim=1)


x_all, y_all = dataset()
torch.manual_seed(args.seed)
model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                      nn.Linear(128, 10))
loss_fn = nn.CrossEntropyLoss()
sgd = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

if args.mode == "lockstep":
    import lockstep
    import lockstep.torch
    lockstep.init()
    opt = lockstep.torch.DistributedOptimizer(sgd, model, micro_batches=args.micro_batches)
    lockstep.torch.broadcast_parameters(model)
    net = model
elif args.mode == "ddp":
    import torch.distributed as dist
    dist.init_process_group("gloo")
    net = nn.parallel.DistributedDataParallel(model)
    opt = sgd
else:
    net, opt = model, sgd

G = args.global_batch or args.batch * world
M = args.micro_batches
rows = x_all.shape[0]


def batch(step, lo, hi):
    """Rows lo..hi of global batch `step` (the data cycles)."""
    start = (step * G) % (rows - G + 1)
    return x_all[start + lo:start + hi], y_all[start + lo:start + hi]


t0 = None
for step in range(args.warmup + args.steps):
    if step == args.warmup:
        t0 = time.perf_counter()
    opt.zero_grad()
    if M:
        per = G // M
        for k in lockstep.torch.micro_batch_range(M):
            xb, yb = batch(step, k * per, (k + 1) * per)
            loss_fn(net(xb), yb).backward()
    else:
        share = G // world
        xb, yb = batch(step, rank * share, (rank + 1) * share)
        loss_fn(net(xb), yb).backward()
    opt.step()
elapsed = time.perf_counter() - t0

h = hashlib.sha256()
for t in model.state_dict().values():
    h.update(t.detach().contiguous().numpy().tobytes())
with torch.no_grad():
    acc = (model(x_all[:2048]).argmax(dim=1) == y_all[:2048]).float().mean().item()
out = {"mode": args.mode, "world": world, "rank": rank, "steps": args.steps,
       "samples_per_s": args.steps * G / elapsed, "weights_sha256": h.hexdigest(),
       "train_accuracy": round(acc, 4)}
print(json.dumps(out), flush=True)
if args.hash_out and rank == 0:
    with open(args.hash_out, "w") as f:
        f.write(h.hexdigest() + "\n")
if args.mode == "lockstep":
    opt.close()
