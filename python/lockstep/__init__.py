"""Lockstep for Python: a process group and Lockstep's collectives under your own training loop.

    import lockstep
    lockstep.init()                      # torchrun / Slurm / Kubernetes variables, LOCKSTEP_TOKEN
    lockstep.allreduce_(grad)            # in place: a NumPy float32 array or a CPU tensor
    lockstep.broadcast_(weights, root=0)
    everyone = lockstep.allgather(x)     # shape (size, *x.shape)
    lockstep.barrier()

The arrays' own memory is the send and receive buffer (nothing is copied into Python-owned
buffers); the GIL is released while a collective runs. A dead or frozen peer raises
``lockstep.PeerError`` naming it within the peer timeout; a wrong dtype or a non-contiguous
array raises ``TypeError`` / ``ValueError`` before anything is sent. See docs/python.md.
"""

import numpy as _np

from . import _native

PeerError = _native.PeerError
_group = None


def init(rank=None, world_size=None, master_addr=None, master_port=None, token=None,
         transport=None, peer_timeout_ms=None, connect_timeout_ms=None, manifest=None,
         node=None):
    """Join the process group. Values not given come from the environment: ``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` (torchrun; Slurm's
    ``SLURM_PROCID`` / ``SLURM_NTASKS``; a Kubernetes Indexed Job's ``JOB_COMPLETION_INDEX``),
    ``LOCKSTEP_TOKEN`` (the shared secret), ``LOCKSTEP_TRANSPORT`` (``auto``, ``tcp``, ``shm``),
    ``LOCKSTEP_PEER_TIMEOUT_MS``. Rank 0 serves the rendezvous on ``MASTER_ADDR:MASTER_PORT``.

    ``manifest=PATH, node=NAME`` joins the group a Lockstep manifest describes instead: its
    workers are the ranks (in manifest order), its cluster name, token, transport and peer timeout
    apply, and rank 0 serves the rendezvous at the coordinator node's ``addr``."""
    global _group
    if _group is not None:
        raise RuntimeError("lockstep.init() was already called in this process")
    cluster = None
    if manifest is not None or node is not None:
        m = _from_manifest(manifest, node)
        rank, world_size, cluster = m["rank"], m["world_size"], m["cluster"]
        master_addr, master_port = m["master_addr"], m["master_port"]
        token = token if token is not None else m["token"]
        transport = transport if transport is not None else m["transport"]
        if peer_timeout_ms is None:
            peer_timeout_ms = m["peer_timeout_ms"]
    _group = _native.init(rank=rank, world_size=world_size, master_addr=master_addr,
                          master_port=master_port, token=token, transport=transport,
                          peer_timeout_ms=peer_timeout_ms,
                          connect_timeout_ms=connect_timeout_ms, cluster=cluster)
    return _group


def _from_manifest(path, node):
    """The group a Lockstep manifest describes, as node ``node`` sees it: the workers (in
    manifest order) are the ranks, the cluster name, token (``env:VAR`` read from the
    environment), transport and peer timeout are the manifest's, and rank 0 serves the
    rendezvous at the coordinator node's ``addr`` (which needs a fixed port there)."""
    import os
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib
    if path is None or node is None:
        raise ValueError("lockstep.init: manifest= and node= go together")
    with open(path, "rb") as f:
        m = tomllib.load(f)
    c = m.get("cluster", {})
    nodes = m.get("nodes", [])
    workers = [n["name"] for n in nodes if "worker" in n.get("roles", [])]
    if node not in workers:
        raise ValueError(f"lockstep.init: node {node!r} is not a worker of {path} "
                         f"(workers: {', '.join(workers) or 'none'})")
    coord = [n for n in nodes if "coordinator" in n.get("roles", [])]
    if len(coord) != 1:
        raise ValueError(f"lockstep.init: {path} needs exactly one node with the coordinator role")
    addr = coord[0].get("addr", "127.0.0.1:0")
    host, _, port = addr.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        raise ValueError(f"lockstep.init: nodes.addr of {coord[0]['name']} in {path} is {addr!r}: "
                         "the rendezvous needs a fixed port there")
    token = c.get("token")
    if isinstance(token, str) and token.startswith("env:"):
        var = token[4:]
        token = os.environ.get(var)
        if token is None:
            raise ValueError(f"lockstep.init: cluster.token of {path} reads ${var}, which is not set")
    return {"rank": workers.index(node), "world_size": len(workers), "cluster": c.get("name"),
            "master_addr": host or "127.0.0.1", "master_port": int(port), "token": token,
            "transport": c.get("transport"), "peer_timeout_ms": c.get("peer_timeout_ms")}


def is_initialized():
    return _group is not None


def _g():
    if _group is None:
        raise RuntimeError("lockstep.init() has not been called")
    return _group


def rank():
    """This process's rank."""
    return _g().rank


def size():
    """Number of processes."""
    return _g().size


def local_rank():
    """Rank on this host (``LOCAL_RANK``)."""
    return _g().local_rank


def _is_torch(x):
    return type(x).__module__.split(".")[0] == "torch"


def _array(x, op):
    """The NumPy view of ``x`` that shares its memory, after the checks every collective needs."""
    if _is_torch(x):
        if x.device.type != "cpu":
            raise TypeError(f"{op}: the tensor is on {x.device}; Lockstep reduces CPU tensors")
        if not x.is_contiguous():
            raise ValueError(f"{op}: the tensor is not contiguous; call .contiguous() first "
                             "(the collective works in place on the tensor's memory)")
        if x.requires_grad:
            x = x.detach()
        a = x.numpy()
    elif isinstance(x, _np.ndarray):
        a = x
    else:
        raise TypeError(f"{op}: expected a NumPy array or a CPU torch.Tensor, got {type(x).__name__}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{op}: the array is not contiguous; pass np.ascontiguousarray(x) "
                         "(the collective works in place on the array's memory)")
    return a


def _bytes(a):
    return a.reshape(-1).view(_np.uint8)


def allreduce_(x, op="mean", exact=False):
    """Allreduce ``x`` in place over all ranks (``op``: ``"mean"`` or ``"sum"``); float32.
    ``exact=True`` sums in the fixed order of recursive doubling (the micro-batch rule, see
    docs/python.md). Returns ``x``."""
    if op not in ("mean", "sum"):
        raise ValueError(f"allreduce_: op must be 'mean' or 'sum', not {op!r}")
    a = _array(x, "allreduce_")
    if a.dtype != _np.float32:
        raise TypeError(f"allreduce_: dtype {a.dtype} is not supported; use float32")
    if not a.flags.writeable:
        raise ValueError("allreduce_: the array is read-only")
    _g().allreduce_f32(a, mean=(op == "mean"), exact=exact)
    return x


def broadcast_(x, root=0):
    """Copy rank ``root``'s ``x`` into every rank's ``x`` (any dtype, same shape). Returns ``x``."""
    a = _array(x, "broadcast_")
    if not a.flags.writeable:
        raise ValueError("broadcast_: the array is read-only")
    _g().broadcast_u8(_bytes(a), root)
    return x


def allgather(x):
    """Every rank's ``x`` (same shape and dtype everywhere), stacked in rank order: a new array
    (or tensor, for a tensor) of shape ``(size, *x.shape)``."""
    a = _array(x, "allgather")
    out = _np.empty((size(),) + a.shape, dtype=a.dtype)
    _g().allgather_u8(_bytes(a), _bytes(out))
    if _is_torch(x):
        import torch
        return torch.from_numpy(out)
    return out


def barrier():
    """Wait until every rank has called it."""
    _g().barrier()
