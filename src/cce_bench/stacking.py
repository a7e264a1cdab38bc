"""Stacked training: runs of one method trained as one model (issues 15 and 12).

Which runs stack: runs whose configurations differ only in seed and budget (`stack_key`). GMF
runs become one StackedGMF (models/stacked.py): one gather per table, one loss, one optimizer
update for all of them; where the budget changes a method's shapes, not only its row counts,
the stack reads its members as zero-padded blocks of shared shapes (models/padded.py), or, where
that measured slower (dhe), the sweep stacks one budget's seeds (`Stack.stacks_budgets`). DLRM
runs of one method become a StackedDLRM (models/stacked_dlrm.py), which runs every run's MLPs
as one batched product a layer and reads each run's tables through the run's own modules. One
`StackedEpoch` steps them; to train_many each run still has its own stepper, a `StackMember`
that prepares the run's own shuffle, holds its own summed loss and says when the run stops,
so the schedule (evaluation, clustering, early stopping) is train_many's, run by run.

What keeps each run's numbers its own:
- its model is built alone, from its seed, before stacking; the stack re-points its tensors;
- its batches come from its own permutation (drawn from its own generator, as StaticEpoch
  draws it), gathered per step as a row of ids (R, B);
- its loss is the mean BCE over its batch's real rows, as StaticEpoch's; the step
  differentiates the sum of the runs' losses, and the runs share no parameter, so each gets
  exactly its own gradient; the summed loss is kept per run;
- the runs share one optimizer object (one fused AdamW launch for all), whose state is per
  parameter tensor, and AdamW's update is element-wise, so each run's moments, step count and
  weight decay are its own; a run that stopped has no gradient (the optimizer skips it) and
  leaves the stack at the next rebuild, so its parameters and state stay frozen;
- each run clusters when train_many asks it to, on its own model, with cluster_all's
  optimizer-state reset; the first run to ask at a step has the stack run the k-means of every
  run still training as one batched call (`StackedEpoch.cluster`; kmeans.kmeans_many), and
  each run's round then finishes on its own model from its own centroids, which are the ones
  it gets alone (each job draws from its own seeded generator); a member that replaced a
  tensor (pq's compression) makes the stack rebuild;
- runs of a post-training method (pq) that differ only in budget train identically until
  they compress (a full table, whatever the budget): the stack trains the first of them and
  steps none of the others, its "twins" (`find_twins`). Each twin still draws its own order
  every epoch, counts its own rounds, and scores and sums the loss of its leader. At its
  compressing round it takes its leader's parameters, buffers and optimizer state
  (`StackedEpoch._fork`) and from then on trains as any other run;
- evaluation reads every run's scores from one stacked forward over the split, with each
  row's BCE and AUC (metrics.bce_rows, auc_rows) and one host read for all runs, the first
  time one of them asks at a step; a run's scores depend on its own model only.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import metrics
from .config import RunConfig
from .embeddings.cce import finish_rounds, prepare_rounds
from .embeddings.kmeans import kmeans_many, resolve_backend
from .embeddings.registry import get_method
from .models.dlrm import DLRM
from .models.stacked import Stack, StackedGMF, flat_slices, stack_class
from .models.stacked_dlrm import StackedDLRM
from .order import EpochOrder
from .steps import Split, _Epoch, reset_optimizer_state

# Ids per evaluation chunk, all runs of a stack together (one run alone: 65,536 a chunk).
EVAL_ELEMENTS = 1 << 18


def stack_key(run: RunConfig) -> tuple | None:
    """Runs with equal keys train as one stack; None: the run trains on its own. Everything
    but the seed and the budget must match (and the budget too where the method's stack says
    so: `Stack.stacks_budgets`)."""
    if run.model not in ("gmf", "dlrm"):
        return None
    # DLRM's tables stay each run's own (models/stacked_dlrm.py); GMF's stack by method.
    free = {"seed", "budget"}
    if run.model == "gmf":
        stack = stack_class(get_method(run.method).cls)
        if stack is None:
            return None
        if not stack.stacks_budgets:
            free = {"seed"}
    return (run.method, _config_key(run, free))


def _config_key(run: RunConfig, free: set[str]) -> str:
    """The run's configuration but the `free` fields, as a comparable string."""
    fields = {k: v for k, v in run.to_dict().items() if k not in free}
    return json.dumps(fields, sort_keys=True, default=str)


