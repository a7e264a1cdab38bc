"""AdamW as torch computes it, each stack's flat tables updated on CUDA by one Triton program.

A stack (models/stacked.py) trains its members' parameters as slices of one flat tensor per
table, but the optimizer holds each member's own parameter, so torch's fused AdamW updated 90
tensors for 45 runs of two tables, at about 2.1 TB/s on an H200, 30-45% of a stacked GMF step
(BENCHMARKS.md, session 9). Here a stack hands its flat tensors over (`use_flat`), and the
members' moments and step counts become slices of flat tensors laid out as their parameters
are, so one program updates the whole flat tensor. The state stays torch's (step, exp_avg,
exp_avg_sq per parameter, step an fp32 device tensor as for `capturable=True`): snapshots,
resets and twins (steps.py, stacking.py) read and write it in place as before. Anything the
program does not take (a member without a gradient, state replaced by a copy) goes through
torch's fused op, and a flat tensor whose state was replaced is laid out again at its next step.
"""

from __future__ import annotations

import torch
from torch import nn

from . import kernels


# A flat tensor goes through the program when it holds at least this many members.
FLAT_MIN_MEMBERS = 4


class FlatSlices:
    """One flat parameter of a stack, its members' parameters and their starts in it, with
    the members' AdamW state as slices of flat tensors of the same layout."""

    def __init__(self, flat: nn.Parameter, params: list[nn.Parameter], starts: list[int]):
        self.flat, self.params, self.starts = flat, params, starts
        self.layout = kernels.adamw_layout([p.numel() for p in params], flat.device)
        self.exp_avg = self.exp_avg_sq = self.steps = None

    def gradient(self) -> torch.Tensor | None:
        """The flat gradient every member's .grad is its slice of (stacked.give_grads), as a
        1-d view; None where a member has none or the grads are laid out otherwise."""
        grads = [p.grad for p in self.params]
        if self.layout is None or any(g is None or not g.is_contiguous() for g in grads):
            return None
        storage, offset = grads[0].untyped_storage(), grads[0].storage_offset() - self.starts[0]
        for g, start in zip(grads, self.starts):
            if (g.untyped_storage().data_ptr() != storage.data_ptr()
                    or g.storage_offset() != offset + start or g.dtype != self.flat.dtype):
                return None
        if offset < 0 or (offset + self.flat.numel()) * self.flat.element_size() > storage.nbytes():
            return None
        return grads[0].as_strided((self.flat.numel(),), (1,), offset)

    def laid_out(self, state: dict) -> bool:
        """Whether every member's state is its slice of this object's flat state."""
        if self.steps is None:
            return False
        size = self.flat.element_size()
        for r, (p, start) in enumerate(zip(self.params, self.starts)):
            s = state.get(p)
            if (not s or s["step"].data_ptr() != self.steps[r].data_ptr()
                    or s["exp_avg"].data_ptr() != self.exp_avg.data_ptr() + start * size
                    or s["exp_avg_sq"].data_ptr() != self.exp_avg_sq.data_ptr() + start * size):
                return False
        return True

    @torch.no_grad()
    def lay_out(self, state: dict) -> None:
        """Give every member flat-laid state holding its current state (zeros where it has
        none, which AdamW treats as no state)."""
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(self.flat), torch.zeros_like(self.flat)
        self.steps = torch.zeros(len(self.params), dtype=torch.float32, device=self.flat.device)
        for r, (p, start) in enumerate(zip(self.params, self.starts)):
            views = {"step": self.steps[r],
                     "exp_avg": self.exp_avg[start:start + p.numel()].view(p.shape),
                     "exp_avg_sq": self.exp_avg_sq[start:start + p.numel()].view(p.shape)}
            for key, value in state.get(p, {}).items():
                views[key].copy_(value)
            state[p] = views


class AdamW(torch.optim.AdamW):
    """torch.optim.AdamW(fused=True, capturable=True) on CUDA, a stack's flat tensors updated
    by one program each."""

    def __init__(self, params, lr: float, weight_decay: float):
        super().__init__(params, lr=lr, weight_decay=weight_decay, fused=True, capturable=True)
        self.flats: list[FlatSlices] = []

    def use_flat(self, slices: list[tuple[nn.Parameter, list[nn.Parameter], list[int]]]) -> None:
        """The stack's flat parameters from now on (a rebuilt stack hands over its new ones).
        A member left out (its run stopped) gets its state as its own copy, so the old flat
        state is freed."""
        kept = {p for _, params, _ in slices for p in params}
        for flat in self.flats:
            for p in flat.params:
                if p not in kept and p in self.state:
                    self.state[p] = {k: v.clone() for k, v in self.state[p].items()}
        # A flat tensor of a few members (a stack of one budget's seeds: three) is left to
        # torch's one launch for many tensors: on the H200 the program a flat tensor made such
        # groups slower (dhe and tt stacks of seeds, before session 14: 8,834 -> 9,148 us a
        # step), where stacks of budgets gained.
        self.flats = [FlatSlices(*s) for s in slices if len(s[1]) >= FLAT_MIN_MEMBERS]

    @torch.no_grad()
    def step(self, closure=None):
        group = self.param_groups[0] if len(self.param_groups) == 1 else None
        if closure is not None or group is None or _torch_only(group) or not self.flats:
            return super().step(closure)
        beta1, beta2 = group["betas"]
        done = []
        for flat in self.flats:
            grad = flat.gradient()
            if grad is None:
                continue
            if not flat.laid_out(self.state):
                flat.lay_out(self.state)
            if kernels.adamw_(flat.flat.data, grad, flat.exp_avg, flat.exp_avg_sq, flat.steps,
                              flat.layout, group["lr"], beta1, beta2, group["eps"],
                              group["weight_decay"]):
                flat.steps.add_(1)
                done.extend(flat.params)
        held = [(p, p.grad) for p in done]
        for p, _ in held:
            p.grad = None  # torch's update below skips them
        try:
            return super().step()
        finally:
            for p, grad in held:
                p.grad = grad


def _torch_only(group: dict) -> bool:
    return (group["amsgrad"] or group["maximize"] or group["differentiable"]
            or isinstance(group["lr"], torch.Tensor)
            or any(isinstance(b, torch.Tensor) for b in group["betas"]))
