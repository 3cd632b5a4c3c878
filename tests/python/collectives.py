"""One rank of the binding's collective checks (tests/python_binding.rs): every result is
compared with what it must be, and every bad input must raise the documented error."""
import os
import signal
import sys
import time

import numpy as np

import lockstep

mode = sys.argv[1]
if mode == "manifest":
    lockstep.init(manifest=sys.argv[2], node=sys.argv[3])
else:
    lockstep.init()
r, n = lockstep.rank(), lockstep.size()
assert lockstep.local_rank() == r


def raises(exc, text, f):
    try:
        f()
    except exc as e:
        assert text in str(e), f"{exc.__name__} without {text!r}: {e}"
        return
    raise AssertionError(f"no {exc.__name__} ({text})")


if mode == "collectives":
    a = (np.arange(3000, dtype=np.float32).reshape(30, 100) + 1) * (r + 1)
    where = a.ctypes.data
    lockstep.allreduce_(a, op="sum")
    assert a.ctypes.data == where, "the array was replaced, not reduced in place"
    want = (np.arange(3000, dtype=np.float32).reshape(30, 100) + 1) * (n * (n + 1) // 2)
    assert np.allclose(a, want, rtol=1e-6), "wrong sum"
    m = np.full(1000, float(r), dtype=np.float32)
    lockstep.allreduce_(m)  # mean by default
    assert np.allclose(m, (n - 1) / 2), "wrong mean"
    # exact: every rank holds the same bits
    x = np.random.default_rng(r).standard_normal(5000).astype(np.float32)
    lockstep.allreduce_(x, op="sum", exact=True)
    every = lockstep.allgather(x)
    assert every.shape == (n, 5000)
    assert all(every[k].tobytes() == x.tobytes() for k in range(n)), "ranks differ"
    b = np.full((2, 3), r, dtype=np.float64)
    lockstep.broadcast_(b, root=n - 1)
    assert (b == n - 1).all(), "wrong broadcast"
    g = lockstep.allgather(np.array([r, 10 * r], dtype=np.int64))
    assert g.tolist() == [[k, 10 * k] for k in range(n)], g.tolist()
    # bad inputs: named, raised before anything is sent, the group still works afterwards
    raises(ValueError, "not contiguous", lambda: lockstep.allreduce_(np.zeros((4, 4), np.float32)[:, 1]))
    raises(TypeError, "float64", lambda: lockstep.allreduce_(np.zeros(4)))
    raises(TypeError, "NumPy array", lambda: lockstep.allreduce_([1.0, 2.0]))
    ro = np.zeros(4, np.float32)
    ro.flags.writeable = False
    raises(ValueError, "read-only", lambda: lockstep.allreduce_(ro))
    raises(ValueError, "op must be", lambda: lockstep.allreduce_(np.zeros(4, np.float32), op="max"))
    raises(ValueError, "not a rank", lambda: lockstep.broadcast_(np.zeros(4, np.float32), root=n))
    raises(RuntimeError, "already called", lambda: lockstep.init())
    lockstep.barrier()
    z = np.ones(7, np.float32)
    lockstep.allreduce_(z, op="sum")
    assert (z == n).all()
    print(f"ok rank {r} of {n}", flush=True)
elif mode == "manifest":
    x = np.full(4, float(r + 1), dtype=np.float32)
    lockstep.allreduce_(x, op="sum")
    assert (x == n * (n + 1) / 2).all(), x
    print(f"ok rank {r} of {n} from the manifest", flush=True)
elif mode == "frozen-peer":
    if r == 1:
        os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(600)
    t = time.monotonic()
    try:
        lockstep.allreduce_(np.ones(10, np.float32))
    except lockstep.PeerError as e:
        print(f"PeerError after {time.monotonic() - t:.2f} s: {e}", flush=True)
        sys.exit(0)
    print("allreduce returned with a frozen peer", flush=True)
    sys.exit(1)
else:
    sys.exit(f"unknown mode {mode}")