def plan_stacks(runs: list[RunConfig], max_size: int | None = None) -> list[list[int]]:
    """Indices of the runs, grouped into stacks (in order of first appearance; a run that
    does not stack is a group of one); at most max_size runs a stack."""
    groups: dict[object, list[list[int]]] = {}
    for i, run in enumerate(runs):
        key = stack_key(run)
        chains = groups.setdefault(key if key is not None else ("alone", i), [[]])
        if max_size is not None and len(chains[-1]) >= max_size:
            chains.append([])
        chains[-1].append(i)
    return [group for chains in groups.values() for group in chains]


class StackedEpoch:
    """Static-shape steps of several runs through one stacked model (see module doc).

    The padded epoch is StaticEpoch's: `steps` batches of batch_size, the last one's padding
    weighted 0. Each run's permutation is a row of `order` (R, steps, B); a step reads column
    `cursor` of it, so a CUDA graph of one step replays the whole epoch."""

    def __init__(self, models: list[nn.Module], optimizer: torch.optim.Optimizer, split: Split,
                 batch_size: int, shuffle: str = "rows", twins: dict[int, int] | None = None):
        """twins: run -> an earlier run of the stack whose training it repeats exactly until
        it compresses (`find_twins`); it is not stepped until then (see `_fork`)."""
        self.models, self.optimizer, self.split = models, optimizer, split
        self.batch_size, self.shuffle = batch_size, shuffle
        self.twins = dict(twins or {})
        device = split.labels.device
        n = len(split)
        self.steps = math.ceil(n / batch_size)
        padded = self.steps * batch_size
        self.weight = (torch.arange(padded, device=device) < n).float().view(self.steps,
                                                                             batch_size)
        self.members = [StackMember(self, r) for r in range(len(models))]
        self.active = list(range(len(models)))  # runs still training
        self.built_for: list[int] = []  # the runs the stacked model holds, in its row order
        # int32 rows: a permutation per trained run is the stack's one per-run copy of the
        # epoch; rows[run] is its row of order (a twin has none until it forks).
        index = torch.int32 if padded < 2**31 else torch.int64
        trained = [r for r in range(len(models)) if r not in self.twins]
        self.order = torch.zeros(len(trained), self.steps, batch_size, dtype=index,
                                 device=device)
        self.rows = {r: i for i, r in enumerate(trained)}
        self.forked_from: dict[int, int] = {}  # a twin that forked -> its leader, until rebuilt
        self.loss_sum = torch.zeros(len(models), device=device)  # (R,) one per run
        # loss_sum[targets] += (the model rows' losses)[sources]: a twin sums its leader's.
        self.targets = self.sources = torch.zeros(0, dtype=torch.int64, device=device)
        self.cursor = torch.zeros(1, dtype=torch.int64, device=device)
        self._model: StackedGMF | None = None
        self.dirty = True
        self.pointers: list[int] = []
        self.scores: dict[int, dict[int, list[float]]] = {}  # split -> run -> (BCE, AUC)
        self.scored_step = -1
        # run -> its tables' rounds, computed at clustered_step: each a callable that writes
        # the round and returns what to reset (cce.RoundUpdate.apply, ClusterRound.finish)
        self.rounds: dict[int, dict[nn.Module, Callable[[], list]]] = {}
        self.clustered_step = -1

    @property
    def model(self) -> StackedGMF:
        """The stacked model, first rebuilt if a run stopped or a member replaced a tensor."""
        if self.dirty:
            self._sync()
        return self._model

    def _sync(self) -> None:
        self.dirty = False
        trained = [r for r in self.active if r not in self.twins]
        if self._model is not None and self.built_for == trained and self._model.intact():
            self._model.refresh()  # members changed in place (cluster()): derived caches
            return
        # The rows of the runs still training; a twin that forked takes its leader's row (the
        # same permutation: its generator has drawn what its leader's has).
        keep = [self.rows[self.forked_from.get(r, r)] for r in trained]
        if keep != list(range(len(self.rows))):
            self.order = self.order[torch.tensor(keep, device=self.order.device)]
        self.rows, self.forked_from = {r: i for i, r in enumerate(trained)}, {}
        self._model = stacked_model([self.models[r] for r in trained])
        self.built_for = trained
        if hasattr(self.optimizer, "use_flat"):  # optim.AdamW: one update a flat tensor
            self.optimizer.use_flat(flat_slices(self._model))
        pairs = [(r, i) for i, r in enumerate(trained)]
        pairs += [(t, trained.index(leader)) for t, leader in self.twins.items()
                  if leader in trained]
        device = self.loss_sum.device
        self.targets = torch.tensor([t for t, _ in pairs], dtype=torch.int64, device=device)
        self.sources = torch.tensor([i for _, i in pairs], dtype=torch.int64, device=device)

    def prepare(self, run: int, generator: torch.Generator) -> None:
        """Run `run`'s epoch: its own permutation, as StaticEpoch.prepare draws it."""
        n = len(self.split)
        self.model  # noqa: B018 - a run that forked gets its row first
        order = EpochOrder(n, generator, self.shuffle).all()  # a twin draws it too, unused
        if run in self.rows:
            self.order[self.rows[run]].view(-1)[:n] = order.to(self.order.device)
        self.loss_sum[run].zero_()
        self.cursor.zero_()
        self.models[run].train()

    def retire(self, run: int) -> None:
        """The run stopped: from the next step on it is not stepped (nor its state moved)."""
        if run in self.active:
            self.active.remove(run)
            self.twins.pop(run, None)
            self.dirty = True

    def evaluate(self, run: int, split: Split, step: int) -> tuple[float, float]:
        """(BCE, AUC) of a run on a split after `step` steps; the first run to ask at a step
        has every run of the stack evaluated."""
        if step != self.scored_step:
            self.scores, self.scored_step = {}, step
        if id(split) not in self.scores:
            logits = self._predict(split)  # (R, N)
            values = torch.stack([metrics.bce_rows(logits, split.labels).double(),
                                  metrics.auc_rows(logits, split.labels)], 1).tolist()
            self.scores[id(split)] = dict(zip(self.built_for, values))
        # A twin scores its leader's numbers, also at the step it forks (scored before).
        bce, auc = self.scores[id(split)][self.twins.get(run, self.forked_from.get(run, run))]
        return bce, auc

    @torch.no_grad()
    def cluster(self, run: int, step: int) -> None:
        """A run's clustering round after `step` steps, as engine.cluster_all gives it alone:
        cluster() every table that has it, resetting the optimizer state it asks to reset.

        The first run to ask at a step has the stack compute the round of every table of
        every run still training that can split its round (CCE's, on the torch k-means
        backend; _prepare_rounds): the points of a stack's tables read in one forward, all
        k-means jobs as one call (kmeans_many: one batched set of Lloyd iterations), and what
        each round writes computed for a stack's tables at once. Each run then writes its own
        rounds when it asks; a run that does not ask (it diverged at this step, and alone
        would not cluster) keeps its tables as they were. A run's k-means sees its own points
        and generator either way, so its centroids are the ones it gets alone."""
        # A twin forks at its compressing round, before it or its leader compresses: at the
        # call of whichever of the two comes first (a run's round counter moves at its call).
        mine = [run] if run in self.twins else [t for t, lead in self.twins.items() if lead == run]
        for twin in mine:
            if compresses_next(self.models[twin]):
                self._fork(twin)
        if step != self.clustered_step:
            self.rounds, self.clustered_step = self._prepare_rounds(), step
        prepared = self.rounds.pop(run, {})
        for table in _clustered(self.models[run]):
            if table in prepared:
                reset_optimizer_state(self.optimizer, prepared[table]())
            else:
                reset_optimizer_state(self.optimizer, table.cluster())
        self.dirty = True

    @torch.no_grad()
    def _fork(self, twin: int) -> None:
        """The twin takes its leader's state (parameters, buffers, optimizer state) and trains
        on its own from here: what it would hold had it trained alone."""
        leader = self.twins.pop(twin)
        if not compresses_next(self.models[leader]):
            raise RuntimeError(f"run {twin} of a stack forks from run {leader}, which has "
                               "already compressed")
        self.models[twin].load_state_dict(self.models[leader].state_dict())
        for mine, theirs in zip(self.models[twin].parameters(),
                                self.models[leader].parameters()):
            if theirs in self.optimizer.state:
                self.optimizer.state[mine] = {
                    k: v.clone() if isinstance(v, torch.Tensor) else v
                    for k, v in self.optimizer.state[theirs].items()}
        self.forked_from[twin] = leader
        self.dirty = True

    def _prepare_rounds(self) -> dict[int, dict[nn.Module, Callable[[], list]]]:
        """Every active run's clustering rounds up to what each writes, as each table's
        callable that writes its round and returns what to reset. A stack's tables are
        prepared together (cce.prepare_rounds: one forward of the stack reads their points),
        all k-means run as one kmeans_many call, and a stack's updates are computed together
        (cce.finish_rounds). Other tables (a StackedDLRM reads each run's own) prepare their
        own rounds and finish them at their run's ask, holding no more memory than alone."""
        # Only the torch backend's jobs gain from a batch; a faiss job runs at its own run's ask,
        # as alone: faiss refuses a diverged mate's NaN points, which its run never clusters.
        tables = [(r, t) for r in self.active for t in _clustered(self.models[r])
                  if hasattr(t, "cluster_round")
                  and resolve_backend(t.kmeans_backend, self.order.device) == "torch"]
        # The stacked model reads the tables only while it is in step with them (not dirty);
        # syncing it here would rebuild it under a twin that forked at this step.
        groups = _table_groups(tables, None if self.dirty else self._model)
        prepared = [prepare_rounds([t for _, t in group], stack) if stack is not None
                    else [t.cluster_round() for _, t in group] for group, stack in groups]
        fitted = iter(kmeans_many([round_.job for rounds in prepared for round_ in rounds]))
        updates: dict[int, dict[nn.Module, Callable[[], list]]] = {r: {} for r in self.active}
        for (group, stack), rounds in zip(groups, prepared):
            centroids = [next(fitted) for _ in rounds]
            if stack is not None:
                writes = [u.apply for u in finish_rounds(rounds, centroids, stack)]
            else:
                writes = [functools.partial(r.finish, c) for r, c in zip(rounds, centroids)]
            for (r, t), write in zip(group, writes):
                updates[r][t] = write
        return updates

    @torch.no_grad()
    def _predict(self, split: Split) -> torch.Tensor:
        model = self.model
        for r in self.built_for:
            self.models[r].eval()  # as engine.predict leaves a run's model
        rows = len(self.built_for)
        chunk = max(1, EVAL_ELEMENTS // rows)
        return torch.cat([
            model(*(_repeat(f[s:s + chunk], rows) for f in split.features))
            for s in range(0, len(split), chunk)], dim=1)

    def _step(self) -> None:
        model, slot = self.model, self.cursor
        rows = self.order.index_select(1, slot)[:, 0]  # (R, B) rows of the split
        weight = self.weight.index_select(0, slot)  # (1, B): 0 on the last batch's padding
        count = weight.sum()  # real rows of this batch
        logits = model(*(feature[rows] for feature in self.split.features))  # (R, B)
        losses = F.binary_cross_entropy_with_logits(logits, self.split.labels[rows].float(),
                                                    reduction="none")
        loss = (losses * weight).sum(1) / count  # (R,) each run's StaticEpoch loss
        model.backward(loss.sum())
        self.optimizer.step()
        self.loss_sum.index_add_(0, self.targets, (loss.detach() * count)[self.sources])
        self.cursor += 1

    def step(self) -> None:
        self.model  # noqa: B018 - brings the stack up to date first
        self.optimizer.zero_grad(set_to_none=True)  # a stopped run keeps no gradient
        self._step()

    def feed(self) -> None:
        """Nothing to bring in: the training rows are on the device."""

    def _tensors(self) -> list[torch.Tensor]:
        state = [t for s in self.optimizer.state.values() for t in s.values()
                 if isinstance(t, torch.Tensor)]
        return [*self.model.parameters(), *self.model.buffers(), self.order, self.loss_sum,
                self.targets, self.sources,
                *state]

    def moved(self) -> bool:
        """Whether a captured graph's tensors were reallocated (a rebuild reallocates)."""
        return [t.data_ptr() for t in self._tensors()] != self.pointers

    def mark_captured(self) -> None:
        self.pointers = [t.data_ptr() for t in self._tensors()]


class StackMember(_Epoch):
    """One run's view of a StackedEpoch: what train_many asks of a run's stepper."""

    def __init__(self, stack: StackedEpoch, run: int):
        self.stack, self.run = stack, run
        self.steps = stack.steps

    @property
    def stepper(self) -> StackedEpoch:
        return self.stack

    def prepare(self, generator: torch.Generator) -> None:
        self.stack.prepare(self.run, generator)

    def step(self) -> None:
        raise RuntimeError("a stacked run is stepped through its stack (train_many does)")

    def loss_total(self) -> torch.Tensor:
        return self.stack.loss_sum[self.run]

    def invalidate(self) -> None:
        """The run's model changed outside a step (cluster()): check the stack's aliases."""
        self.stack.dirty = True

    def moved(self) -> bool:
        return self.stack.moved()

    def retire(self) -> None:
        self.stack.retire(self.run)

    def evaluate(self, split: Split, step: int) -> tuple[float, float]:
        return self.stack.evaluate(self.run, split, step)

    def cluster(self, step: int) -> None:
        """The run's clustering round, its k-means batched with its stack mates'."""
        self.stack.cluster(self.run, step)


def compresses_next(model: nn.Module) -> bool:
    """Whether the model's next clustering round compresses one of its tables (pq's last)."""
    return any(getattr(m, "post_training", False) and m.compresses_next()
               for m in model.modules())


def find_twins(runs: list[RunConfig], models: list[nn.Module]) -> dict[int, int]:
    """Runs of a stack that repeat an earlier one's training exactly until they compress:
    GMF runs of a post-training method (pq) that differ from it only in budget, whose models
    start equal. Before compressing, pq is a full table whatever its budget, so the runs see the
    same batches (same seed), take the same steps and score the same; run -> that earlier run."""
    twins, first = {}, {}
    for i, (run, model) in enumerate(zip(runs, models)):
        if run.model != "gmf" or not awaiting_compression(model):
            continue
        key = _config_key(run, {"budget"})
        if key not in first:
            first[key] = i
        elif _same_state(model, models[first[key]]):
            twins[i] = first[key]
    return twins


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    mine, theirs = a.state_dict(), b.state_dict()
    return mine.keys() == theirs.keys() and all(
        mine[k].shape == theirs[k].shape and torch.equal(mine[k], theirs[k]) for k in mine)


def awaiting_compression(model: nn.Module) -> bool:
    """Whether a post-training method has yet to compress (the run must not stop before)."""
    return any(getattr(m, "post_training", False) and not m.compressed for m in model.modules())


def _repeat(batch: torch.Tensor, rows: int) -> torch.Tensor:
    """The same batch for every run of a stack: (N, ...) -> (R, N, ...), a view."""
    return batch.expand(rows, *batch.shape)


def stacked_model(models: list[nn.Module]) -> nn.Module:
    """The models of a stack as one: StackedGMF or StackedDLRM."""
    return StackedDLRM(models) if isinstance(models[0], DLRM) else StackedGMF(models)


def _clustered(model: nn.Module) -> list[nn.Module]:
    """The modules engine.cluster_all clusters: every one with cluster() but the model."""
    return [m for m in model.modules() if hasattr(m, "cluster") and m is not model]


def _table_groups(tables: list[tuple[int, nn.Module]], model: nn.Module | None
                  ) -> list[tuple[list[tuple[int, nn.Module]], Stack | None]]:
    """(run, table) pairs grouped by the Stack of the stacked model that holds them, in
    order, each group with that stack where it holds exactly the group's tables in this
    order (its forward reads them all), else None."""
    stacks = [m for m in model.modules() if isinstance(m, Stack)] if model is not None else []
    holder = {id(member): stack for stack in stacks for member in stack.members}
    groups: dict[int, list[tuple[int, nn.Module]]] = {}
    for run, table in tables:
        groups.setdefault(id(holder.get(id(table), table)), []).append((run, table))
    out = []
    for group in groups.values():
        members = [t for _, t in group]
        stack = holder.get(id(members[0]))
        whole = stack is not None and len(stack.members) == len(members) and all(
            a is b for a, b in zip(stack.members, members))
        if whole:
            out.append((group, stack))
        else:
            out.extend(([pair], None) for pair in group)
    return out
