"""Streams into PyTorch: a producer stream (Apache Flink subtasks, ``lockstep_client`` scripts)
as this rank's batches, with offsets for an exactly-once restart.

    import lockstep, lockstep.data
    lockstep.init()
    ds = lockstep.data.StreamDataset("warmup.parquet", label="Status", task="binary",
                                     positive="bad", scaling="standard",
                                     producers=2, global_batch=32, run_dir="runs/stream")
    for x, y in ds:                   # this rank's 32 / size rows of every round, as tensors
        ...                           # forward, backward, DistributedOptimizer.step()
    state = ds.state_dict()           # collective: the round and every producer's offset

The producers connect to ``ds.bootstrap`` (``python3 -m lockstep_client send --bootstrap
runs/stream ...``), exactly as to a ``source = "stream"`` job: the same protocol, the same
authentication with the group's token, the same Arrow schema check, and the rows converted by
the transform fitted on the warm-up sample (the file named first). See docs/python.md.
"""

import json
import os

import numpy as _np

import lockstep
from . import _native

try:  # a torch IterableDataset where PyTorch is installed; NumPy arrays without it
    import torch as _torch
    from torch.utils.data import IterableDataset as _Base
except ImportError:  # pragma: no cover - exercised by the NumPy-only tests
    _torch = None
    _Base = object

_SLOT = 8192


class StreamDataset(_Base):
    """This rank's rows of a producer stream, one batch per round.

    ``path``, ``label``, ``task`` and any other ``[job.data]`` key (``features``, ``positive``,
    ``scaling``, ``categorical``, ``missing``, ...) describe the warm-up sample that fixes the
    schema and the transform, as in a manifest. ``producers``, ``order``, ``bounded``,
    ``buffer_rows``, ``on_silent`` and ``connect_timeout_ms`` are the ``[job.data.stream]`` keys.
    ``global_batch`` rows make a round over all ranks; each rank yields its ``global_batch /
    size`` rows of it as ``(x, y)``: float32 features ``(rows, cols)`` and float32 labels (0/1 for
    binary) or int64 class ids (multiclass), as tensors where PyTorch is installed.

    Producer ``p`` is served by rank ``p * size // producers`` (or by the rank whose
    ``producer_ids`` name it); rank 0 serves the bootstrap on ``bootstrap`` (``ip:port``, default
    its own address, any port) and, with ``run_dir``, writes it to ``run_dir/endpoints.json``.
    ``state`` (a ``state_dict()``) resumes: producers that replay from the start have the rows
    below their offsets dropped as duplicates, so every row is trained exactly once.

    Every rank yields the same number of batches: the ranks agree on each round before taking it
    (one small allgather), and a bounded stream ends on every rank at the same round, when every
    producer has closed (a last partial round is not trained). Iterate it in the main process
    (``DataLoader(ds, batch_size=None)``, no worker processes): its rows already arrive on
    background threads.
    """

    def __init__(self, path, label, task, producers, global_batch, *, order="deterministic",
                 bounded=True, buffer_rows=None, on_silent=None, connect_timeout_ms=None,
                 producer_ids=None, bootstrap=None, host=None, state=None, run_dir=None, seed=0,
                 wait_log_ms=None, **data):
        group = lockstep._g()
        stream = {"producers": int(producers), "order": order, "bounded": bool(bounded)}
        for key, value in (("buffer_rows", buffer_rows), ("on_silent", on_silent),
                           ("connect_timeout_ms", connect_timeout_ms)):
            if value is not None:
                stream[key] = value
        spec = dict(data, path=os.fspath(path), label=label, task=task, source="stream",
                    stream=stream)
        options = {"data": spec, "global_batch": int(global_batch), "seed": int(seed)}
        if producer_ids is not None:
            options["producer_ids"] = [int(p) for p in producer_ids]
        if state is not None:
            options["round"] = int(state["round"])
            options["offsets"] = {int(p): int(o) for p, o in state["offsets"].items()}
        for key, value in (("host", host), ("bootstrap", bootstrap), ("wait_log_ms", wait_log_ms)):
            if value is not None:
                options[key] = value
        self._group = group
        self._stream = _native.Stream(group, json.dumps(options))
        shape = self._stream.shape()
        self.rows, self.cols = shape["rows"], shape["cols"]
        self.feature_names = shape["features"]
        self._classes = shape["classes"]
        self.bootstrap = self._stream.bootstrap
        if run_dir is not None and lockstep.rank() == 0:
            os.makedirs(run_dir, exist_ok=True)
            tmp = os.path.join(run_dir, "endpoints.json.tmp")
            with open(tmp, "w") as f:
                json.dump({"bootstrap": self.bootstrap}, f)
            os.replace(tmp, os.path.join(run_dir, "endpoints.json"))

    @property
    def round(self):
        """The next round to be taken (rounds taken so far, plus the resumed state's)."""
        return self._stream.round

    def __iter__(self):
        while True:
            x = _np.empty((self.rows, self.cols), dtype=_np.float32)
            y = _np.empty(self.rows, dtype=_np.int64 if self._classes else _np.float32)
            if not self._stream.next_into(self._group, x, y):
                return
            if _torch is not None:
                yield _torch.from_numpy(x), _torch.from_numpy(y)
            else:
                yield x, y

    def counts(self):
        """``{"rows": received, "duplicates": dropped}`` over this rank's producers."""
        rows, duplicates = self._stream.counts()
        return {"rows": rows, "duplicates": duplicates}

    def state_dict(self):
        """The round and every producer's offset of its next row to train (all ranks'):
        what ``state=`` resumes from. Collective: call it on every rank at the same round."""
        mine = json.dumps({str(p): o for p, o in self._stream.offsets().items()}).encode()
        if len(mine) > _SLOT:
            raise ValueError(f"StreamDataset.state_dict: {len(mine)} bytes of offsets (at most {_SLOT})")
        slot = _np.frombuffer(mine.ljust(_SLOT), dtype=_np.uint8).copy()
        offsets = {}
        for row in lockstep.allgather(slot):
            offsets.update({int(p): o for p, o in json.loads(bytes(row).decode()).items()})
        return {"round": self.round, "offsets": dict(sorted(offsets.items()))}
