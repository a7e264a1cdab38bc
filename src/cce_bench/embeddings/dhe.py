"""Deep Hash Embedding (Kang, Cheng, Yao, Yi, Chen, Hong and Chi, "Learning to Embed
Categorical Features without Embedding Tables for Recommendation", KDD 2021, arXiv:2010.10784).

No table: an id is encoded by k universal hashes into [0, m), m = hash_range (10^6 as in the
paper), each turned into a dense real feature, and an MLP decodes the k features to dim:
    x(i) = T(h_1(i), ..., h_k(i)),   e(i) = W_H+1 f(... f(W_1 x(i) + b_1) ...) + b_H+1,
with H hidden layers of equal width w and f = Mish (the paper's choice; "relu" as an option).
T, the paper's two transformations (distribution option):
- "uniform": h -> 2 h / (m - 1) - 1, uniform on [-1, 1];
- "gaussian": Box-Muller on pairs, u = (h + 1) / m in (0, 1]:
  (u1, u2) -> sqrt(-2 ln u1) (cos 2 pi u2, sin 2 pi u2), approximately N(0, 1) each.
The paper reports the two about equally good; uniform is the default here, as the simpler.
Budget: params(w) = k w + w + (H - 1)(w^2 + w) + w dim + dim (weights and biases), with
k = min(w, 1024): the paper pairs k = 1024 hashes with hidden width 1800, i.e. k about w, and
1024 is the largest k it uses; `n_hashes` fixes k instead. w is the largest width with
params(w) <= num_params; the smallest budget is params(1).
Stores the k hash functions' coefficients (buffer, 4 int64 = 32 bytes each); nothing per id:
the encoding is computed on the fly.
Init: weights N(0, 2 / fan_in) (He), biases 0; the last layer is then scaled so that the
output's root-mean-square over the first 2048 ids equals output_std, since the scale of a
Mish MLP's output has no simple closed form.
Departures: no batch normalisation (the paper uses it between layers) because an embedding's
output must not depend on the other ids of its batch (a single id, or eval mode, would change
it); n_chunks is ignored (the method has no chunks).
Shape: ids (*S) -> (*S, dim).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import kernels
from ..errors import BudgetTooSmall, ConfigError
from .base import CompressedEmbedding
from .hashing import UniversalHash, hash_mod_prime
from .registry import register

MAX_HASHES = 1024  # the paper's k
_PROBE_IDS = 2048  # ids used to set the output scale at init
_ACTIVATIONS = {"mish": F.mish, "relu": F.relu}
# cuBLAS's TF32 tensor-core GEMMs need rows of a multiple of 16 bytes (4 floats): at an odd
# width (2,415 on ml-25m's largest budget) it falls back to kernels 2.4x slower (BENCHMARKS.md).
# Layers at least _ALIGN_FROM wide are run zero-padded to a multiple of _ALIGN floats (8, a
# multiple of 4; 2,416 was the width measured); smaller ones are cheap either way, and padding
# would only add kernels.
_ALIGN, _ALIGN_FROM = 8, 256


def _aligned(n: int) -> int:
    return n if n < _ALIGN_FROM else -(-n // _ALIGN) * _ALIGN


# A batch of MLPs' weight gradients, (out x N) @ (N x in) a member, are long products of small
# matrices at small widths: at ML-1m's DHE widths (2..247) cuBLAS gives them a few 32 x 32 tiles
# each, which run over all N = 4,096 ids on a handful of SMs (8.0 of the 8.8 ms of GEMMs of the
# paper sweep's dhe stacks on an H200, BENCHMARKS.md). Split N into parts, one product each, and
# sum the parts: at least _SPLIT_TILES output tiles of 32 x 32 in all, each part at least
# _SPLIT_MIN_ROWS ids.
_SPLIT_TILES, _SPLIT_MIN_ROWS = 1024, 128
_SPLIT_DEVICES = ("cuda",)  # on a CPU one product is faster


def weight_splits(members: int, rows: int, out: int, inp: int) -> int:
    """How many parts of the ids a batch of weight gradients is summed over (a power of two
    dividing rows; 1: one product)."""
    tiles, parts = members * -(-out // 32) * -(-inp // 32), 1
    while (tiles * parts < _SPLIT_TILES and rows % (2 * parts) == 0
           and rows // (2 * parts) >= _SPLIT_MIN_ROWS):
        parts *= 2
    return parts


class _MemberLinear(torch.autograd.Function):
    """baddbmm(bias, x, weight^T) for a batch of members, x (Z, N, in), weight (Z, out, in), bias
    (Z, 1, out), with the weight gradient summed over weight_splits() parts of the ids on CUDA."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.bias_shape = bias.shape
        return torch.baddbmm(bias, x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        z, n, out = grad.shape
        inp = x.shape[2]
        parts = weight_splits(z, n, out, inp) if grad.device.type in _SPLIT_DEVICES else 1
        g, xs = grad.reshape(z * parts, n // parts, out), x.reshape(z * parts, n // parts, inp)
        grad_w = torch.bmm(g.transpose(1, 2), xs)
        if parts > 1:
            grad_w = grad_w.view(z, parts, out, inp).sum(1)
        return grad_x, grad_w, grad.sum_to_size(ctx.bias_shape)


def run_mlp(x: torch.Tensor, weights, biases, activation) -> torch.Tensor:
    """The MLP on encodings x: (N, k) with weights (out, in) and biases (out,), or a batch of
    MLPs, x (Z, N, k) with weights (Z, out, in) and biases (Z, 1, out). Wide layers run on
    zero-padded copies of x and the weights (_ALIGN): a padded unit's input weights and bias
    are zero, so its value is activation(0) = 0 (Mish and ReLU) and its outgoing weights are
    zero too; the output is the unpadded MLP's up to float rounding (the GEMMs differ), and
    padding's gradient is sliced away."""
    def pad(t: torch.Tensor, *last_dims: int) -> torch.Tensor:
        amounts = [a for n in reversed(last_dims) for a in (0, _aligned(n) - n)]
        return F.pad(t, amounts) if any(amounts) else t

    x = pad(x, x.shape[-1])
    last = len(weights) - 1
    for k, (weight, bias) in enumerate(zip(weights, biases)):
        out, inp = weight.shape[-2:]
        weight, bias = pad(weight, out, inp), pad(bias, out)
        if weight.dim() == 2:
            x = F.linear(x, weight, bias)
        else:
            x = _MemberLinear.apply(x, weight, bias)  # F.linear per member
        if k < last:
            x = activation(x)
    return x[..., :weights[-1].shape[-2]]


def mlp_params(n_hashes: int, width: int, hidden_layers: int, dim: int) -> int:
    """Weights and biases of the k -> w -> ... -> w -> dim MLP with H hidden layers."""
    return (n_hashes * width + width + (hidden_layers - 1) * (width * width + width)
            + width * dim + dim)


@register("dhe")
class DeepHashEmbedding(CompressedEmbedding):
    uses_chunks = False  # n_chunks is ignored

    def __init__(self, vocab: int, num_params: int, dim: int, n_chunks: int = 1, *,
                 hidden_layers: int = 2, n_hashes: int | None = None,
                 distribution: str = "uniform", activation: str = "mish",
                 hash_range: int = 1_000_000, **opts):
        super().__init__(vocab, num_params, dim, **opts)
        if hidden_layers < 1:
            raise ConfigError(f"dhe: hidden_layers must be at least 1, not {hidden_layers}")
        if n_hashes is not None and n_hashes < 1:
            raise ConfigError(f"dhe: n_hashes must be at least 1, not {n_hashes}")
        if distribution not in ("uniform", "gaussian"):
            raise ConfigError(f"dhe: distribution must be 'uniform' or 'gaussian', "
                              f"not '{distribution}'")
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"dhe: activation must be one of {', '.join(_ACTIVATIONS)}, "
                              f"not '{activation}'")
        if hash_range < 2:
            raise ConfigError(f"dhe: hash_range must be at least 2, not {hash_range}")

        def size(width: int) -> int:
            k = n_hashes or min(width, MAX_HASHES)
            return mlp_params(k, width, hidden_layers, dim)

        if num_params < size(1):
            raise BudgetTooSmall("dhe", num_params, size(1),
                                 f"dim {dim}, {hidden_layers} hidden layers of width 1")
        # size() grows with the width: jump near the root of the quadratic, then step.
        width = max(1, int(math.sqrt(num_params / (hidden_layers + 1))))
        while width > 1 and size(width) > num_params:
            width -= 1
        while size(width + 1) <= num_params:
            width += 1
        self.width, self.hidden_layers = width, hidden_layers
        self.n_hashes = n_hashes or min(width, MAX_HASHES)
        self.distribution, self.activation, self.hash_range = distribution, activation, hash_range
        self.hash = UniversalHash(self.n_hashes, hash_range, self.generator)

        shapes = [(width, self.n_hashes)] + [(width, width)] * (hidden_layers - 1) + [(dim, width)]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(shape, generator=self.generator) * math.sqrt(2 / shape[1]))
            for shape in shapes)
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(shape[0])) for shape in shapes)
        with torch.no_grad():
            probe = self.embed(torch.arange(min(vocab, _PROBE_IDS)))
            rms = float(probe.pow(2).mean().sqrt())
            if rms > 0:
                self.weights[-1].mul_(self.output_std / rms)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """The dense hash encoding: ids (N,) -> (N, k) float32."""
        return self.features(self.hash(ids))

    def hash_features(self, ids: torch.Tensor, coefficients: torch.Tensor,
                      width: int | None = None) -> torch.Tensor:
        """This architecture's encoding of G members' ids, each by its own k functions, as
        run_mlp reads it: ids (G, N), coefficients (G, k, 4) -> (G, N, width) float32, width
        by default k padded as run_mlp pads it, the padding zero. The uniform encoding runs as
        one Triton program on CUDA (kernels.dhe_encoding). The Gaussian one pairs this
        member's n_hashes values, so it takes k = n_hashes."""
        width = width or _aligned(coefficients.shape[1])
        if self.distribution == "uniform":
            fused = kernels.dhe_encoding(ids, coefficients, self.hash_range, width)
            if fused is not None:
                return fused
        h = hash_mod_prime(ids, coefficients.unsqueeze(1)) % self.hash_range  # (G, N, k)
        x = self.features(h)
        return F.pad(x, (0, width - x.shape[-1])) if width > x.shape[-1] else x

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """T of the docstring on hash values (*S, k) -> (*S, k) float32 (a stack of runs
        passes (R, N, k))."""
        h = h.to(torch.float64)  # doubles keep all 20 bits of h exact
        m = self.hash_range
        if self.distribution == "uniform":
            return (2 * h / (m - 1) - 1).float()
        u = (h + 1) / m  # (0, 1]
        half = (self.n_hashes + 1) // 2
        if self.n_hashes % 2:  # pair the odd one out with the first; only its cosine is kept
            u = torch.cat([u, u[..., :1]], dim=-1)
        radius = torch.sqrt(-2 * torch.log(u[..., :half]))
        angle = 2 * math.pi * u[..., half:]
        z = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
        return z[..., :self.n_hashes].float()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.hash_features(ids.view(1, -1), self.hash.coefficients.unsqueeze(0))[0]
        x = run_mlp(x, self.weights, self.biases, _ACTIVATIONS[self.activation])
        return x.view(*ids.shape, self.dim)

    def config(self) -> dict:
        return {"n_hashes": self.n_hashes, "width": self.width,
                "hidden_layers": self.hidden_layers, "distribution": self.distribution}
