"""TF32's effect on GMF results, emulated on a CPU (docs/tf32/README.md).

    CCE_BENCH_DATA=/tmp/tf32-data OMP_NUM_THREADS=1 python docs/tf32/emulate.py fp32 fp32.json
    CCE_BENCH_DATA=/tmp/tf32-data OMP_NUM_THREADS=1 python docs/tf32/emulate.py tf32 tf32.json

With "tf32", every matrix product of the methods that `--precision tf32` changes (dhe, tt and
ldim in GMF) takes its inputs rounded to TF32's 10-bit mantissa (round to nearest, ties away,
as the GPU's conversion does) and accumulates in fp32, forward and backward: the backward's
products get the incoming gradient rounded too. Each arm trains the same 18 runs (3 methods x
3 budgets x 2 seeds, 10 epochs, early stopping) on syn-1500-1000000 and writes each run's best
validation point to the JSON file.
"""

import json
import sys
import time

import torch
import torch.nn.functional as F

from cce_bench.config import RunConfig
from cce_bench.datasets import load_dataset
from cce_bench.engine import train


def to_tf32(t: torch.Tensor) -> torch.Tensor:
    """fp32 values rounded to 10 mantissa bits (the low 13 of 23 dropped, ties away)."""
    bits = t.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


class RoundInput(torch.autograd.Function):
    """Rounds in the forward; the gradient passes through (the parameter stays fp32)."""

    @staticmethod
    def forward(ctx, t):
        return to_tf32(t)

    @staticmethod
    def backward(ctx, grad):
        return grad


class RoundGradient(torch.autograd.Function):
    """The identity whose gradient is rounded: the input of a product's backward products."""

    @staticmethod
    def forward(ctx, t):
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad):
        return to_tf32(grad)


def rounded(t):
    if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
        return RoundInput.apply(t)
    return t


def emulate_tf32() -> None:
    """Route the products the methods use through the rounding (a bias or an added matrix is
    added in fp32, as on the GPU)."""
    linear, baddbmm, bmm = F.linear, torch.baddbmm, torch.bmm
    einsum, matmul = torch.einsum, torch.Tensor.__matmul__
    F.linear = lambda x, w, b=None: RoundGradient.apply(linear(rounded(x), rounded(w), b))
    torch.baddbmm = lambda c, a, b, **kw: RoundGradient.apply(
        baddbmm(c, rounded(a), rounded(b), **kw))
    torch.bmm = lambda a, b: RoundGradient.apply(bmm(rounded(a), rounded(b)))
    torch.einsum = lambda eq, *ops: RoundGradient.apply(einsum(eq, *map(rounded, ops)))
    torch.Tensor.__matmul__ = lambda a, b: RoundGradient.apply(matmul(rounded(a), rounded(b)))


def main(arm: str, out: str) -> None:
    torch.set_num_threads(1)
    if arm == "tf32":
        emulate_tf32()
    data = load_dataset("syn-1500-1000000", download=True)
    rows = []
    for method in ("dhe", "tt", "ldim"):
        for ppd in (64, 256, 1024):
            for seed in (0, 1):
                start = time.time()
                run = RunConfig(data.name, method, ppd * 32, seed=seed, epochs=10)
                best = min(train(run, data, "cpu").epochs, key=lambda e: e.val_bce)
                rows.append(dict(method=method, ppd=ppd, seed=seed, val_bce=best.val_bce,
                                 epoch=best.epoch, seconds=time.time() - start))
                print(arm, rows[-1], flush=True)
    with open(out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
