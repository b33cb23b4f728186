"""The training loop, shared by every task: Adam, clipping, accumulation, evaluation, checkpoints.

A task (see :class:`Task`) owns the data and the loss; the loop owns the optimisation. Progress is
counted in optimizer steps; an epoch is one pass over the task's batches. Validation runs at every
epoch end, every ``eval_every`` steps and after the last step. Checkpoints are the model's
safetensors file plus a training-state file next to it, so ``resume=True`` continues exactly where
the run stopped: same weights as a run that was never interrupted.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from rnnstream.errors import CheckpointError
from rnnstream.models.checkpoint import read_checkpoint_extra, save_checkpoint
from rnnstream.train.state import load_train_state, save_train_state, train_state_path

__all__ = ["StepInfo", "Task", "TrainConfig", "TrainResult", "train"]

log = logging.getLogger(__name__)


class Task(Protocol):
    """What the loop needs from a task: indexed batches, a loss, validation metrics."""

    @property
    def batches_per_epoch(self) -> int: ...

    def batch(self, index: int) -> Any: ...

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor: ...

    def evaluate(self, model: nn.Module) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None: ...


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. The learning rate decays from ``lr`` to ``lr * min_lr_fraction``
    along a cosine over ``steps`` (``min_lr_fraction=1`` keeps it constant)."""

    steps: int = 1000
    lr: float = 2e-3
    min_lr_fraction: float = 0.1
    clip: float = 1.0
    accumulate: int = 1
    eval_every: int = 0
    save_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.accumulate < 1:
            raise ValueError("steps and accumulate must be >= 1")
        if self.lr <= 0 or self.clip <= 0 or not 0 < self.min_lr_fraction <= 1:
            raise ValueError("lr and clip must be > 0 and min_lr_fraction in (0, 1]")

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based)."""
        cosine = 0.5 * (1 + math.cos(math.pi * min(step / self.steps, 1.0)))
        return self.lr * (self.min_lr_fraction + (1 - self.min_lr_fraction) * cosine)


@dataclass(frozen=True)
class StepInfo:
    """Reported after each optimizer step; ``evaluation`` is set when validation ran."""

    step: int
    steps: int
    loss: float
    lr: float
    grad_norm: float
    evaluation: dict[str, Any] | None = None


@dataclass(frozen=True)
class TrainResult:
    """What a run did: steps, wall time (over all resumed parts), every evaluation."""

    steps: int
    seconds: float
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def metrics(self) -> dict[str, Any]:
        """The last evaluation."""
        return self.history[-1] if self.history else {}


def _save(
    model: nn.Module,
    checkpoint: Path,
    optimizer: torch.optim.Optimizer,
    task: Task,
    progress: dict[str, Any],
    config: TrainConfig,
) -> None:
    tmp = checkpoint.with_name(checkpoint.name + ".tmp")
    extra = {"step": progress["step"], "train": asdict(config), "history": progress["history"]}
    save_checkpoint(model, tmp, extra=extra)
    os.replace(tmp, checkpoint)
    save_train_state(train_state_path(checkpoint), optimizer, progress, task.state_dict())


def train(
    model: nn.Module,
    task: Task,
    config: TrainConfig,
    *,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``task`` for ``config.steps`` optimizer steps (in total, when resuming).

    Each step accumulates the gradients of ``config.accumulate`` batches, clips their norm to
    ``config.clip`` and takes one Adam step. With ``checkpoint`` the model and training state are
    saved every ``config.save_every`` steps and at the end; ``resume=True`` restores them (the
    model's weights must already be loaded from ``checkpoint``) and continues. The model is left
    in eval mode.
    """
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    progress: dict[str, Any] = {
        "step": 0,
        "position": 0,  # batches consumed, over all epochs
        "seconds": 0.0,
        "since_eval": [0.0, 0],  # training loss sum and count since the last evaluation
        "epoch_loss": [0.0, 0],
        "history": [],
    }
    if resume:
        if checkpoint is None:
            raise CheckpointError("resume needs a checkpoint path")
        progress, task_state = load_train_state(train_state_path(checkpoint), optimizer)
        task.load_state_dict(task_state)
        saved_step = read_checkpoint_extra(checkpoint).get("step")
        if saved_step != progress["step"]:
            raise CheckpointError(
                f"{checkpoint} (step {saved_step}) and its training state "
                f"(step {progress['step']}) are from different steps"
            )
        log.info("resuming at step %d of %d", progress["step"], config.steps)
    else:
        torch.manual_seed(config.seed)
    model.train()
    per_epoch = task.batches_per_epoch
    start = time.perf_counter() - progress["seconds"]
    while progress["step"] < config.steps:
        lr = config.lr_at(progress["step"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        epoch_mean = None  # the mean training loss of an epoch that ended in this step
        for _ in range(config.accumulate):
            index = progress["position"] % per_epoch
            loss = task.loss(model, task.batch(index))
            (loss / config.accumulate).backward()
            value = loss.item()
            step_loss += value / config.accumulate
            for key in ("since_eval", "epoch_loss"):
                progress[key][0] += value
                progress[key][1] += 1
            progress["position"] += 1
            if index == per_epoch - 1:
                epoch_mean = progress["epoch_loss"][0] / progress["epoch_loss"][1]
                progress["epoch_loss"] = [0.0, 0]
        grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), config.clip))
        optimizer.step()
        progress["step"] += 1
        step = progress["step"]
        evaluation = None
        last = step == config.steps
        if epoch_mean is not None or last or _every(step, config.eval_every):
            progress["seconds"] = time.perf_counter() - start
            evaluation = _evaluate(model, task, progress, per_epoch, epoch_mean)
        if checkpoint is not None and (last or _every(step, config.save_every)):
            progress["seconds"] = time.perf_counter() - start
            _save(model, checkpoint, optimizer, task, progress, config)
        if on_step is not None:
            on_step(StepInfo(step, config.steps, step_loss, lr, grad_norm, evaluation))
    model.eval()
    return TrainResult(progress["step"], time.perf_counter() - start, tuple(progress["history"]))


def _every(step: int, period: int) -> bool:
    return period > 0 and step % period == 0


def _evaluate(
    model: nn.Module,
    task: Task,
    progress: dict[str, Any],
    per_epoch: int,
    epoch_mean: float | None,
) -> dict[str, Any]:
    total, count = progress["since_eval"]
    record: dict[str, Any] = {
        "step": progress["step"],
        "epochs": round(progress["position"] / per_epoch, 4),
        "train_loss": total / max(count, 1),
        "seconds": round(progress["seconds"], 1),
    }
    if epoch_mean is not None:
        record["epoch"] = progress["position"] // per_epoch
        record["epoch_train_loss"] = epoch_mean
    record.update({f"val_{k}": v for k, v in task.evaluate(model).items()})
    model.train()
    progress["since_eval"] = [0.0, 0]
    progress["history"].append(record)
    log.info(
        "step %d (%.2f epochs)%s: train loss %.4f; %s",
        record["step"],
        record["epochs"],
        f", end of epoch {record['epoch']}" if epoch_mean is not None else "",
        record["train_loss"],
        ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith("val_")),
    )
    return record
