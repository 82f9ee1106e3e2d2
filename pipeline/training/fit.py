"""The one training loop shared by every model: :func:`fit` with callbacks and checkpoints.

Models differ only in their module and their *objective*: a callable
``objective(model, batch) -> {"loss": ..., <named terms>}`` of scalar tensors. ``fit`` runs
Adam for ``settings.epochs`` epochs, averages every term per epoch (weighted by batch size)
for the training and validation data, and hands the epoch record to the callbacks (e.g.
:class:`DvcLiveCallback`).

Adversarial training (a GAN's discriminator, 002 section 4.1.1) is one more step per batch,
not a second loop: with an :class:`AdversarialStep`, the adversary's parameters get their
own Adam and ``fit`` takes, after every model step, one step of the adversary's objective on
the same batch; its terms are logged with a ``d_`` prefix. Schedules that change from epoch
to epoch (which parameters train, the learning rate, which loss) are callbacks'
``on_epoch_start``, a function of the epoch alone so that a resumed run repeats them.

Reproducibility: the data order of epoch ``e`` is a function of ``(seed, e)`` only (a fresh
seeded generator per epoch), and a checkpoint stores the weights, the optimizer state and
every RNG state, so a run killed after any epoch and resumed from its last checkpoint ends
with the same weights as an uninterrupted run (on CPU, where deterministic algorithms are
enforced while ``fit`` runs). Checkpoints are written atomically and hold only plain data
(tensors, lists, dicts, str, numbers), so they load with ``torch.load(weights_only=True)``.
A checkpoint is resumed only when its params (less :data:`RESUME_IGNORED`) and identity
(e.g. a data fingerprint) equal the current run's.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset
from tqdm import tqdm

from pipeline.models.files import check_plain, save_payload
from pipeline.runtime import git_revision
from pipeline.training import distributed

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = 1
RESUME_IGNORED = ("epochs", "checkpoint_every", "device", "num_workers")
"""Params that may change between a checkpoint and its resumption (no effect on the weights
of the epochs already trained; raising ``epochs`` continues a finished run)."""

Objective = Callable[[nn.Module, dict[str, Any]], dict[str, torch.Tensor]]
AdversaryObjective = Callable[[nn.Module, dict[str, Any]], dict[str, torch.Tensor] | None]
ADVERSARY_PREFIX = "d_"
"""Prefix of the adversary's terms in the epoch records (``train/d_loss`` ...)."""


@dataclass(frozen=True)
class AdversarialStep:
    """A second network trained against the model: one step of its own objective per batch."""

    parameters: Callable[[nn.Module], Sequence[nn.Parameter]]
    """``model -> `` the adversary's parameters (the model's step leaves them alone)."""
    objective: AdversaryObjective
    """``(model, batch) -> {"loss", ...}`` of the adversary, or None: no step this batch."""


@dataclass(frozen=True)
class FitSettings:
    """The loop's settings, read from any params section that has these keys."""

    epochs: int
    """Epochs to train in total (a resumed run trains the missing ones)."""
    batch_size: int
    """Examples per optimizer step."""
    lr: float
    """Adam learning rate."""
    seed: int = 0
    """Seed of the per-epoch data order."""
    checkpoint_every: int = 1
    """Save a resumable checkpoint every N epochs (and always after the last one)."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    num_workers: int = 0
    """DataLoader worker processes (0 = load in the training process)."""

    @classmethod
    def from_params(cls, params: Any) -> FitSettings:
        """Return the settings taken from a params dataclass's same-named fields."""
        names = cls.__dataclass_fields__
        return cls(**{n: getattr(params, n) for n in names if hasattr(params, n)})


@dataclass
class FitState:
    """What a callback can see: the model, its optimizer, progress and the history."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    epoch: int = 0
    """Epochs completed."""
    global_step: int = 0
    """Optimizer steps taken."""
    history: list[dict[str, float]] = field(default_factory=list)
    """One record per completed epoch (``train/<term>``, ``val/<term>``, timing)."""
    resumed_from: int | None = None
    """Epoch of the checkpoint this run resumed from, if any."""
    step_model: nn.Module | None = None
    """The module the training steps call: ``model`` wrapped in DDP when distributed."""
    adversary_optimizer: torch.optim.Optimizer | None = None
    """The adversary's optimizer, when training with an :class:`AdversarialStep`."""


