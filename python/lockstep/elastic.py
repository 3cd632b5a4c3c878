"""Elastic, fault-tolerant training from Python, under ``lockstep run --elastic MIN``.

    import lockstep.elastic, lockstep.torch

    def train(state):
        # Called once per generation of the process group (again after a failure or a join):
        # build the DistributedOptimizer here, for this generation's world size.
        with lockstep.torch.DistributedOptimizer(state.optimizer, state.model, micro_batches=4) as opt:
            while state.step < total_steps:
                ...one step with opt (this rank's micro-batches of global batch state.step)...
                state.step += 1
                if state.step % 10 == 0:
                    state.commit()      # in memory; also where waiting replacements are let in

    state = lockstep.elastic.State(model, optimizer)
    lockstep.elastic.run(train, state)

``lockstep run --elastic MIN -n N --max-restarts K -- python3 script.py`` hosts the rendezvous
(it outlives every rank) and starts dead ranks again. When a peer dies or freezes, every survivor
gets ``PeerError`` within the peer timeout, rolls back to its last commit and joins the next
generation; the one with the newest commit sends its state (model, optimizer, step, extras) to
all, replacements included, and ``train`` is called again. With the micro-batch rule the weights
at the end are those of an uninterrupted run. A replacement that starts while the others train
waits at the rendezvous; the members see it at their next ``commit()`` and let it in.
"""
import io
import os
import sys

import lockstep
from . import _native


class _Rejoin(Exception):
    """A replacement waits: every member joins the next generation (raised by commit())."""


class State:
    """What survives a failure: ``model``, ``optimizer``, ``step`` and any picklable ``extra``
    values (a sampler position, an RNG state), committed in memory by :meth:`commit`."""

    def __init__(self, model, optimizer, step=0, **extra):
        self.model = model
        self.optimizer = optimizer
        self.step = step
        self.extra = extra
        self._committed = None
        self._committed_step = -1
        self.generation = 0
        self.rejoins = 0

    def _dump(self):
        import torch
        buf = io.BytesIO()
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "step": self.step, "extra": self.extra}, buf)
        return buf.getvalue()

    def _load(self, data):
        import torch
        s = torch.load(io.BytesIO(data))
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.step = s["step"]
        self.extra = s["extra"]

    def commit(self):
        """Keep the current state in memory as the point to roll back to; then, if a
        replacement waits to join, make every member join the next generation with it."""
        self._committed = self._dump()
        self._committed_step = self.step
        if not _elastic():
            return
        import numpy as np
        n = np.zeros(1, dtype=np.int64)
        if lockstep.rank() == 0:
            n[0] = _native.elastic_waiting()
        lockstep.broadcast_(n, root=0)  # every member decides the same
        if n[0] > 0:
            raise _Rejoin()


def _elastic():
    return os.environ.get("LOCKSTEP_ELASTIC") == "1"


def _log(msg):
    print(f"[lockstep.elastic] {msg}", file=sys.stderr, flush=True)


def _sync(state, source):
    """Everyone takes the state of rank ``source`` (the newest commit)."""
    import numpy as np
    if lockstep.rank() == source:
        data = state._committed if state._committed is not None else state._dump()
    else:
        data = b""
    n = np.array([len(data)], dtype=np.int64)
    lockstep.broadcast_(n, root=source)
    buf = np.frombuffer(bytearray(data) if data else bytearray(int(n[0])), dtype=np.uint8)
    lockstep.broadcast_(buf, root=source)
    if lockstep.rank() != source:
        state._load(buf.tobytes())
    state._committed = buf.tobytes()
    state._committed_step = state.step


def run(train_fn, state, max_generations=100):
    """Run ``train_fn(state)`` until it returns, through failures and joins (see the module's
    documentation); returns what it returns. Without ``lockstep run --elastic`` it joins the
    group with ``lockstep.init()`` once and simply calls ``train_fn``."""
    if not _elastic():
        if not lockstep.is_initialized():
            lockstep.init()
        return train_fn(state)
    for _ in range(max_generations):
        try:
            joined = _native.elastic_join(state._committed_step)
        except lockstep.PeerError as e:  # a member of the new mesh died meanwhile
            _log(f"joining failed ({e}); joining again")
            continue
        if joined is None:
            _log("the job has finished before this process could join; nothing to do")
            return None
        group, generation, source = joined
        lockstep._group = group
        state.generation = generation
        try:
            _sync(state, source)
            _log(f"generation {generation}: rank {lockstep.rank()} of {lockstep.size()}, "
                 f"from step {state.step}")
            result = train_fn(state)
            lockstep.barrier()
            if lockstep.rank() == 0:
                _native.elastic_finish()  # a replacement that comes now is told, not left waiting
            return result
        except lockstep.PeerError as e:
            state.rejoins += 1
            if state._committed is not None:
                state._load(state._committed)
            _log(f"lost a peer ({e}); rolling back to step {state.step} and joining again")
        except _Rejoin:
            state.rejoins += 1
            _log(f"a replacement waits; joining again at step {state.step}")
        finally:
            lockstep._group = None
            group.close()
    raise RuntimeError(f"lockstep.elastic: no stable generation after {max_generations} tries")
