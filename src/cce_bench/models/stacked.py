"""GMF models of several runs as one stacked model: one gather, one loss, one optimizer update
for all of them (issue 15).

Small GMF steps are bound by kernel launches, not arithmetic (BENCHMARKS.md): a step of 16 runs
launched run by run costs nearly 16 single steps, even from one CUDA graph. R runs of one method
are instead read through one module per table, `Stack`, whose inputs are ids (R, B), row r the
batch of run r, and whose output is (R, B, dim). A kernel then does the work of all R runs.

The members stay the owners of their state. A stack concatenates each trained tensor of its
members into one flat leaf tensor and re-points every member's Parameter (`.data`) at its slice
of it; stacked buffers (hash coefficients, CCE's index, pq's codes) are re-pointed the same way.
So the stacked step trains the members' own parameters in place, and everything else still
works on each member alone: evaluation runs its forward, `cluster()` writes into its (aliased)
tensors, the optimizer keeps its state per member parameter (so one run's state resets alone),
and sizes are counted on it. A member that replaces a tensor (pq when it compresses) breaks
its alias; `intact()` says so and the caller builds a new stack from the members.

Members of one stack are tables of one method over one vocabulary with one dim and n_chunks;
budgets may differ. Where the method's rows differ only in count, each member's rows start at
an offset of the flat table. Where its tensor shapes differ otherwise (dhe's widths, tt's
ranks, ldim's rank), members are read in buckets along a leading run dimension, each member
a zero-padded block of its bucket's shapes (padded.py).
Where a member's values come from a different layout than its own forward reads, the stacked
forward mirrors that forward step for step; tests/models/test_stacked.py checks every method.
"""

from __future__ import annotations

import torch
from torch import nn

# Largest per-id cache of hash values a stack keeps (elements, int32: 512 MB); beyond it the
# hashes are computed every step.
CACHE_ELEMENTS = 1 << 27

from ..embeddings.hashing import hash_members
from ..kernels import take_rows
from .gmf import GMF

# Method class -> its stack class (filled by stacked_tables.py's @stacks).
STACKS: dict[type, type[Stack]] = {}


def stacks(*classes: type):
    """Class decorator: this Stack subclass stacks members of these embedding classes."""
    def wrap(stack: type[Stack]) -> type[Stack]:
        for cls in classes:
            STACKS[cls] = stack
        return stack
    return wrap


def _load() -> None:
    from . import stacked_tables  # noqa: F401 - fills STACKS


def stack_class(method_cls: type) -> type[Stack] | None:
    """The stack for a method's class, None if its runs train one by one."""
    _load()
    return STACKS.get(method_cls)


def flatten_into(owner: nn.Module, key: str, params: list[nn.Parameter]) -> tuple[nn.Parameter,
                                                                                 list[int]]:
    """The params concatenated into one flat leaf parameter `key` of owner (1-d), each param
    re-pointed (.data) at its slice of it, so training the flat tensor trains them in place.
    Returns the flat parameter and each param's start in it, in elements."""
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    owner.register_parameter(key, flat)
    starts = [0]
    for p in params[:-1]:
        starts.append(starts[-1] + p.numel())
    for p, start in zip(params, starts):
        p.data = flat.data[start:start + p.numel()].view(p.shape)
    return flat, starts


def give_grads(params: list[nn.Parameter], starts: list[int], grad: torch.Tensor) -> None:
    """Each param's slice of its flat parameter's gradient, as its own .grad (a view)."""
    for p, start in zip(params, starts):
        p.grad = grad[start:start + p.numel()].view(p.shape)