class Callback:
    """Hooks called by :func:`fit`; override the ones you need."""

    def on_fit_start(self, state: FitState) -> None:
        """Run before the first epoch (after a resume has restored ``state.history``)."""

    def on_epoch_start(self, state: FitState) -> None:
        """Run before each epoch (``state.epoch`` epochs done); set per-epoch schedules here."""

    def on_epoch_end(self, state: FitState, record: Mapping[str, float]) -> None:
        """Run after each epoch, once its checkpoint (if due) is on disk."""

    def on_fit_end(self, state: FitState) -> None:
        """Run after the last epoch."""


def resolve_device(name: str) -> torch.device:
    """Return the torch device for ``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    return torch.device(name)


def epoch_seed(seed: int, epoch: int) -> int:
    """Return the seed of epoch ``epoch``'s data order: a function of ``(seed, epoch)``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1)


def fit(
    model: nn.Module,
    objective: Objective,
    train_data: Dataset,
    val_data: Dataset | None,
    settings: FitSettings,
    *,
    params: Mapping[str, Any],
    checkpoint_dir: str | Path | None = None,
    identity: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
    resume_ignored: Sequence[str] = RESUME_IGNORED,
    adversary: AdversarialStep | None = None,
) -> FitState:
    """Return the final :class:`FitState` after training ``model`` on ``train_data``.

    Args:
        model: the module; moved to the resolved device.
        objective: ``objective(model, batch) -> {"loss", ...}`` scalar tensors.
        train_data: map-style dataset (shuffled per epoch by ``(seed, epoch)``), or an
            iterable one (its own order; ``set_epoch(epoch)`` is called when it has one).
        val_data: evaluated after every epoch in eval mode without gradients, or ``None``.
        settings: epochs, batch size, lr, seed, checkpointing, device, workers.
        params: the resolved params (plain data), saved in every checkpoint's provenance.
        checkpoint_dir: where ``last.pt`` is saved and resumed from; ``None``: no checkpoints.
        identity: more plain data a checkpoint must match to be resumed (data fingerprint,
            model config ...).
        callbacks: hooks run at fit start, after each epoch, and at the end.
        resume_ignored: params that may differ from the checkpoint's (no effect on weights).
        adversary: a network trained against the model, one step after each model step
            (its parameters are not the model optimizer's); one process only.

    Under ``torchrun`` (:mod:`pipeline.training.distributed`) every process runs ``fit``:
    each takes its share of every global batch and of the validation data, and rank 0 alone
    checkpoints and runs the callbacks; the history is the same in every process.
    """
    if adversary is not None and distributed.world_size() > 1:
        raise ValueError("an adversarial step trains in one process (processes: 1), not DDP")
    device = resolve_device(settings.device)
    model.to(device)
    state = _fit_state(model, device, settings, adversary)
    check_plain(params, "params")
    check_plain(identity or {}, "identity")
    provenance = {"params": dict(params), "identity": dict(identity or {}),
                  "git_revision": git_revision()}
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
    if ckpt_path is not None and ckpt_path.exists():
        _maybe_resume(state, ckpt_path, provenance, resume_ignored)
    callbacks = callbacks if distributed.is_main() else ()
    with _deterministic(device), _data_parallel(state):
        for callback in callbacks:
            callback.on_fit_start(state)
        epochs = range(state.epoch, settings.epochs)
        for epoch in tqdm(epochs, desc="epochs", unit="epoch", disable=None):
            for callback in callbacks:
                callback.on_epoch_start(state)
            record = _run_epoch(state, objective, train_data, val_data, settings, epoch,
                                adversary)
            state.history.append(record)
            log.info("epoch %d/%d %s", epoch + 1, settings.epochs, _format(record))
            last = epoch + 1 == settings.epochs
            due = (epoch + 1) % settings.checkpoint_every == 0 or last
            if ckpt_path is not None and due and distributed.is_main():
                save_checkpoint(ckpt_path, state, provenance)
            for callback in callbacks:
                callback.on_epoch_end(state, record)
        for callback in callbacks:
            callback.on_fit_end(state)
    return state


@contextlib.contextmanager
def _data_parallel(state: FitState) -> Iterator[None]:
    """Train through DDP (BatchNorm synchronised) when distributed; undo it afterwards."""
    if distributed.world_size() == 1:
        yield
        return
    from torch.nn.parallel import DistributedDataParallel

    cuda = state.device.type == "cuda"
    swapped = distributed.sync_batch_norms(state.model, cuda)
    state.step_model = DistributedDataParallel(
        state.model, device_ids=[state.device] if cuda else None)
    try:
        yield
    finally:
        state.step_model = None
        distributed.restore_batch_norms(state.model, swapped)


