"""Bad producers against a running stream job (tests/stream_train.rs runs this).

Usage: python3 bad_inputs.py BOOTSTRAP CLUSTER DATA.parquet
Prints one JSON object: case -> the error the client raised (or "accepted").
Needs LOCKSTEP_TOKEN and the client on PYTHONPATH.
"""

import io
import json
import os
import socket
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lockstep_client import LockstepError, Producer
from lockstep_client._wire import connect, handshake, read_msg, write_msg

bootstrap, cluster, data = sys.argv[1], sys.argv[2], sys.argv[3]
token = os.environ["LOCKSTEP_TOKEN"].encode()
table = pq.read_table(data).slice(0, 64)
results = {}


def case(name, fn):
    try:
        fn()
        results[name] = "accepted"
    except (LockstepError, OSError) as e:
        results[name] = str(e)


def raw_endpoint(producer=0):
    """Authenticated connection to producer's endpoint, after the hello."""
    with connect(bootstrap, 10) as s:
        handshake(s, token, f"producer-{producer}", cluster)
        write_msg(s, {"producer": producer})
        route = read_msg(s)
    s = connect(route["endpoint"], 10)
    handshake(s, token, f"producer-{producer}", cluster)
    write_msg(s, {"producer": producer})
    reply = read_msg(s)
    assert reply["ok"], reply
    return s


def finish_raw(s, payload):
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    reply = read_msg(s)
    s.close()
    if not reply.get("ok"):
        raise LockstepError("refused: " + reply.get("error", "?"))


def send_table(t, producer=0, **kw):
    p = Producer(bootstrap, token=kw.pop("tok", token), producer=producer, cluster=kw.pop("cl", cluster))
    p.send(t)
    p.close()


def ipc_bytes(t):
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    return sink.getvalue()


case("wrong token", lambda: send_table(table, tok=b"not-the-token"))
case("wrong cluster", lambda: send_table(table, cl="another-cluster"))
case("garbage bytes", lambda: finish_raw(raw_endpoint(), os.urandom(4096)))
full = ipc_bytes(table)
case("truncated IPC message", lambda: finish_raw(raw_endpoint(), full[: len(full) - 200]))
case("missing column", lambda: send_table(table.drop_columns(["Income"])))
bad_type = table.set_column(
    table.schema.get_field_index("Amount"), "Amount", pc.cast(table["Amount"], pa.string())
)
case("wrong type", lambda: send_table(bad_type))
case("producer id out of range", lambda: send_table(table, producer=7))
live = Producer(bootstrap, token=token, producer=1, cluster=cluster)
live.send(table.slice(0, 8))
live.flush()
case("live producer id", lambda: send_table(table, producer=1))
live._sock.close()
print(json.dumps(results))
