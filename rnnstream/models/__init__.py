"""PyTorch models that export and stream (needs the ``export`` extra)."""

from rnnstream.models.cell_loop import CellLoopNet, CellLoopNetConfig
from rnnstream.models.charlm import CharLM, CharLMConfig
from rnnstream.models.checkpoint import (
    count_parameters,
    load_checkpoint,
    read_checkpoint_extra,
    save_checkpoint,
)
from rnnstream.models.peephole import PeepholeLSTM, PeepholeLSTMConfig
from rnnstream.models.recurrent_net import VOCABULARIES, RecurrentNet, RecurrentNetConfig

__all__ = [
    "VOCABULARIES",
    "CellLoopNet",
    "CellLoopNetConfig",
    "CharLM",
    "CharLMConfig",
    "PeepholeLSTM",
    "PeepholeLSTMConfig",
    "RecurrentNet",
    "RecurrentNetConfig",
    "count_parameters",
    "load_checkpoint",
    "read_checkpoint_extra",
    "save_checkpoint",
]
