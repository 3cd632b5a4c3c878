"""A bad value in a later batch (tests/stream_paths.rs runs this).

Usage: python3 bad_value.py BOOTSTRAP DATA.parquet START END
Producer 0 sends rows START..END of DATA in batches of 64; the third batch has a null label.
The job must refuse that batch with its reason (LockstepError) and keep the rows before it;
the producer then reconnects at the bad batch's offset and sends the rest, corrected.
Prints one JSON object: error, resume_offset, result. Needs LOCKSTEP_TOKEN and the client on
PYTHONPATH.
"""

import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from lockstep_client import LockstepError, Producer

bootstrap, data, start, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = pq.read_table(data).slice(start, end - start)
out = {}

p = Producer(bootstrap, producer=0)
try:
    p.send(rows.slice(0, 64))
    p.send(rows.slice(64, 64))
    bad = rows.slice(128, 64)
    i = bad.schema.get_field_index("Status")
    labels = bad["Status"].to_pylist()
    labels[5] = None
    bad = bad.set_column(i, "Status", pa.array(labels, type=bad.schema.field(i).type))
    p.send(bad)
    p.send(rows.slice(192, 64))
    p.close()
    out["error"] = "accepted"
except LockstepError as e:
    out["error"] = str(e)

# Reconnect where the job says this producer's rows continue, with the corrected rows.
p = Producer(bootstrap, producer=0, offset=128)
out["resume_offset"] = p.resume_offset
p.send(rows.slice(128, len(rows) - 128))
out["result"] = p.close()
print(json.dumps(out))
