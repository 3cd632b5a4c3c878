"""`python3 -m lockstep_client send`: stream a Parquet or CSV file into a running job.

    python3 -m lockstep_client send --bootstrap HOST:PORT --producer ID FILE \
        [--batch-rows N] [--rows START:END] [--cluster NAME] [--offset N]

The token comes from LOCKSTEP_TOKEN. `--bootstrap` may also be a run directory or its
endpoints.json. Prints the job's account of the stream as JSON (rows, duplicates, rows/s).
"""

import argparse
import json
import os
import sys
import time

from . import LockstepError, Producer, bootstrap_from_endpoints


def _read(path):
    if path.endswith(".csv"):
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path)
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _send(args):
    table = _read(args.file)
    if args.rows:
        start, _, end = args.rows.partition(":")
        start = int(start or 0)
        end = int(end) if end else table.num_rows
        table = table.slice(start, max(0, end - start))
    bootstrap = args.bootstrap
    if os.path.exists(bootstrap):
        bootstrap = bootstrap_from_endpoints(bootstrap)
    t = time.perf_counter()
    p = Producer(
        bootstrap,
        producer=args.producer,
        cluster=args.cluster,
        offset=args.offset,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    for batch in table.to_batches(max_chunksize=args.batch_rows):
        p.send(batch)
    result = p.close()
    secs = time.perf_counter() - t
    result.update(
        producer=args.producer,
        sent=table.num_rows,
        resume_offset=p.resume_offset,
        seconds=round(secs, 3),
        rows_per_s=round(table.num_rows / max(secs, 1e-9)),
    )
    print(json.dumps(result))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m lockstep_client")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send", help="stream a Parquet or CSV file")
    s.add_argument("--bootstrap", required=True, help="HOST:PORT, or a run directory / endpoints.json")
    s.add_argument("--producer", type=int, required=True, help="producer id, 0..N-1")
    s.add_argument("--batch-rows", type=int, default=1024)
    s.add_argument("--rows", help="START:END, rows of the file to send")
    s.add_argument("--cluster", help="cluster name (default: the name the server announces)")
    s.add_argument("--offset", type=int, default=0, help="offset of the first row sent")
    s.add_argument("--tls-ca", help="cluster.tls: the cluster CA (PEM)")
    s.add_argument("--tls-cert", help="cluster.tls: this producer's certificate (names producer-<id>)")
    s.add_argument("--tls-key", help="cluster.tls: this producer's key")
    s.add_argument("file")
    args = ap.parse_args(argv)
    try:
        _send(args)
    except LockstepError as e:
        print(f"lockstep_client: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
