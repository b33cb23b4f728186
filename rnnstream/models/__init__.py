"""PyTorch models that export and stream (needs the ``export`` extra)."""

from rnnstream.models.checkpoint import count_parameters, load_checkpoint, save_checkpoint
from rnnstream.models.recurrent_net import VOCABULARIES, RecurrentNet, RecurrentNetConfig

__all__ = [
    "VOCABULARIES",
    "RecurrentNet",
    "RecurrentNetConfig",
    "count_parameters",
    "load_checkpoint",
    "save_checkpoint",
]
