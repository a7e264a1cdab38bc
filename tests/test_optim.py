"""optim.AdamW, the engine's AdamW on CUDA: a stack's flat tables updated by one Triton program
(through Triton's interpreter on the CPU, and on CUDA in the stacked GPU tests of
test_stacked.py), against torch's AdamW on each run alone."""

import pytest
import torch

from tests.conftest import requires_cuda, run_interpreted

# The program alone in the interpreter: members of every size, each at its own step count.
DIRECT = """
import torch
from cce_bench import kernels

kernels._triton_takes = lambda tensor: True
sizes = [5000, 1, 1000, 0, 30, 4096, 8193, 0, 3]
gen = torch.Generator().manual_seed(0)
n = sum(sizes)
p, g, m = (torch.randn(n, generator=gen) for _ in range(3))
v = torch.rand(n, generator=gen)
steps = torch.arange(len(sizes), dtype=torch.float32) * 3  # 0, 3, 6, ...
t = torch.repeat_interleave(steps.double() + 1, torch.tensor(sizes))
lr, b1, b2, eps, wd = 1e-2, 0.9, 0.99, 1e-8, 0.1
want_m = b1 * m.double() + (1 - b1) * g.double()
want_v = b2 * v.double() + (1 - b2) * g.double() ** 2
denom = want_v.sqrt() / (1 - b2 ** t).sqrt() + eps
want_p = p.double() * (1 - lr * wd) - lr / (1 - b1 ** t) * want_m / denom
layout = kernels.adamw_layout(sizes, torch.device("cpu"))
assert kernels.adamw_(p, g, m, v, steps, layout, lr, b1, b2, eps, wd), kernels._failed
for got, want in ((p, want_p), (m, want_m), (v, want_v)):
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
"""

# Runs the stacked-against-alone comparison with optim.AdamW on the CPU and the program in
# Triton's interpreter: budgets that differ (members of different sizes, blocks that end inside
# a member), CCE's clustering (its optimizer-state resets) and early stopping (the stack is
# rebuilt with fewer members, its flat state laid out again).
COMPARE = """
import sys
import pytest
import torch
from cce_bench import engine, kernels, optim
from cce_bench.config import RunConfig
from cce_bench.datasets import load_dataset
from tests.conftest import TINY_DATASET
from tests.test_stacked import assert_same_records, stack_runs

kernels._triton_takes = lambda tensor: True  # every program in the interpreter
launches = []
real = kernels._launch
kernels._launch = lambda name, *a: (launches.append(name) if name == "adamw_members" else None) \\
    or real(name, *a)
engine.make_optimizer = lambda model, run, device: optim.AdamW(
    model.parameters(), lr=run.lr, weight_decay=run.weight_decay)
tiny = load_dataset(TINY_DATASET)
method = sys.argv[1]
if method == "stops":
    runs = stack_runs("hash", epochs=8, lr=0.1, early_stop=0.001, weight_decay=1e-3)
else:
    runs = stack_runs(method, weight_decay=1e-3)
stacked = engine.train_many(runs, tiny, "cpu")
before = len(launches)
alone = [engine.train(run, tiny, "cpu", stepper="static") for run in runs]
assert before and len(launches) == before, (before, len(launches))  # alone: torch's update
if method == "stops":
    assert len({len(r.epochs) for r in alone}) > 1
for a, b in zip(stacked, alone):
    assert_same_records(a, b)
assert "adamw_members" not in kernels._failed, kernels._failed
"""


def test_the_program_steps_each_member_at_its_own_count():
    run_interpreted(DIRECT)


@pytest.mark.parametrize("case", ["hash", "cce", "stops"])
def test_a_stacks_flat_adamw_trains_each_run_as_torch_s_adamw_alone(case):
    run_interpreted(COMPARE, case, timeout=600)


def test_each_value_takes_its_own_members_step_count():
    from cce_bench import kernels

    # members shorter and longer than a block, empty ones, a block meeting four members
    sizes = [5000, 1, 1000, 0, 30, 4096, 8193, 0, 3]
    layout = kernels.adamw_layout(sizes, torch.device("cpu"))
    starts, first = layout.starts.tolist(), layout.first.tolist()
    truth = [r for r, size in enumerate(sizes) for _ in range(size)]
    for i, member in enumerate(truth):  # as the program picks it
        block_first = first[i // kernels.ADAMW_BLOCK]
        picked = block_first
        for j in range(1, layout.span):
            if i >= starts[block_first + j]:
                picked = min(block_first + j, len(sizes) - 1)
        assert picked == member, i
    assert layout.span == 4
    assert kernels.adamw_layout([1] * 100, torch.device("cpu")) is None  # tiny: torch's op


@requires_cuda
@pytest.mark.gpu
def test_flat_adamw_in_a_cuda_graph_matches_torch_s_fused_adamw():
    from cce_bench import kernels
    from cce_bench.models.stacked import flatten_into, give_grads
    from cce_bench.optim import AdamW

    gen = torch.Generator().manual_seed(1)
    shapes = [(100_003, 8), (4099,), (1,), (3, 7)]  # 4 members: optim.FLAT_MIN_MEMBERS
    owner = torch.nn.Module()
    ours = [torch.nn.Parameter(torch.randn(s, generator=gen).cuda()) for s in shapes]
    ref = [p.detach().clone().requires_grad_() for p in ours]
    flat, starts = flatten_into(owner, "flat", ours)
    mine = AdamW(ours, lr=1e-3, weight_decay=0.01)
    mine.use_flat([(flat, ours, starts)])
    theirs = torch.optim.AdamW(ref, lr=1e-3, weight_decay=0.01, fused=True, capturable=True)
    grad = torch.randn(flat.numel(), generator=gen).cuda()

    def step():
        give_grads(ours, starts, grad * 1.0)
        for q, start in zip(ref, starts):
            q.grad = grad[start:start + q.numel()].view(q.shape) * 1.0
        mine.step()
        theirs.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # the state exists before the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for _ in range(10):
        grad.normal_()
        graph.replay()
    torch.cuda.synchronize()
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        assert float(mine.state[p]["step"]) == 11.0
        torch.testing.assert_close(mine.state[p]["exp_avg_sq"], theirs.state[q]["exp_avg_sq"])
    assert mine.flats[0].laid_out(mine.state) and not kernels._failed
