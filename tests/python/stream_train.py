"""A NumPy logistic regression trained on a producer stream through lockstep.data.StreamDataset
(tests/python_stream.rs). Every rank takes its share of each round, the gradient is allreduced
(sum, fixed order), and rank 0 prints one JSON line: rounds, the weights' SHA-256, rows received
and duplicates dropped over all ranks. With --stop-at R it stops after round R and writes the
weights and the stream's state to --state; with --state given at start it resumes from them.

    stream_train.py DATA RUN_DIR [--stop-at R] [--state FILE] [--resume]
"""
import argparse
import hashlib
import json
import os

import numpy as np

import lockstep
import lockstep.data

ap = argparse.ArgumentParser()
ap.add_argument("data")
ap.add_argument("run_dir")
ap.add_argument("--stop-at", type=int, default=-1)
ap.add_argument("--state")
ap.add_argument("--resume", action="store_true")
ap.add_argument("--global-batch", type=int, default=32)
ap.add_argument("--producers", type=int, default=2)
ap.add_argument("--connect-timeout-ms", type=int, default=120000)
ap.add_argument("--torch", action="store_true", help="iterate through a torch DataLoader")
args = ap.parse_args()

lockstep.init()
saved = None
if args.resume:
    with open(args.state) as f:
        saved = json.load(f)
ds = lockstep.data.StreamDataset(
    args.data, label="Status", task="binary", positive="bad", scaling="standard",
    producers=args.producers, global_batch=args.global_batch, run_dir=args.run_dir,
    state=saved["stream"] if saved else None, connect_timeout_ms=args.connect_timeout_ms)
w = np.zeros(ds.cols + 1, dtype=np.float32)
if saved:
    w = np.frombuffer(bytes.fromhex(saved["w"]), dtype=np.float32).copy()
lr = np.float32(0.5)
batches = ds
if args.torch:
    import torch
    assert isinstance(ds, torch.utils.data.IterableDataset), type(ds).__mro__
    batches = torch.utils.data.DataLoader(ds, batch_size=None)
for x, y in batches:
    if args.torch:
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32, (type(x), x.dtype)
    x, y = np.asarray(x), np.asarray(y)
    z = x @ w[:-1] + w[-1]
    err = (1.0 / (1.0 + np.exp(-z)) - y).astype(np.float32)
    g = np.empty_like(w)
    g[:-1] = x.T @ err
    g[-1] = err.sum()
    g /= np.float32(args.global_batch)
    lockstep.allreduce_(g, op="sum", exact=True)
    w -= lr * g
    if ds.round == args.stop_at:
        break
state = ds.state_dict()
c = ds.counts()
totals = np.array([c["rows"], c["duplicates"]], dtype=np.int64)
totals = lockstep.allgather(totals).sum(axis=0)
if lockstep.rank() == 0:
    if args.state and not args.resume:
        with open(args.state + ".tmp", "w") as f:
            json.dump({"w": w.tobytes().hex(), "stream": state}, f)
        os.replace(args.state + ".tmp", args.state)
    print(json.dumps({"rounds": ds.round, "sha": hashlib.sha256(w.tobytes()).hexdigest(),
                      "received": int(totals[0]), "duplicates": int(totals[1]),
                      "offsets": state["offsets"], "bootstrap": ds.bootstrap}), flush=True)
