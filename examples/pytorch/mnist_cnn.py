"""A small CNN on real MNIST digits, in plain PyTorch, trained data-parallel with Lockstep's
DistributedOptimizer. Start one process per rank with torchrun's variables (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT) and a shared LOCKSTEP_TOKEN, e.g. with `lockstep run`:

    python3 prepare_data.py mnist --out data/mnist.npz     # once, with a Python that has pyarrow
    lockstep run -n 2 -- python3 mnist_cnn.py --data data/mnist.npz
    lockstep run -n 2 -- python3 mnist_cnn.py --data data/mnist.npz --micro-batches 4

The model: conv 5x5 (1->16) - ReLU - max-pool 2, conv 5x5 (16->32) - ReLU - max-pool 2, linear
1568->10. The data: the 4,000 training images of mnist5k (MNIST, 500 per class) in a fixed
shuffled order per epoch, the same on every rank; the 1,000 held-out images are only evaluated.

Every step takes one global batch of `--batch` images (the same for any number of processes):
rank r of W trains on rows r*B/W .. (r+1)*B/W - 1 of it, and DistributedOptimizer averages the
gradients. With `--micro-batches M` (exact mode) the global batch is cut into M micro-batches and
rank r runs backward once per micro-batch r*M/W .. (r+1)*M/W - 1: 1, 2, 4 ... M processes then give
bit-identical weights. The last line printed is one JSON object (mode, world, rank, test
accuracy, weights_sha256 over model.state_dict() in order, timings).
"""
import argparse
import hashlib
import json
import time

import numpy as np
import torch
import torch.nn as nn

import lockstep
import lockstep.torch

p = argparse.ArgumentParser()
p.add_argument("--data", required=True, help="the .npz written by prepare_data.py mnist")
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
p.add_argument("--batch", type=int, default=64, help="images per step over all ranks")
p.add_argument("--micro-batches", type=int, default=None,
               help="exact mode: the global batch in this many micro-batches (a power of two "
                    "that the number of processes divides)")
p.add_argument("--lr", type=float, default=0.02)
p.add_argument("--seed", type=int, default=7)
args = p.parse_args()

torch.set_num_threads(1)
lockstep.init()
world, rank = lockstep.size(), lockstep.rank()
if (args.micro_batches and args.batch % args.micro_batches) or (
        not args.micro_batches and args.batch % world):
    raise SystemExit(f"--batch {args.batch} must divide by the world size {world} and by "
                     f"--micro-batches")

d = np.load(args.data)


def images(x):
    return (torch.from_numpy(x.astype(np.float32)) / 255.0 - 0.1307).div_(0.3081).unsqueeze(1)


x_train, y_train = images(d["x_train"]), torch.from_numpy(d["y_train"])
x_test, y_test = images(d["x_test"]), torch.from_numpy(d["y_test"])

torch.manual_seed(args.seed)
model = nn.Sequential(
    nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
loss_fn = nn.CrossEntropyLoss()
opt = lockstep.torch.DistributedOptimizer(
    torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9), model,
    micro_batches=args.micro_batches)
lockstep.torch.broadcast_parameters(model)

G, M = args.batch, args.micro_batches
steps, t0 = 0, time.perf_counter()
for epoch in range(args.epochs):
    order = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(args.seed + epoch))
    for start in range(0, len(order) - G + 1, G):
        if args.max_steps is not None and steps >= args.max_steps:
            break
        rows = order[start:start + G]
        opt.zero_grad()
        if M:  # exact mode: one backward per micro-batch of this rank's share
            per = G // M
            for k in lockstep.torch.micro_batch_range(M):
                idx = rows[k * per:(k + 1) * per]
                loss_fn(model(x_train[idx]), y_train[idx]).backward()
        else:
            share = G // world
            idx = rows[rank * share:(rank + 1) * share]
            loss_fn(model(x_train[idx]), y_train[idx]).backward()
        opt.step()
        steps += 1
elapsed = time.perf_counter() - t0
opt.close()

model.eval()
with torch.no_grad():
    acc = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
h = hashlib.sha256()
for t in model.state_dict().values():
    h.update(t.detach().contiguous().numpy().tobytes())
print(json.dumps({
    "example": "mnist_cnn", "mode": "exact" if M else "bucketed", "micro_batches": M,
    "world": world, "rank": rank, "steps": steps, "global_batch": G,
    "test_accuracy": round(acc, 4), "test_images": len(y_test),
    "train_seconds": round(elapsed, 2), "samples_per_s": round(steps * G / elapsed, 1),
    "weights_sha256": h.hexdigest()}), flush=True)
