"""AdamW as torch computes it, its update on CUDA one Triton program per parameter tensor.

torch's fused AdamW (`fused=True`) moved 28 bytes a value (read parameter, gradient and both
moments, write three) at about 2.1 TB/s on an H200 in a stacked GMF step, and was the largest
kernel of most stacks: 330 us of hnet's 980 us at syn-100m's 45 runs (BENCHMARKS.md). The
program here does the same arithmetic (kernels/triton_rows.py, `_adamw`) in one pass per
tensor; the stacks hold few, large tensors, so one launch each costs little. The state is
torch's own (step, exp_avg, exp_avg_sq per parameter, step an fp32 device tensor as for
`capturable=True`), so snapshots, resets and twins (steps.py, stacking.py) read it as before,
and anything the program does not take goes through torch's fused op.
"""

from __future__ import annotations

import torch

from . import kernels


class AdamW(torch.optim.AdamW):
    """torch.optim.AdamW(fused=True, capturable=True) on CUDA, updating through the program."""

    def __init__(self, params, lr: float, weight_decay: float):
        super().__init__(params, lr=lr, weight_decay=weight_decay, fused=True, capturable=True)

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None or any(self._torch_only(g) for g in self.param_groups):
            return super().step(closure)
        for group in self.param_groups:
            self._update(group, [p for p in group["params"] if p.grad is not None])
        return None

    @staticmethod
    def _torch_only(group: dict) -> bool:
        return (group["amsgrad"] or group["maximize"] or group["differentiable"]
                or isinstance(group["lr"], torch.Tensor)
                or any(isinstance(b, torch.Tensor) for b in group["betas"]))

    def _update(self, group: dict, params: list[torch.Tensor]) -> None:
        beta1, beta2 = group["betas"]
        args = (group["lr"], beta1, beta2, group["eps"], group["weight_decay"])
        states = [self._state(p) for p in params]
        done = 0
        for p, s in zip(params, states):
            if not kernels.adamw_(p, p.grad, s["exp_avg"], s["exp_avg_sq"], s["step"], *args):
                break
            done += 1
        if done:
            torch._foreach_add_([s["step"] for s in states[:done]], 1)
        rest, rest_states = params[done:], states[done:]
        if rest:  # torch's fused op, as AdamW(fused=True) steps them
            steps = [s["step"] for s in rest_states]
            torch._foreach_add_(steps, 1)
            torch._fused_adamw_(rest, [p.grad for p in rest],
                                [s["exp_avg"] for s in rest_states],
                                [s["exp_avg_sq"] for s in rest_states], [], steps,
                                amsgrad=False, lr=args[0], beta1=beta1, beta2=beta2,
                                weight_decay=args[4], eps=args[3], maximize=False)

    def _state(self, param: torch.Tensor) -> dict:
        state = self.state[param]
        if not state:  # as torch initialises a fused, capturable AdamW's state
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state
