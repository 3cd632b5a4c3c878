"""Writes a large Parquet dataset for the streaming benchmark: the MNIST rows of
examples/data/mnist5k.parquet repeated with noise (nothing is downloaded).

usage: make_big_dataset.py OUT_DIR [--gb 4.2] [--files 16] [--row-group 16384]

Rows are cut into chunks of 20,000; a pool of --pool chunks is made once, each copy of a row with
every pixel moved by a seeded random amount in [-24, 24] (clipped to 0..255), labels kept; the
files cycle through the pool (writing is then I/O bound, a few minutes for 4 GB). Files are uncompressed so their size on disk is the data size
(785 bytes per row); OUT_DIR/part-NNNNN.parquet, written in order.
"""
import argparse
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

here = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--gb", type=float, default=4.2)
ap.add_argument("--files", type=int, default=16)
ap.add_argument("--row-group", type=int, default=16384)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--pool", type=int, default=8)
a = ap.parse_args()

src = pq.read_table(os.path.join(here, "..", "examples", "data", "mnist5k.parquet"))
labels = src.column("label").to_numpy()
pix_names = [f"px{i}" for i in range(784)]
pixels = np.stack([src.column(n).to_numpy() for n in pix_names], axis=1).astype(np.int16)
total_rows = int(a.gb * 1e9 / 785) + 1
per_file = -(-total_rows // a.files)
rng = np.random.default_rng(a.seed)
os.makedirs(a.out, exist_ok=True)
chunk = 20000
pool = []
for k in range(a.pool):
    idx = np.arange(k * chunk, (k + 1) * chunk) % len(labels)
    noisy = pixels[idx] + rng.integers(-24, 25, size=(chunk, 784), dtype=np.int16)
    noisy = np.ascontiguousarray(np.clip(noisy, 0, 255).astype(np.uint8).T)
    cols = {"label": pa.array(labels[idx])}
    for j, name in enumerate(pix_names):
        cols[name] = pa.array(noisy[j])
    pool.append(pa.table(cols))
written = 0
for f in range(a.files):
    rows = min(per_file, total_rows - written)
    path = os.path.join(a.out, f"part-{f:05d}.parquet")
    writer = pq.ParquetWriter(path, pool[0].schema, compression="none")
    done = 0
    while done < rows:
        n = min(chunk, rows - done)
        t = pool[((written + done) // chunk) % a.pool].slice(0, n)
        writer.write_table(t, row_group_size=a.row_group)
        done += n
    writer.close()
    written += rows
    print(f"{path}: {rows} rows, {os.path.getsize(path) / 1e9:.2f} GB", flush=True)
print(f"{written} rows in {a.files} files")
