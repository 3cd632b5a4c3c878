"""A recommendation-style model in plain PyTorch, trained data-parallel with Lockstep's
DistributedOptimizer: biased matrix factorisation on MovieLens ratings,

    rating(u, i) ~ mean + b_u + b_i + <p_u, q_i>

with user and item embeddings (`nn.Embedding`, 64 dimensions) and user and item biases (1-wide
embeddings). Start one process per rank with torchrun's variables and a shared LOCKSTEP_TOKEN:

    python prepare_data.py movielens --out data/movielens.npz   # once, with a Python that has pandas
    lockstep run -n 2 -- python3 recommend.py --data data/movielens.npz

The ratings are split once at random, 90% to train and 10% held out (`--split-seed`). Every step
takes one global batch of `--batch` training ratings in a shuffled order that is the same on
every rank; rank r of W trains on ratings r*B/W .. (r+1)*B/W - 1 of it (or, with
`--micro-batches M`, on its share of M micro-batches: the same weights for 1, 2, 4 ... M
processes). The loss is the mean squared error of the batch, plus an L2 penalty on the factors
of the rows in the batch (`--reg`, weighted by how often a row occurs) and an L2 penalty on whole
tables (`--l2-factors`, `--l2-biases`, divided by the number of training ratings, so every row
is pulled towards zero however rarely it is rated). Adagrad, the usual optimizer for embeddings.

The embedding gradients are dense here (`nn.Embedding(sparse=False)`): each step reduces the
whole tables (671 + 9,066 rows x 65 floats, about 2.5 MB) over all ranks, rows that no rank
touched included. DistributedOptimizer reduces dense float32 gradients; a sparse reduction
(only the touched rows) would be the next step for catalogues of millions of items.

The biases-only baseline, fitted in closed form with NumPy on the same training ratings
(mean + b_u + b_i, regularised alternating least squares, `--baseline-lambda`), is reported next
to the model's held-out RMSE; both predictions are clipped to the rating scale 0.5..5. The last
line printed is one JSON object.
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
p.add_argument("--data", required=True, help="the .npz written by prepare_data.py movielens")
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--batch", type=int, default=1024, help="ratings per step over all ranks")
p.add_argument("--micro-batches", type=int, default=None,
               help="exact mode: the global batch in this many micro-batches")
p.add_argument("--dim", type=int, default=64, help="embedding dimensions")
p.add_argument("--lr", type=float, default=0.05, help="Adagrad's learning rate")
p.add_argument("--reg", type=float, default=0.03,
               help="L2 on the factors of the rows in each batch (frequency-weighted)")
p.add_argument("--l2-factors", type=float, default=5.0,
               help="L2 on the whole factor tables, over the number of training ratings")
p.add_argument("--l2-biases", type=float, default=1.0,
               help="L2 on the whole bias tables, over the number of training ratings")
p.add_argument("--baseline-lambda", type=float, default=5.0,
               help="the biases-only baseline's regularisation (per user and per item)")
p.add_argument("--split-seed", type=int, default=0)
p.add_argument("--seed", type=int, default=1)
args = p.parse_args()

torch.set_num_threads(1)
lockstep.init()
world, rank = lockstep.size(), lockstep.rank()
if (args.micro_batches and args.batch % args.micro_batches) or (
        not args.micro_batches and args.batch % world):
    raise SystemExit(f"--batch {args.batch} must divide by the world size {world} and by "
                     f"--micro-batches")

d = np.load(args.data)
users, items, ratings = d["user"], d["item"], d["rating"].astype(np.float32)
n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
perm = np.random.default_rng(args.split_seed).permutation(len(ratings))
n_test = len(ratings) // 10
test, train = perm[:n_test], perm[n_test:]
mean = float(ratings[train].astype(np.float64).mean())


def baseline_biases(lam, iterations=20):
    """mean + b_u + b_i by alternating regularised least squares on the training ratings."""
    u, i, r = users[train], items[train], ratings[train].astype(np.float64)
    bu, bi = np.zeros(n_users), np.zeros(n_items)
    n_u = np.bincount(u, minlength=n_users)
    n_i = np.bincount(i, minlength=n_items)
    for _ in range(iterations):
        bi = np.bincount(i, r - mean - bu[u], n_items) / (lam + n_i)
        bu = np.bincount(u, r - mean - bi[i], n_users) / (lam + n_u)
    return bu, bi


def rmse(pred, truth):
    pred = np.clip(pred, 0.5, 5.0)
    return float(np.sqrt(np.mean((pred.astype(np.float64) - truth) ** 2)))


bu, bi = baseline_biases(args.baseline_lambda)
baseline = rmse(mean + bu[users[test]] + bi[items[test]], ratings[test])


class BiasedMF(nn.Module):
    def __init__(self):
        super().__init__()
        self.user = nn.Embedding(n_users, args.dim)  # sparse=False: dense gradients
        self.item = nn.Embedding(n_items, args.dim)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.user.weight, std=0.05)
        nn.init.normal_(self.item.weight, std=0.05)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)

    def forward(self, u, i):
        p, q = self.user(u), self.item(i)
        pred = mean + self.user_bias(u)[:, 0] + self.item_bias(i)[:, 0] + (p * q).sum(dim=1)
        return pred, (p * p).sum(dim=1) + (q * q).sum(dim=1)


torch.manual_seed(args.seed)
model = BiasedMF()
opt = lockstep.torch.DistributedOptimizer(torch.optim.Adagrad(model.parameters(), lr=args.lr),
                                          model, micro_batches=args.micro_batches)
lockstep.torch.broadcast_parameters(model)

U, I, R = torch.from_numpy(users), torch.from_numpy(items), torch.from_numpy(ratings)
train_t = torch.from_numpy(train)
per_rating = 1.0 / len(train)


def loss_of(idx):
    pred, norms = model(U[idx], I[idx])
    tables = (args.l2_factors * (model.user.weight.pow(2).sum() + model.item.weight.pow(2).sum())
              + args.l2_biases * (model.user_bias.weight.pow(2).sum()
                                  + model.item_bias.weight.pow(2).sum()))
    return (pred - R[idx]).pow(2).mean() + args.reg * norms.mean() + per_rating * tables


G, M = args.batch, args.micro_batches
steps, t0 = 0, time.perf_counter()
for epoch in range(args.epochs):
    order = train_t[torch.randperm(len(train_t),
                                   generator=torch.Generator().manual_seed(args.seed + epoch))]
    for start in range(0, len(order) - G + 1, G):
        rows = order[start:start + G]
        opt.zero_grad()
        if M:
            per = G // M
            for k in lockstep.torch.micro_batch_range(M):
                loss_of(rows[k * per:(k + 1) * per]).backward()
        else:
            share = G // world
            loss_of(rows[rank * share:(rank + 1) * share]).backward()
        opt.step()
        steps += 1
elapsed = time.perf_counter() - t0
opt.close()

with torch.no_grad():
    pred, _ = model(U[test], I[test])
model_rmse = rmse(pred.numpy(), ratings[test])
h = hashlib.sha256()
for t in model.state_dict().values():
    h.update(t.detach().contiguous().numpy().tobytes())
print(json.dumps({
    "example": "recommend", "mode": "exact" if M else "bucketed", "micro_batches": M,
    "world": world, "rank": rank, "steps": steps, "global_batch": G,
    "users": n_users, "items": n_items, "train_ratings": len(train), "test_ratings": len(test),
    "test_rmse": round(model_rmse, 4), "baseline_rmse": round(baseline, 4),
    "mean_only_rmse": round(rmse(np.full(len(test), mean), ratings[test]), 4),
    "train_seconds": round(elapsed, 2), "samples_per_s": round(steps * G / elapsed, 1),
    "weights_sha256": h.hexdigest()}), flush=True)
