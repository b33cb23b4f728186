"""Checkpoints: one safetensors file holding the weights and the model's JSON config. No pickle."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from rnnstream.errors import CheckpointError
from rnnstream.models.cell_loop_net import CellLoopNet, CellLoopNetConfig
from rnnstream.models.charlm import CharLM, CharLMConfig
from rnnstream.models.classifier import SequenceClassifier, SequenceClassifierConfig
from rnnstream.models.crnn import CRNN, CRNNConfig
from rnnstream.models.forecaster import Forecaster, ForecasterConfig
from rnnstream.models.peephole import PeepholeLSTM, PeepholeLSTMConfig
from rnnstream.models.recurrent_net import RecurrentNet, RecurrentNetConfig
from rnnstream.models.tagger import FrameTagger, FrameTaggerConfig

__all__ = ["count_parameters", "load_checkpoint", "read_checkpoint_extra", "save_checkpoint"]

_MODEL_KEY = "rnnstream.model"
_CONFIG_KEY = "rnnstream.config"
_EXTRA_KEY = "rnnstream.extra"
MODEL_CLASSES: dict[str, tuple[type[nn.Module], type]] = {
    "RecurrentNet": (RecurrentNet, RecurrentNetConfig),
    "CharLM": (CharLM, CharLMConfig),
    "PeepholeLSTM": (PeepholeLSTM, PeepholeLSTMConfig),
    "CellLoopNet": (CellLoopNet, CellLoopNetConfig),
    "SequenceClassifier": (SequenceClassifier, SequenceClassifierConfig),
    "FrameTagger": (FrameTagger, FrameTaggerConfig),
    "Forecaster": (Forecaster, ForecasterConfig),
    "CRNN": (CRNN, CRNNConfig),
}


# What reading a file that is not safetensors (or not readable) raises.
SAFETENSORS_ERRORS = (SafetensorError, ValueError, OSError)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the string metadata of a safetensors file, in one read; one of
    :data:`SAFETENSORS_ERRORS` if it is not one."""
    with safe_open(str(path), framework="pt") as f:
        names = f.keys()  # a list: safe_open is not iterable
        return {name: f.get_tensor(name) for name in names}, f.metadata() or {}


def save_checkpoint(model: nn.Module, path: str | Path, extra: dict | None = None) -> None:
    """Write ``model``'s weights and config (``model.config``) to a safetensors file."""
    name = type(model).__name__
    if name not in MODEL_CLASSES:
        raise CheckpointError(f"{name} is not a known rnnstream model: {sorted(MODEL_CLASSES)}")
    metadata = {_MODEL_KEY: name, _CONFIG_KEY: model.config.to_json()}
    if extra:
        metadata[_EXTRA_KEY] = json.dumps(extra)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)


def load_checkpoint(path: str | Path) -> nn.Module:
    """Rebuild a model from a safetensors checkpoint. Pickle files are refused, never unpickled."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        tensors, metadata = read_safetensors(path)
    except SAFETENSORS_ERRORS as e:
        raise CheckpointError(
            f"{path} is not a safetensors checkpoint ({e}); rnnstream never loads pickle files"
        ) from e
    name = metadata.get(_MODEL_KEY)
    if name not in MODEL_CLASSES:
        raise CheckpointError(f"{path} does not name a known rnnstream model (found {name!r})")
    model_class, config_class = MODEL_CLASSES[name]
    if _CONFIG_KEY not in metadata:
        raise CheckpointError(f"{path} has no model config (metadata key {_CONFIG_KEY!r})")
    try:
        config = config_class.from_json(metadata[_CONFIG_KEY])
    except ValueError as e:  # json.JSONDecodeError is a ValueError too
        raise CheckpointError(f"{path}: invalid {name} config ({_CONFIG_KEY}): {e}") from e
    try:
        model = model_class(config)
        model.load_state_dict(tensors, strict=True)
    except (ValueError, TypeError, AttributeError, RuntimeError) as e:  # e.g. a number as cell
        raise CheckpointError(f"{path}: weights do not match the config: {e}") from e
    return model.eval()


def read_checkpoint_extra(path: str | Path) -> dict:
    """The ``extra`` dict saved with a checkpoint (e.g. training progress); ``{}`` if none."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except SAFETENSORS_ERRORS as e:
        raise CheckpointError(f"{path} is not a safetensors checkpoint ({e})") from e
    try:
        extra = json.loads(metadata.get(_EXTRA_KEY, "{}"))
    except ValueError as e:
        raise CheckpointError(f"{path}: {_EXTRA_KEY} is not valid JSON ({e})") from e
    if not isinstance(extra, dict):
        kind = type(extra).__name__
        raise CheckpointError(f"{path}: {_EXTRA_KEY} is a JSON {kind}, not an object")
    return extra


def count_parameters(model: nn.Module) -> int:
    """The number of trainable values in ``model``."""
    return sum(p.numel() for p in model.parameters())
