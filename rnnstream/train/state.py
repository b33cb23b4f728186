"""Training state for resume: optimizer, random generator and task state in safetensors (no pickle).

It lives next to the model checkpoint (``model.safetensors`` → ``model.train.safetensors``).
Tensors go in as tensors; everything else (param groups, step counters, progress) as JSON
metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from rnnstream.errors import CheckpointError
from rnnstream.models.checkpoint import SAFETENSORS_ERRORS, read_safetensors

__all__ = ["load_train_state", "save_train_state", "train_state_path"]


def train_state_path(checkpoint: str | Path) -> Path:
    """Where the training state of ``checkpoint`` lives."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}.train.safetensors")


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, values in sd["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value.detach().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return {"param_groups": sd["param_groups"], "scalars": scalars}, tensors


def _optimizer_state(meta: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_train_state(
    path: str | Path,
    optimizer: torch.optim.Optimizer,
    progress: dict[str, Any],
    task_state: dict[str, torch.Tensor],
) -> None:
    """Write the optimizer, torch's random generator, ``progress`` and the task's tensors."""
    meta, tensors = _optimizer_tensors(optimizer)
    tensors["rng"] = torch.get_rng_state()
    tensors.update({f"task.{k}": v.detach().contiguous() for k, v in task_state.items()})
    metadata = {"rnnstream.optimizer": json.dumps(meta), "rnnstream.progress": json.dumps(progress)}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_train_state(
    path: str | Path, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore the optimizer and torch's random generator; return progress and task tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"cannot resume: training state {path} does not exist")
    try:
        tensors, metadata = read_safetensors(path)
        meta = json.loads(metadata["rnnstream.optimizer"])
        progress = json.loads(metadata["rnnstream.progress"])
    except (*SAFETENSORS_ERRORS, KeyError) as e:
        raise CheckpointError(f"{path} is not an rnnstream training state: {e}") from e
    optim_tensors = {k: v for k, v in tensors.items() if k.startswith("optimizer.")}
    try:
        optimizer.load_state_dict(_optimizer_state(meta, optim_tensors))
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: the optimizer state does not fit the model: {e}") from e
    torch.set_rng_state(tensors["rng"])
    task = {k.removeprefix("task."): v for k, v in tensors.items() if k.startswith("task.")}
    return progress, task