class Stack(nn.Module):
    """Tables of one method of several runs as one module: ids (R, N) -> (R, N, dim).

    Subclasses build their flat tensors in __init__ with `_flat` (parameters) and
    `_stacked_buffer` / `_hash` (buffers), then read them in forward()."""

    # Whether a sweep stacks runs of different budgets (stacking.stack_key); a stack takes
    # them either way.
    stacks_budgets = True

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len({type(m) for m in members}) != 1:
            raise TypeError("a stack takes tables of one method")
        if len({(m.vocab, m.dim) for m in members}) != 1:
            raise TypeError("a stack takes tables of one vocabulary and dim")
        self.members = list(members)  # a plain list: the members own their tensors
        self.size, self.vocab, self.dim = len(members), members[0].vocab, members[0].dim
        # (flat parameter, the members' parameters, their start in the flat tensor)
        self.slices: list[tuple[nn.Parameter, list[nn.Parameter], list[int]]] = []
        self._aliases: list[tuple[nn.Module, str, bool, int]] = []  # (member, name, param, ptr)

    @property
    def device(self) -> torch.device:
        return self.slices[0][0].device

    def _flat(self, key: str, name: str, order: list[int] | None = None) -> torch.Tensor:
        """Parameter `name` of every member, concatenated into one flat leaf parameter `key`
        (1-d) in member order, or in `order` (member indices); each member's parameter
        becomes a view of its slice. Returns the members' starts in elements, (R,) int64 in
        member order."""
        order = list(range(self.size)) if order is None else order
        params = [self.members[i].get_parameter(name) for i in order]
        flat, starts = flatten_into(self, key, params)
        for i, p in zip(order, params):
            self._aliases.append((self.members[i], name, True, p.data_ptr()))
        self.slices.append((flat, params, starts))
        mine = dict(zip(order, starts))
        return torch.tensor([mine[i] for i in range(self.size)], device=flat.device)

    def _stacked_buffer(self, key: str, name: str) -> torch.Tensor:
        """Buffer `name` (equal shapes) of every member stacked into buffer `key` (R, ...);
        each member's buffer becomes its row."""
        buffers = [m.get_buffer(name) for m in self.members]
        self.register_buffer(key, torch.stack(buffers), persistent=False)
        stacked = getattr(self, key)
        owner, _, leaf = name.rpartition(".")
        for r, member in enumerate(self.members):
            module = member.get_submodule(owner) if owner else member
            module._buffers[leaf] = stacked[r]
            self._aliases.append((member, name, False, stacked[r].data_ptr()))
        return stacked

    def _ints(self, values: list[int]) -> torch.Tensor:
        """One integer per member as an (R,) int64 tensor on the stack's device."""
        return torch.tensor(values, dtype=torch.int64, device=self.device)

    def _hash(self, key: str, name: str) -> StackedHash:
        """The members' UniversalHash `name` as one StackedHash."""
        hashes = [m.get_submodule(name) for m in self.members]
        coefficients = self._stacked_buffer(f"{key}_coefficients", f"{name}.coefficients")
        return StackedHash(coefficients, self._ints([h.m for h in hashes]), self.vocab)

    def _id_base(self, rows: int) -> None:
        """Buffer id_base (R, 1): r x rows, member r's first row in a table of `rows` rows
        per member (ids + id_base index a stacked per-id buffer)."""
        self.register_buffer("id_base", (torch.arange(self.size, device=self.device)
                                         * rows).view(-1, 1), persistent=False)

    def cached(self, width: int) -> bool:
        """Whether a per-id cache of `width` values per member fits CACHE_ELEMENTS."""
        return self.fits_cache(self.size * self.vocab * width)

    @staticmethod
    def fits_cache(elements: int) -> bool:
        """Whether a per-id cache of this many values in all fits CACHE_ELEMENTS."""
        return elements <= CACHE_ELEMENTS

    def all_ids(self) -> torch.Tensor:
        """Every id, once per member: (R, vocab)."""
        return torch.arange(self.vocab, device=self.device).expand(self.size, -1)

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute what the stack derives from its members' buffers (in place), after a
        member changed them (cluster() redraws CCE's hashes)."""
        for module in self.modules():
            if isinstance(module, StackedHash):
                module.refresh()

    def intact(self) -> bool:
        """Whether every member still reads the stack's tensors (False once one replaced a
        tensor, as pq does when it compresses: build a new stack then)."""
        for member, name, is_param, ptr in self._aliases:
            tensor = member.get_parameter(name) if is_param else member.get_buffer(name)
            if tensor.data_ptr() != ptr:
                return False
        return True

    def member_grads(self, grads: list[torch.Tensor]) -> None:
        """Give every member parameter its slice of the flat gradients (in slices' order)."""
        for (_, params, starts), grad in zip(self.slices, grads):
            give_grads(params, starts, grad)


class StackedHash(nn.Module):
    """The members' universal hashes: ids (R, N) -> (R, N, n), row r by member r's n
    functions into [0, m_r) (hashing.py; the same values as each member's own).

    A member's hash of an id changes only when cluster() redraws it, so every id's values are
    computed once into a table (R, vocab, n) and a step gathers them: one kernel instead of the
    hash's dozen over (R, N, n) int64 values. refresh() recomputes the table."""

    def __init__(self, coefficients: torch.Tensor, moduli: torch.Tensor, vocab: int):
        super().__init__()
        self.coefficients, self.moduli = coefficients, moduli  # (R, n, 4), (R,)
        size, n = coefficients.shape[0], coefficients.shape[1]
        self.register_buffer("table", None, persistent=False)
        if size * vocab * n <= CACHE_ELEMENTS and moduli.max() < 2**31:
            ids = torch.arange(vocab, device=moduli.device).expand(size, -1)
            self.table = self._hash(ids).to(torch.int32)
            self.register_buffer("id_base", (torch.arange(size, device=moduli.device)
                                             * vocab).view(-1, 1), persistent=False)

    def _hash(self, ids: torch.Tensor) -> torch.Tensor:
        return hash_members(ids, self.coefficients, self.moduli)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            return self._hash(ids)
        # int32 (R, N, n)
        return take_rows(self.table.view(-1, self.table.shape[2]), ids + self.id_base)

    def refresh(self) -> None:
        if self.table is not None:
            ids = torch.arange(self.table.shape[1], device=self.table.device)
            self.table.copy_(self._hash(ids.expand(self.table.shape[0], -1)))


def flat_slices(model: nn.Module) -> list[tuple[nn.Parameter, list[nn.Parameter], list[int]]]:
    """Every Stack's flat parameters in a stacked model: (flat, the members' parameters, their
    starts), for an optimizer that updates a flat tensor at once (optim.AdamW)."""
    return [s for module in model.modules() if isinstance(module, Stack) for s in module.slices]


def stack_tables(members: list[nn.Module]) -> Stack:
    cls = stack_class(type(members[0]))
    if cls is None:
        raise TypeError(f"{type(members[0]).__name__} tables do not stack")
    return cls(members)


class StackedGMF(nn.Module):
    """R GMF models as one: users, items (R, B) -> logits (R, B), row r model r's."""

    def __init__(self, models: list[GMF]):
        super().__init__()
        self.user = stack_tables([m.user for m in models])
        self.item = stack_tables([m.item for m in models])

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user(users) * self.item(items)).sum(-1)

    def backward(self, total: torch.Tensor) -> None:
        """Give every member parameter its gradient of total (the sum of the runs' losses)."""
        self.member_grads(torch.autograd.grad(total, self.flat_parameters()))

    def flat_parameters(self) -> list[nn.Parameter]:
        """The flat tensors the step differentiates, in member_grads' order."""
        return [flat for table in (self.user, self.item) for flat, _, _ in table.slices]

    def member_grads(self, grads: list[torch.Tensor]) -> None:
        n = len(self.user.slices)
        self.user.member_grads(grads[:n])
        self.item.member_grads(grads[n:])

    def intact(self) -> bool:
        return self.user.intact() and self.item.intact()

    def refresh(self) -> None:
        self.user.refresh()
        self.item.refresh()