def _fit_state(
    model: nn.Module, device: torch.device, settings: FitSettings,
    adversary: AdversarialStep | None,
) -> FitState:
    """Return a fresh state: Adam over the model's parameters less the adversary's, and its own."""
    if adversary is None:
        return FitState(model, torch.optim.Adam(model.parameters(), lr=settings.lr), device)
    theirs = list(adversary.parameters(model))
    ids = {id(p) for p in theirs}
    ours = [p for p in model.parameters() if id(p) not in ids]
    return FitState(model, torch.optim.Adam(ours, lr=settings.lr), device,
                    adversary_optimizer=torch.optim.Adam(theirs, lr=settings.lr))


def _run_epoch(
    state: FitState,
    objective: Objective,
    train_data: Dataset,
    val_data: Dataset | None,
    settings: FitSettings,
    epoch: int,
    adversary: AdversarialStep | None = None,
) -> dict[str, float]:
    start = time.perf_counter()
    train, wait_s, n = _train_epoch(state, objective, train_data, settings, epoch, adversary)
    train_s = time.perf_counter() - start
    state.epoch = epoch + 1
    record: dict[str, float] = {"epoch": float(state.epoch), "step": float(state.global_step)}
    record.update({f"train/{k}": v for k, v in train.items()})
    if val_data is not None:
        val = _evaluate_shared(state.model, objective, val_data, settings)
        record.update({f"val/{k}": v for k, v in val.items()})
    record["time/train_s"] = train_s
    record["time/images_per_s"] = n / train_s if train_s > 0 else 0.0
    record["time/data_wait_share"] = wait_s / train_s if train_s > 0 else 0.0
    return record


def _train_epoch(
    state: FitState,
    objective: Objective,
    data: Dataset,
    settings: FitSettings,
    epoch: int,
    adversary: AdversarialStep | None = None,
) -> tuple[dict[str, float], float, int]:
    """Return the epoch's mean terms, seconds spent waiting for data, and examples seen.

    Distributed: each process's loss is weighted by its share of the global batch (DDP
    averages the gradients over processes), and the terms and counts are summed over all.
    """
    state.model.train()
    model = state.model if state.step_model is None else state.step_model
    world = distributed.world_size()
    if world > 1:  # each process its own stream, continued exactly by a resumed run
        torch.manual_seed(epoch_seed(settings.seed, epoch) + distributed.rank() + 1)
    totals: dict[str, torch.Tensor] = {}
    adversary_totals: dict[str, torch.Tensor] = {}
    n_total, wait_s = 0, 0.0
    batches = _timed(_loader(data, settings, state.device, epoch, shuffle=True))
    for batch, waited in batches:
        wait_s += waited
        batch = _to_device(batch, state.device)
        n = _batch_size(batch)
        share = None if world == 1 else _batch_share(n, state.device)
        _accumulate(totals, _step(state.optimizer, objective(model, batch), share), n)
        if adversary is not None and state.adversary_optimizer is not None:
            terms = adversary.objective(state.model, batch)
            if terms is not None:
                _accumulate(adversary_totals, _step(state.adversary_optimizer, terms), n)
        state.global_step += 1
        n_total += n
    if world > 1:
        n_total = _summed(totals, n_total, state.device)
    totals |= {ADVERSARY_PREFIX + k: v for k, v in adversary_totals.items()}
    if n_total == 0:
        raise ValueError("training data is empty")
    means = {k: v.item() / n_total for k, v in totals.items()}
    if not math.isfinite(means["loss"]):
        raise FloatingPointError(f"training loss is {means['loss']} in epoch {epoch + 1}")
    return means, wait_s, n_total


def _batch_share(n: int, device: torch.device) -> float:
    """Return ``n * world / global batch``: 1.0 unless the processes' shares are uneven."""
    total = torch.tensor(n, device=device)
    torch.distributed.all_reduce(total)
    return n * distributed.world_size() / int(total)


def _summed(totals: dict[str, torch.Tensor], n: int, device: torch.device) -> int:
    """Sum ``totals`` (in place) and ``n`` over all processes; return the summed ``n``."""
    names = sorted(totals)
    packed = torch.stack([*(totals[k].to(device, torch.float64) for k in names),
                          torch.tensor(float(n), dtype=torch.float64, device=device)])
    torch.distributed.all_reduce(packed)
    totals.update({k: packed[i] for i, k in enumerate(names)})
    return int(packed[-1])


