"""optim.AdamW against torch's AdamW: its Triton program (through Triton's interpreter on the
CPU, and on CUDA inside a CUDA graph) and its fall-back through torch's fused op."""

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import requires_cuda

COMPARE = """
import sys
import torch
from cce_bench import kernels
from cce_bench.optim import AdamW

if sys.argv[1] == "program":
    kernels._triton_takes = lambda tensor: True
gen = torch.Generator().manual_seed(0)
shapes = [(300, 8), (1000,), (7, 3, 5)]
ours = [torch.randn(s, generator=gen).requires_grad_() for s in shapes]
ref = [p.detach().clone().requires_grad_() for p in ours]
mine = AdamW(ours, lr=0.01, weight_decay=0.1)
torch_s = torch.optim.AdamW(ref, lr=0.01, weight_decay=0.1)
for step in range(6):
    grads = [torch.randn(s, generator=gen) for s in shapes]
    for k, (p, q, g) in enumerate(zip(ours, ref, grads)):
        if step == 2 and k == 1:
            continue  # a parameter without a gradient at a step is not updated, as torch does
        p.grad, q.grad = g.clone(), g.clone()
    mine.step()
    torch_s.step()
    for p in ours + ref:
        p.grad = None
for p, q in zip(ours, ref):
    torch.testing.assert_close(p, q, rtol=1e-6, atol=2e-6)
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(mine.state[p][key], torch_s.state[q][key], rtol=1e-6, atol=1e-7)
    assert float(mine.state[p]["step"]) == float(torch_s.state[q]["step"])
assert [float(mine.state[p]["step"]) for p in ours] == [6.0, 5.0, 6.0]
assert not kernels._failed, kernels._failed
"""


@pytest.mark.parametrize("path", ["torch", "program"])
def test_adamw_takes_the_steps_torch_s_adamw_takes(path):
    env = dict(os.environ)
    if path == "program":
        pytest.importorskip("triton")
        env["TRITON_INTERPRET"] = "1"  # the program run with numpy: no GPU needed
    done = subprocess.run([sys.executable, "-c", COMPARE, path], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@requires_cuda
@pytest.mark.gpu
def test_adamw_on_cuda_in_a_graph_matches_torch_s_fused_adamw():
    from cce_bench import kernels
    from cce_bench.optim import AdamW

    gen = torch.Generator().manual_seed(1)
    shapes = [(100_003, 32), (4099,), (1,)]
    ours = [torch.randn(s, generator=gen).cuda().requires_grad_() for s in shapes]
    ref = [p.detach().clone().requires_grad_() for p in ours]
    mine = AdamW(ours, lr=1e-3, weight_decay=0.01)
    theirs = torch.optim.AdamW(ref, lr=1e-3, weight_decay=0.01, fused=True, capturable=True)
    grads = [torch.randn(s, generator=gen).cuda() for s in shapes]

    def step():
        for p, q, g in zip(ours, ref, grads):
            p.grad, q.grad = g * 1.0, g * 1.0
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
    for k in range(10):
        for g in grads:
            g.normal_(generator=None)
        graph.replay()
    torch.cuda.synchronize()
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        assert float(mine.state[p]["step"]) == 11.0
    assert not kernels._failed
