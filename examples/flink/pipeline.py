"""Apache Flink feeds Lockstep: a PyFlink job that reads credit rows as a stream (Flink's
filesystem source over CSV, streaming mode), cleans and featurises them in Flink SQL, and hands
them to a running Lockstep job from inside Flink: every parallel subtask of the last operator is
one Lockstep producer (its subtask index is the producer id) that batches its rows into Arrow
record batches and sends them through `lockstep_client.Producer`.

    python pipeline.py --run-dir runs/flink --data examples/data/credit_data.parquet

Needs apache-flink (2.3, Java 17) and lockstep-client in the same interpreter; the token comes
from LOCKSTEP_TOKEN. See README.md here for the whole pipeline (run.sh).
"""

import argparse
import json
import os
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from pyflink.common import Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.functions import MapFunction, RuntimeContext
from pyflink.table import StreamTableEnvironment

from lockstep_client import Producer, bootstrap_from_endpoints

# The columns Lockstep trains on, with the Arrow types of the warm-up sample.
SCHEMA = pa.schema(
    [
        ("Status", pa.string()),
        ("Seniority", pa.int64()),
        ("Home", pa.string()),
        ("Time", pa.int64()),
        ("Age", pa.int64()),
        ("Marital", pa.string()),
        ("Records", pa.string()),
        ("Job", pa.string()),
        ("Expenses", pa.int64()),
        ("Income", pa.float64()),
        ("Assets", pa.float64()),
        ("Debt", pa.float64()),
        ("Amount", pa.int64()),
        ("Price", pa.int64()),
    ]
)
SQL_TYPES = {pa.string(): "STRING", pa.int64(): "BIGINT", pa.float64(): "DOUBLE"}

# Featurisation in Flink SQL: normalise the categorical codes, treat the data set's sentinel
# values (99999999 = unknown) and non-positive money amounts as missing, keep the schema.
FEATURISE = """
SELECT row_id,
       LOWER(TRIM(Status)) AS Status, Seniority, LOWER(TRIM(Home)) AS Home, `Time`, Age,
       LOWER(TRIM(Marital)) AS Marital, LOWER(TRIM(Records)) AS Records, LOWER(TRIM(Job)) AS Job,
       Expenses,
       CASE WHEN Income >= 99999999 OR Income <= 0 THEN CAST(NULL AS DOUBLE) ELSE Income END AS Income,
       CASE WHEN Assets >= 99999999 THEN CAST(NULL AS DOUBLE) ELSE Assets END AS Assets,
       CASE WHEN Debt >= 99999999 THEN CAST(NULL AS DOUBLE) ELSE Debt END AS Debt,
       Amount, Price
FROM credit
"""


class SendToLockstep(MapFunction):
    """One Lockstep producer per parallel subtask: buffer rows, send Arrow batches."""

    def __init__(self, bootstrap, batch_rows):
        self.bootstrap = bootstrap
        self.batch_rows = batch_rows

    def open(self, runtime_context: RuntimeContext):
        self.id = runtime_context.get_index_of_this_subtask()
        self.producer = Producer(self.bootstrap, producer=self.id, schema=SCHEMA)
        self.rows = []
        self.sent = 0

    def _flush(self):
        if self.rows:
            cols = list(zip(*self.rows))
            arrays = [pa.array(list(c), type=f.type) for c, f in zip(cols, SCHEMA)]
            self.producer.send(pa.RecordBatch.from_arrays(arrays, schema=SCHEMA))
            self.sent += len(self.rows)
            self.rows = []

    def map(self, row):
        self.rows.append(tuple(row[1:]))  # drop row_id
        if len(self.rows) >= self.batch_rows:
            self._flush()
        return 1

    def close(self):
        self._flush()
        result = self.producer.close()
        print(f"producer {self.id}: sent {self.sent} rows, job took {result}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", required=True, help="the Lockstep run directory (endpoints.json)")
    ap.add_argument("--data", required=True, help="credit_data.parquet")
    ap.add_argument("--parallelism", type=int, default=2, help="= [job.data.stream] producers")
    ap.add_argument("--batch-rows", type=int, default=256)
    args = ap.parse_args()

    # The event source: the rows as CSV (no header), one row id per event.
    table = pq.read_table(args.data).select(SCHEMA.names).cast(SCHEMA)
    table = table.add_column(0, "row_id", pa.array(range(table.num_rows), pa.int64()))
    src = tempfile.mkdtemp(prefix="lockstep-flink-")
    pcsv.write_csv(table, os.path.join(src, "credit.csv"), pcsv.WriteOptions(include_header=False))

    deadline = time.time() + 60
    while True:
        try:
            bootstrap = bootstrap_from_endpoints(args.run_dir)
            break
        except (OSError, ValueError, KeyError):
            if time.time() > deadline:
                raise
            time.sleep(0.2)

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(args.parallelism)
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("python.executable", sys.executable)
    cols = ",\n".join(f"`{f.name}` {SQL_TYPES[f.type]}" for f in SCHEMA)
    t_env.execute_sql(
        f"""CREATE TABLE credit (row_id BIGINT, {cols}) WITH (
              'connector' = 'filesystem', 'path' = '{src}', 'format' = 'csv',
              'csv.null-literal' = '')"""
    )
    featurised = t_env.sql_query(FEATURISE)
    stream = t_env.to_data_stream(featurised)
    n = args.parallelism
    (
        stream.partition_custom(lambda key, parts: key % parts, lambda r: r[0])
        .map(SendToLockstep(bootstrap, args.batch_rows), output_type=Types.INT())
        .set_parallelism(n)
        .filter(lambda x: False)
        .print()
    )
    t = time.perf_counter()
    env.execute("credit rows -> lockstep")
    secs = time.perf_counter() - t
    print(
        json.dumps({"rows": table.num_rows, "flink_seconds": round(secs, 2),
                    "rows_per_s": round(table.num_rows / secs)}),
    )


if __name__ == "__main__":
    main()
