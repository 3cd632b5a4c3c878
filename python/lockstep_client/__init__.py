"""Lockstep's producer client: stream Arrow record batches into a running training job.

    from lockstep_client import Producer
    with Producer("127.0.0.1:7100", token="...", producer=0) as p:
        p.send(record_batch)

A producer connects to the job's bootstrap address (the coordinator; `endpoints.json` in the run
directory names it), authenticates with the cluster token, and is sent on to the ingest endpoint
of the worker that trains on its rows. Rows are numbered per producer from `offset` (0 for a
stream sent from its start); rows the job already trained on are dropped and counted by the job
(`resume_offset` tells where training stands), so replaying a stream after a failure never trains
a row twice. Any refusal raises `LockstepError` with the server's reason.
"""

import os
import select
import socket

import pyarrow as pa

from ._wire import LockstepError, connect, handshake, read_msg, tls_context, write_msg

__all__ = ["Producer", "LockstepError", "bootstrap_from_endpoints"]
__version__ = "0.1.0"


def bootstrap_from_endpoints(path):
    """The bootstrap address in a run directory's `endpoints.json` (a file or its directory)."""
    import json

    if os.path.isdir(path):
        path = os.path.join(path, "endpoints.json")
    with open(path) as f:
        ep = json.load(f)
    if "bootstrap" not in ep:
        raise LockstepError(f"{path} has no bootstrap address (is [job.data] source = \"stream\"?)")
    return ep["bootstrap"]


class _SocketSink:
    """A write-only file over a socket that surfaces the server's refusal on a failed write."""

    def __init__(self, producer):
        self._p = producer
        self.closed = False

    def write(self, data):
        self._p._check_refusal()
        try:
            self._p._sock.sendall(data)
        except OSError as e:
            raise self._p._reason(e) from None
        return len(data)

    def flush(self):
        pass

    def close(self):
        self.closed = True


class Producer:
    """One producer (e.g. one Flink subtask) streaming into a job. See the module docs.

    Arguments: `bootstrap` ("HOST:PORT"), `token` (default: $LOCKSTEP_TOKEN), `producer` (its id,
    0..N-1), `cluster` (default: $LOCKSTEP_CLUSTER, else the name the server announces), `offset`
    (offset of the first row sent), `timeout` (seconds for connecting and for the final answer),
    `schema` (a `pyarrow.Schema`; lets `close()` end a stream that sent no batch), and for a job
    with `cluster.tls`: `tls_ca` (the cluster CA's PEM file), `tls_cert` and `tls_key` (this
    producer's certificate, naming `producer-<id>`, and key; `lockstep tls gen --nodes producer-0`).
    """

    def __init__(
        self,
        bootstrap,
        token=None,
        producer=0,
        cluster=None,
        offset=0,
        timeout=30.0,
        schema=None,
        tls_ca=None,
        tls_cert=None,
        tls_key=None,
    ):
        token = token if token is not None else os.environ.get("LOCKSTEP_TOKEN")
        if not token:
            raise LockstepError("no cluster token: pass token= or set LOCKSTEP_TOKEN")
        self.id = int(producer)
        self.offset = int(offset)
        self.timeout = timeout
        self.result = None
        token = token.encode() if isinstance(token, str) else token
        cluster = cluster or os.environ.get("LOCKSTEP_CLUSTER") or None
        node = f"producer-{self.id}"
        hello = {"producer": self.id, "offset": self.offset}
        tls = None
        if tls_ca or tls_cert or tls_key:
            tls = tls_context(tls_ca, tls_cert, tls_key)
        self._tls = tls is not None
        with connect(bootstrap, timeout, tls) as s:
            cluster, _ = handshake(s, token, node, cluster)
            write_msg(s, hello)
            route = read_msg(s)
        if not route.get("ok"):
            raise LockstepError("bootstrap refused: " + route.get("error", "no reason given"))
        self.endpoint = route["endpoint"]
        self.worker = route.get("worker")
        self._sock = connect(self.endpoint, timeout, tls)
        handshake(self._sock, token, node, cluster)
        write_msg(self._sock, hello)
        reply = read_msg(self._sock)
        if not reply.get("ok"):
            self._sock.close()
            raise LockstepError("ingest endpoint refused: " + reply.get("error", "no reason given"))
        self._sock.settimeout(None)
        self.resume_offset = reply.get("resume_offset", 0)
        self._writer = None
        self._schema = schema
        self._sink = _SocketSink(self)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._sock.close()

    def _reason(self, err):
        """The server's reason for closing (it answers before it closes), else `err`."""
        try:
            self._sock.settimeout(5)
            reply = read_msg(self._sock)
            if not reply.get("ok"):
                return LockstepError(f"producer {self.id} refused: " + reply.get("error", "?"))
        except (OSError, LockstepError, ValueError):
            pass
        return LockstepError(f"producer {self.id}: connection lost: {err}")

    def _check_refusal(self):
        readable, _, _ = select.select([self._sock], [], [], 0)
        if readable:
            raise self._reason("the server closed the stream")

    def send(self, batch):
        """Send a `pyarrow.RecordBatch` (or `Table`); blocks while the job's buffer is full."""
        if isinstance(batch, pa.Table):
            for b in batch.to_batches():
                self.send(b)
            return
        if self._writer is None:
            self._writer = pa.ipc.new_stream(self._sink, batch.schema)
        self._writer.write_batch(batch)
        self.offset += batch.num_rows

    def flush(self):
        """Raise now if the job has refused this stream (sends are unbuffered otherwise)."""
        self._check_refusal()

    def close(self):
        """End the stream and return the job's account: {'ok', 'rows', 'duplicates'}."""
        if self.result is not None:
            return self.result
        if self._writer is None:
            if self._schema is None:
                raise LockstepError(
                    f"producer {self.id}: close() before any batch and without schema=: nothing to end"
                )
            self._writer = pa.ipc.new_stream(self._sink, self._schema)
        self._writer.close()
        # The Arrow end-of-stream marker ends the stream; a plain socket also half-closes (a TLS
        # socket cannot without leaving TLS, and needs not).
        if not self._tls:
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self._sock.settimeout(self.timeout)
        try:
            reply = read_msg(self._sock)
        finally:
            self._sock.close()
        if not reply.get("ok"):
            raise LockstepError(f"producer {self.id} refused: " + reply.get("error", "?"))
        self.result = reply
        return reply
