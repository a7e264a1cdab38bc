"""DLRM models of several runs as one stacked model: the dense part of every run in one set of
kernels (issue 12).

A lockstep group of DLRM runs at batch 128 spends about half its step in the two MLPs' GEMMs of
128 rows each, one set of small kernels per run that cannot fill the GPU however many run side
by side (BENCHMARKS.md, session 5). Stacked, layer k of every run is one batched product
(R, B, in) x (R, in, out), and the interaction and the loss are one kernel each for all R runs.

The tables stay each run's own: runs of a group differ in budget, so which tables are full,
hashed or compressed differs, and each member's tables are read by the member's own lookup
(their fused SGD updates, clustering and pq's compression all work as alone). Only the MLPs'
weights and biases are stacked: each layer's weights of all members are concatenated into one
flat leaf tensor, and every member's Parameter re-pointed at its slice (models/stacked.py,
flatten_into), so the members stay the owners of their values and an optimizer over the
members' parameters steps them.

Inside a captured CUDA graph each member's lookup runs on a stream of its own, so the runs'
small table kernels overlap as an unstacked group's branches do; read one after another they
made 9 stacked hash runs 2.1x slower than 9 branches. With the branches, 9 runs at TF32 on an
H200 tie the unstacked group for hash and dhe, ran 1.65x faster for cce, and hold less memory
(BENCHMARKS.md, session 7).

Row r of the inputs (dense (R, B, F_d), categorical (R, B, F)) is run r's batch; the output is
(R, B) logits, row r exactly what member r computes for its batch up to the order of float sums.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dlrm import DLRM
from .stacked import flatten_into, give_grads


class StackedDLRM(nn.Module):
    def __init__(self, models: list[DLRM]):
        super().__init__()
        first = models[0]
        shapes = [_layer_shapes(m) for m in models]
        if any(s != shapes[0] for s in shapes) or len({m.precision for m in models}) != 1:
            raise TypeError("a DLRM stack takes models of one MLP shape and precision")
        self.members = list(models)  # a plain list: the members own their tensors
        self.size, self.precision = len(models), first.precision
        # The members' tables, registered so that parameters() and buffers() name every tensor
        # a captured step reads (a graph is captured again when one moves: pq, cluster()).
        self.tables = nn.ModuleList(t for m in models for t in m.embeddings())
        self.slices: list[tuple[list[nn.Parameter], list[int]]] = []
        self.aliases: list[tuple[nn.Parameter, int]] = []
        self.bottom = self._stack_layers("bottom", [m.bottom for m in models])
        self.top = self._stack_layers("top", [m.top for m in models])
        self.bottom_relu_last = isinstance(first.bottom[-1], nn.ReLU)
        # Each member's vectors in feature order (its lookup computes full, hashed, then other
        # tables; DLRM.order puts them back, after the bottom MLP's vector at 0).
        for r, m in enumerate(models):
            self.register_buffer(f"features{r}", m.order[1:] - 1, persistent=False)
        self.register_buffer("pairs", first.pairs, persistent=False)
        self.streams: list[torch.cuda.Stream] = []  # one a member while a graph is captured

    def _stack_layers(self, name: str, mlps: list[nn.Sequential]) -> list[tuple[str, str]]:
        """Every Linear of the members' MLPs as flat weight and bias parameters, by layer."""
        layers = []
        for k, layer in enumerate(mlps[0]):
            if not isinstance(layer, nn.Linear):
                continue
            keys = (f"{name}{k}_weight", f"{name}{k}_bias")
            for key, attr in zip(keys, ("weight", "bias")):
                params = [getattr(mlp[k], attr) for mlp in mlps]
                _, starts = flatten_into(self, key, params)
                self.slices.append((params, starts))
                self.aliases += [(p, p.data_ptr()) for p in params]
            layers.append(keys)
        return layers

    def _mlp(self, x: torch.Tensor, layers: list[tuple[str, str]], last_relu: bool) -> torch.Tensor:
        """x (R, B, in) through the stacked layers: one baddbmm a layer for all runs."""
        for k, (w_key, b_key) in enumerate(layers):
            bias = getattr(self, b_key).view(self.size, 1, -1)  # (R, 1, out)
            weight = getattr(self, w_key).view(self.size, bias.shape[2], -1)  # (R, out, in)
            x = torch.baddbmm(bias, x, weight.transpose(1, 2))
            if last_relu or k < len(layers) - 1:
                x = F.relu(x)
        return x

    def _vectors(self, r: int, categorical: torch.Tensor) -> torch.Tensor:
        """Member r's tables' vectors for its batch (B, F, D), in fp32 and feature order."""
        return self.members[r]._lookup(categorical[r]).index_select(
            1, getattr(self, f"features{r}"))

    def forward(self, dense: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            # Inside a CUDA graph each member's lookup is a branch of its own, so the runs'
            # small table kernels overlap as in an unstacked group; autograd runs each
            # backward on its forward's stream, so the updates overlap too.
            main = torch.cuda.current_stream()
            if len(self.streams) != self.size:
                self.streams = [torch.cuda.Stream() for _ in range(self.size)]
            parts = []
            for r, stream in enumerate(self.streams):
                stream.wait_stream(main)
                with torch.cuda.stream(stream):
                    parts.append(self._vectors(r, categorical))
            for stream in self.streams:
                main.wait_stream(stream)
        else:
            parts = [self._vectors(r, categorical) for r in range(self.size)]
        vectors = torch.stack(parts)  # (R, B, F, D)
        if self.precision == "bf16":  # as DLRM.forward
            with torch.autocast(dense.device.type, dtype=torch.bfloat16, cache_enabled=False):
                return self._dense(dense, vectors).float()
        return self._dense(dense, vectors)

    def _dense(self, dense: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """DLRM._dense with a leading run axis."""
        r, b, f, d = vectors.shape
        z0 = self._mlp(dense, self.bottom, self.bottom_relu_last)  # (R, B, D)
        parts = torch.cat([z0.unsqueeze(2), vectors.to(z0.dtype)], dim=2).view(r * b, f + 1, d)
        gram = torch.bmm(parts, parts.transpose(1, 2))  # (R B, F + 1, F + 1)
        pairs = gram.flatten(1).index_select(1, self.pairs).view(r, b, -1)
        return self._mlp(torch.cat([z0, pairs], dim=2), self.top, False).squeeze(-1)

    def dense_parameters(self) -> list[nn.Parameter]:
        return [getattr(self, key) for layers in (self.bottom, self.top)
                for pair in layers for key in pair]

    def backward(self, total: torch.Tensor) -> None:
        """Give every member parameter its gradient of total (the sum of the runs' losses):
        the tables' through their own backward (a fused SGD update is applied there), the MLPs'
        as slices of the flat gradients."""
        flat = self.dense_parameters()
        for p in flat:
            p.grad = None  # written afresh each step (and inside a captured graph)
        total.backward()
        for (params, starts), p in zip(self.slices, flat):  # both in layer order
            give_grads(params, starts, p.grad)

    def intact(self) -> bool:
        """Whether every member's MLP still reads the stack's tensors."""
        return all(p.data_ptr() == ptr for p, ptr in self.aliases)

    def refresh(self) -> None:
        """Nothing derived: the members' tables are read through their own modules."""
        return None


def _layer_shapes(model: DLRM) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for mlp in (model.bottom, model.top) for p in mlp.parameters()]
