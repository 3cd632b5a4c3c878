"""Data-parallel PyTorch training over Lockstep.

    import lockstep, lockstep.torch
    lockstep.init()
    opt = lockstep.torch.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model)
    lockstep.torch.broadcast_parameters(model)
    for x, y in batches:
        opt.zero_grad()
        loss_fn(model(x), y).backward()   # gradients are reduced while backward goes on
        opt.step()                        # waits for the last buckets, then steps

Gradients are copied by hooks into fixed buckets (in the reverse order of the parameters, the
order backward produces them); a full bucket is averaged over all ranks on a background thread
while backward continues. The buckets, their sizes and the reduction order are fixed, so two
runs give the same weights.

With ``micro_batches=M`` (a power of two) every global batch is cut into M equal micro-batches,
rank r runs backward once per micro-batch of its share, ``micro_batch_range(M, r, W)``
(``floor(r*M/W) .. floor((r+1)*M/W) - 1``), and the M gradients are summed in one fixed binary
tree over the micro-batches, whoever computed them: when the world size W divides M, locally
and then by recursive doubling across ranks; otherwise (3 ranks of 4 micro-batches, after an
elastic loss) every rank gathers all M gradients and sums the same tree. Any W from 1 to M gives
identical weights.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import torch

import lockstep


def micro_batch_range(micro_batches, rank=None, size=None):
    """The micro-batches rank ``rank`` (default: this one) of ``size`` runs under the micro-batch
    rule: ``range(floor(rank*M/size), floor((rank+1)*M/size))``."""
    rank = lockstep.rank() if rank is None else rank
    size = lockstep.size() if size is None else size
    return range(rank * micro_batches // size, (rank + 1) * micro_batches // size)


def _params(optimizer):
    seen, out = set(), []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def _tree(tensors):
    """Sum ``tensors`` (a power-of-two count) pairwise: ((t0+t1)+(t2+t3))+...; into the first."""
    while len(tensors) > 1:
        for j in range(0, len(tensors), 2):
            tensors[j].add_(tensors[j + 1])
        tensors = tensors[::2]
    return tensors[0]


class DistributedOptimizer:
    """Wraps ``optimizer``: ``step()`` first makes every gradient the mean over all ranks.

    ``bucket_bytes``: gradient bytes per reduction (fixed; the buckets never depend on timing).
    ``micro_batches``: the exact mode described in the module's documentation.
    """

    def __init__(self, optimizer, model=None, bucket_bytes=1 << 20, micro_batches=None):
        if not lockstep.is_initialized():
            raise RuntimeError("call lockstep.init() before DistributedOptimizer")
        self.optimizer = optimizer
        self.model = model
        self._params = _params(optimizer)
        for p in self._params:
            if p.dtype != torch.float32 or p.device.type != "cpu":
                raise TypeError(f"DistributedOptimizer: parameter of dtype {p.dtype} on "
                                f"{p.device}; float32 CPU parameters are supported")
        self._size = lockstep.size()
        self._passes = 1
        if micro_batches is not None:
            m = int(micro_batches)
            if m < 1 or m & (m - 1) or m < self._size:
                raise ValueError(f"micro_batches = {m} must be a power of two of at least the "
                                 f"world size {self._size}")
            self._passes = len(micro_batch_range(m, lockstep.rank(), self._size))
            # Recursive doubling sums the same tree when every rank holds an aligned block.
            self._doubling = m % self._size == 0 and self._size & (self._size - 1) == 0
        self._micro = micro_batches
        # Offsets in the reverse order of the parameters: backward produces the last first.
        order = list(reversed(range(len(self._params))))
        self._offset = [0] * len(self._params)
        total, buckets, current, current_bytes = 0, [], [], 0
        for i in order:
            n = self._params[i].numel()
            self._offset[i] = total
            total += n
            current.append(i)
            current_bytes += 4 * n
            if current_bytes >= bucket_bytes:
                buckets.append(current)
                current, current_bytes = [], 0
        if current:
            buckets.append(current)
        self._total = total
        self._buckets = buckets
        self._bucket_of = {}
        self._range = []
        for b, members in enumerate(buckets):
            start = min(self._offset[i] for i in members)
            end = max(self._offset[i] + self._params[i].numel() for i in members)
            self._range.append((start, end))
            for i in members:
                self._bucket_of[i] = b
        self._slots = [torch.zeros(total, dtype=torch.float32) for _ in range(self._passes)]
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lockstep-reduce")
        self._reset()
        # Alone and not exact: nothing to reduce, so no hooks and no copies (costs nothing).
        self._alone = self._size == 1 and micro_batches is None
        self._hooks = [] if self._alone else [
            p.register_hook(self._hook(i)) for i, p in enumerate(self._params)]

    # -- hooks -------------------------------------------------------------------------------
    def _reset(self):
        self._seen = [0] * len(self._params)
        self._pending = [len(m) * self._passes for m in self._buckets]
        self._futures = [None] * len(self._buckets)

    def _hook(self, i):
        p = self._params[i]
        off, n = self._offset[i], p.numel()

        def hook(grad):
            with self._lock:
                k = self._seen[i]
                if k >= self._passes:
                    raise RuntimeError(
                        f"DistributedOptimizer: backward ran {k + 1} times before step() for a "
                        f"parameter of shape {tuple(p.shape)}; expected {self._passes} per step")
                self._seen[i] = k + 1
            self._slots[k][off:off + n].copy_(grad.reshape(-1))
            with self._lock:
                b = self._bucket_of[i]
                self._pending[b] -= 1
                ready = self._pending[b] == 0 and self._micro is None
            if ready:
                self._futures[b] = self._pool.submit(self._reduce, b)
            return grad
        return hook

    def _reduce(self, b):
        start, end = self._range[b]
        lockstep.allreduce_(self._slots[0][start:end], op="mean")

    # -- the step ----------------------------------------------------------------------------
    def synchronize(self):
        """Wait until every gradient is reduced and write them into ``p.grad``."""
        if self._alone:
            return
        if self._micro is None:
            for b in range(len(self._buckets)):
                if self._futures[b] is None:
                    # Parameters without a gradient this step (unused in the forward pass)
                    # contribute zeros, so every rank reduces the same buckets.
                    for i in self._buckets[b]:
                        if self._seen[i] == 0:
                            off, n = self._offset[i], self._params[i].numel()
                            self._slots[0][off:off + n].zero_()
                    self._futures[b] = self._pool.submit(self._reduce, b)
            for f in self._futures:
                f.result()
            flat = self._slots[0]
        else:
            for i, seen in enumerate(self._seen):
                if seen != self._passes:
                    raise RuntimeError(
                        f"DistributedOptimizer: {seen} backward passes for a parameter of shape "
                        f"{tuple(self._params[i].shape)}; micro_batches = {self._micro} over "
                        f"{self._size} ranks needs {self._passes} per step")
            flat = self._exact_sum()
            flat.div_(self._micro)
        for i, p in enumerate(self._params):
            g = flat[self._offset[i]:self._offset[i] + p.numel()].view_as(p)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
        self._reset()

    def _exact_sum(self):
        """The sum of all M micro-batch gradients in the fixed binary tree over micro-batches."""
        if self._doubling:
            slots = _tree(list(self._slots))  # this rank's aligned block
            lockstep.allreduce_(slots, op="sum", exact=True)
            return slots
        # Gather every rank's micro-batch gradients (padded to the largest share) and sum the
        # whole tree here: the same additions in the same order on every rank.
        m, w, n = self._micro, self._size, self._total
        most = -(-m // w)
        mine = torch.zeros(most, n, dtype=torch.float32)
        for k, s in enumerate(self._slots):
            mine[k].copy_(s)
        every = lockstep.allgather(mine)  # (w, most, n)
        grads = []
        for r in range(w):
            grads.extend(every[r, k] for k in range(len(micro_batch_range(m, r, w))))
        return _tree(grads).clone()

    def step(self, closure=None):
        self.synchronize()
        return self.optimizer.step(closure)

    def zero_grad(self, set_to_none=False):
        return self.optimizer.zero_grad(set_to_none=set_to_none)

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state):
        return self.optimizer.load_state_dict(state)

    def close(self):
        """Remove the hooks and stop the reduction thread (also on exit from a ``with``)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self._pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def broadcast_parameters(model_or_params, root=0):
    """Give every rank rank ``root``'s parameters and buffers (in place)."""
    if isinstance(model_or_params, torch.nn.Module):
        tensors = list(model_or_params.state_dict().values())
    else:
        tensors = list(model_or_params)
    with torch.no_grad():
        for t in tensors:
            lockstep.broadcast_(t.data if hasattr(t, "data") else t, root=root)


def broadcast_optimizer_state(optimizer, root=0):
    """Give every rank rank ``root``'s optimizer state tensors (momentum, Adam moments) and
    hyper-parameters. Every rank must have the same state layout (for instance all after the
    same number of steps, or all before the first)."""
    if isinstance(optimizer, DistributedOptimizer):
        optimizer = optimizer.optimizer
    with torch.no_grad():
        for p in _params(optimizer):
            for key in sorted(optimizer.state.get(p, {})):
                v = optimizer.state[p][key]
                if torch.is_tensor(v):
                    lockstep.broadcast_(v, root=root)
        for group in optimizer.param_groups:
            for key in sorted(group):
                v = group[key]
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    t = torch.tensor([float(v)], dtype=torch.float64)
                    lockstep.broadcast_(t, root=root)
                    group[key] = type(v)(t.item())
