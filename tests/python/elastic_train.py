"""An elastic PyTorch run for tests/python_torch.rs: the MLP of examples/pytorch/train_mlp.py on
its synthetic data, the micro-batch rule (4 micro-batches of 16 rows), a commit every 5 steps,
under lockstep.elastic.run. `--die-rank R --die-at S`: the first process of slot R kills itself
(SIGKILL) at step S. Prints one JSON line per process at the end."""
import argparse
import hashlib
import json
import os
import signal
import time

import torch
import torch.nn as nn

import lockstep
import lockstep.elastic
import lockstep.torch

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=60)
p.add_argument("--die-rank", type=int, default=-1)
p.add_argument("--die-at", type=int, default=-1)
p.add_argument("--gen-file", default=None,
               help="slot 0 writes its generation here; a restarted process waits for generation "
                    "2 before joining (so it joins a running job)")
args = p.parse_args()

torch.set_num_threads(1)
slot = int(os.environ.get("RANK", "0"))
first_life = os.environ.get("LOCKSTEP_RESTARTS", "0") == "0"
if not first_life and args.gen_file:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if int(open(args.gen_file).read() or 0) >= 2:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
g = torch.Generator().manual_seed(1234)
x_all = torch.randn(4096, 784, generator=g)
y_all = (x_all @ torch.randn(784, 10, generator=g)).argmax(dim=1)
torch.manual_seed(7)
model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                      nn.Linear(128, 10))
loss_fn = nn.CrossEntropyLoss()
state = lockstep.elastic.State(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
M, G = 4, 64


def train(state):
    if args.gen_file and slot == 0:
        with open(args.gen_file + ".tmp", "w") as f:
            f.write(str(state.generation))
        os.replace(args.gen_file + ".tmp", args.gen_file)
    with lockstep.torch.DistributedOptimizer(state.optimizer, state.model, micro_batches=M) as opt:
        while state.step < args.steps:
            if first_life and slot == args.die_rank and state.step == args.die_at:
                os.kill(os.getpid(), signal.SIGKILL)
            opt.zero_grad()
            start = (state.step * G) % (x_all.shape[0] - G + 1)
            per = G // M
            for k in lockstep.torch.micro_batch_range(M):
                lo = start + k * per
                loss_fn(state.model(x_all[lo:lo + per]), y_all[lo:lo + per]).backward()
            opt.step()
            state.step += 1
            if state.step % 5 == 0:
                state.commit()


lockstep.elastic.run(train, state)
h = hashlib.sha256()
for t in model.state_dict().values():
    h.update(t.detach().contiguous().numpy().tobytes())
print(json.dumps({"slot": slot, "weights_sha256": h.hexdigest(), "generation": state.generation,
                  "rejoins": state.rejoins, "world": lockstep.size() if lockstep.is_initialized()
                  else None}), flush=True)