def _evaluate_shared(
    model: nn.Module, objective: Objective, data: Dataset, settings: FitSettings
) -> dict[str, float]:
    """Return :func:`evaluate` of ``data``; distributed, each process scores a share of it.

    A map-style dataset is split (sample ``i`` to rank ``i % world``) and the sums are added
    up over the processes; an iterable one is scored by rank 0 and its result sent to all.
    """
    world = distributed.world_size()
    if world == 1:
        return evaluate(model, objective, data, settings)
    if isinstance(data, IterableDataset):
        box = [evaluate(model, objective, data, settings) if distributed.is_main() else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]
    share = Subset(data, range(distributed.rank(), len(data), world))
    totals, n = _evaluation_sums(model, objective, share, settings)
    n = _summed(totals, n, next(model.parameters()).device)
    return {k: v.item() / n for k, v in totals.items()} if n else {}


def evaluate(
    model: nn.Module, objective: Objective, data: Dataset, settings: FitSettings
) -> dict[str, float]:
    """Return ``objective``'s terms averaged over ``data`` in eval mode (no gradients).

    The order is fixed and the model is left in eval mode.
    """
    totals, n_total = _evaluation_sums(model, objective, data, settings)
    return {k: v.item() / n_total for k, v in totals.items()} if n_total else {}


@torch.no_grad()
def _evaluation_sums(
    model: nn.Module, objective: Objective, data: Dataset, settings: FitSettings
) -> tuple[dict[str, torch.Tensor], int]:
    """Return ``objective``'s terms summed over ``data`` (weighted by batch size) and its size."""
    model.eval()
    device = next(model.parameters()).device
    totals: dict[str, torch.Tensor] = {}
    n_total = 0
    for batch in _loader(data, settings, device, epoch=0, shuffle=False):
        n = _batch_size(batch)
        _accumulate(totals, objective(model, _to_device(batch, device)), n)
        n_total += n
    return totals, n_total


def _step(optimizer: torch.optim.Optimizer, terms: dict[str, torch.Tensor],
          share: float | None = None) -> dict[str, torch.Tensor]:
    """Return ``terms`` after one optimizer step on their ``loss`` (times ``share`` if given)."""
    optimizer.zero_grad(set_to_none=True)
    (terms["loss"] if share is None else terms["loss"] * share).backward()
    optimizer.step()
    return terms


def _loader(
    data: Dataset, settings: FitSettings, device: torch.device, epoch: int, shuffle: bool
) -> DataLoader:
    iterable = isinstance(data, IterableDataset)
    if iterable and hasattr(data, "set_epoch"):
        data.set_epoch(epoch)
    generator = torch.Generator().manual_seed(epoch_seed(settings.seed, epoch))
    if distributed.world_size() > 1 and shuffle:
        return _rank_loader(data, settings, device, generator)
    return DataLoader(
        data,
        batch_size=settings.batch_size,
        shuffle=shuffle and not iterable,
        generator=generator,  # also seeds the workers: the order is a function of (seed, epoch)
        num_workers=settings.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


def _rank_loader(data: Dataset, settings: FitSettings, device: torch.device,
                 generator: torch.Generator) -> DataLoader:
    """Return this process's training loader: its share of each global batch.

    An iterable dataset must split itself by rank (as
    :class:`~pipeline.loaders.ShardDataset` does with ``rank`` and ``world_size``); each
    process then batches ``batch_size / world`` of its own samples.
    """
    world, rank = distributed.world_size(), distributed.rank()
    common = {"num_workers": settings.num_workers, "pin_memory": device.type == "cuda",
              "generator": generator}
    if isinstance(data, IterableDataset):
        if getattr(data, "world_size", 1) != world:
            raise ValueError(f"{type(data).__name__} is not split over the {world} processes "
                             "(give it rank and world_size)")
        return DataLoader(data, batch_size=max(1, settings.batch_size // world), **common)
    sampler = distributed.RankBatches(len(data), settings.batch_size, True, generator, rank,
                                      world)
    return DataLoader(data, batch_sampler=sampler, **common)


def _timed(loader: DataLoader) -> Iterator[tuple[Any, float]]:
    """Yield ``(batch, seconds waited for it)``."""
    iterator = iter(loader)
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        yield batch, time.perf_counter() - start


def _accumulate(totals: dict[str, torch.Tensor], terms: Mapping[str, torch.Tensor], n: int) -> None:
    if "loss" not in terms:
        raise KeyError(f"the objective must return a 'loss' term, got {sorted(terms)}")
    for name, value in terms.items():
        weighted = value.detach().float() * n
        totals[name] = totals[name] + weighted if name in totals else weighted


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    values = batch.values() if isinstance(batch, Mapping) else batch
    for value in values:
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return value.shape[0]
    raise ValueError("cannot tell the batch size: the batch holds no tensor")


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Enforce deterministic algorithms while training (restored afterwards)."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    # On CUDA some kernels have no deterministic version: warn instead of failing there.
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def _format(record: Mapping[str, float]) -> str:
    shown = {k: v for k, v in record.items() if k.startswith(("train/loss", "val/loss"))}
    return " ".join(f"{k}={v:.4g}" for k, v in shown.items())


# --- checkpoints -------------------------------------------------------------------------


def save_checkpoint(path: str | Path, state: FitState, provenance: Mapping[str, Any]) -> Path:
    """Write a resumable checkpoint of ``state`` to ``path`` atomically; return the path."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "epoch": state.epoch,
        "global_step": state.global_step,
        "model": {k: v.detach().cpu() for k, v in state.model.state_dict().items()},
        "optimizer": state.optimizer.state_dict(),
        **({"adversary_optimizer": state.adversary_optimizer.state_dict()}
           if state.adversary_optimizer is not None else {}),
        "history": [dict(r) for r in state.history],
        "rng": _rng_states(),
        "provenance": {
            **provenance,
            "git_revision": provenance.get("git_revision") or git_revision(),
            "saved_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "torch_version": str(torch.__version__),
        },
    }
    save_payload(path, payload)
    log.info("checkpoint: epoch %d -> %s", state.epoch, path)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Return a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        message = f"{path}: unreadable checkpoint ({error}); delete it to restart"
        raise RuntimeError(message) from error
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise RuntimeError(f"{path}: checkpoint format {payload.get('format')!r} is not "
                           f"{CHECKPOINT_FORMAT}; delete it to restart")
    return payload


def resume_key(
    provenance: Mapping[str, Any], ignored: Sequence[str] = RESUME_IGNORED
) -> dict[str, Any]:
    """Return the part of a provenance that must match for a checkpoint to be resumed."""
    params = {k: v for k, v in provenance["params"].items() if k not in ignored}
    return {"params": params, "identity": provenance.get("identity", {})}


def _maybe_resume(
    state: FitState, path: Path, provenance: Mapping[str, Any], ignored: Sequence[str]
) -> None:
    payload = load_checkpoint(path, map_location=state.device)
    if resume_key(payload["provenance"], ignored) != resume_key(provenance, ignored):
        log.warning("checkpoint %s was made with other params or data; training from scratch "
                    "(it will be overwritten)", path)
        return
    state.model.load_state_dict(payload["model"])
    state.optimizer.load_state_dict(payload["optimizer"])
    if state.adversary_optimizer is not None:
        state.adversary_optimizer.load_state_dict(payload["adversary_optimizer"])
    state.epoch = state.resumed_from = int(payload["epoch"])
    state.global_step = int(payload["global_step"])
    state.history = [dict(r) for r in payload["history"]]
    _set_rng_states(payload["rng"])
    log.info("resumed from %s at epoch %d (step %d)", path, state.epoch, state.global_step)


def _rng_states() -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(mt), gauss],
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
    }


def _set_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"].cpu())
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])
    version, mt, gauss = states["python"]
    random.setstate((version, tuple(mt), gauss))
    np_state = states["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
        "has_gauss": np_state["has_gauss"],
        "gauss": np_state["gauss"],
    })


# --- dvclive -----------------------------------------------------------------------------


class DvcLiveCallback(Callback):
    """Log every epoch record to dvclive (``dvc plots``) and final metrics to its summary.

    A resumed run replays the history stored in the checkpoint into a fresh dvclive
    directory, so the plots show every epoch once, whatever was lost in a kill.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.live: Any = None

    def on_fit_start(self, state: FitState) -> None:
        """Open a fresh dvclive run and replay the epochs a resumed run already has."""
        self.start(state.history)

    def start(self, history: Sequence[Mapping[str, float]] = ()) -> None:
        """Open a fresh dvclive run holding ``history``'s epoch records.

        A model solved without ``fit`` logs its one record through it.
        """
        from dvclive import Live

        self.live = Live(str(self.directory), resume=False, save_dvc_exp=False, dvcyaml=None)
        for record in history:
            self._log(record)

    def on_epoch_end(self, state: FitState, record: Mapping[str, float]) -> None:
        """Log the epoch's terms with the epoch number as dvclive's step."""
        self._log(record)

    def _log(self, record: Mapping[str, float]) -> None:
        self.live.step = int(record["epoch"])
        for name, value in record.items():
            if name not in ("epoch", "step"):
                self.live.log_metric(name, value)
        self.live.make_summary()

    def finish(self, final_metrics: Mapping[str, float]) -> None:
        """Record ``final_metrics`` (not plotted) in the metrics file and close the run."""
        if self.live is None:
            raise RuntimeError("finish() called before fit() started the dvclive run")
        for name, value in final_metrics.items():
            self.live.log_metric(name, value, plot=False)
        self.live.end()
