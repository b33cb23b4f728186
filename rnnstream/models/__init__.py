"""PyTorch models that export and stream (needs the ``export`` extra)."""

from rnnstream.models.cell_loop_net import CellLoopNet, CellLoopNetConfig
from rnnstream.models.charlm import CharLM, CharLMConfig
from rnnstream.models.checkpoint import (
    count_parameters,
    load_checkpoint,
    read_checkpoint_extra,
    save_checkpoint,
)
from rnnstream.models.classifier import SequenceClassifier, SequenceClassifierConfig
from rnnstream.models.crnn import CRNN, CRNNConfig
from rnnstream.models.description import Describable, ModelDescription, describe_model
from rnnstream.models.forecaster import Forecaster, ForecasterConfig
from rnnstream.models.peephole import PeepholeLSTM, PeepholeLSTMConfig
from rnnstream.models.recurrent_net import VOCABULARIES, RecurrentNet, RecurrentNetConfig
from rnnstream.models.tagger import FrameTagger, FrameTaggerConfig

__all__ = [
    "CRNN",
    "VOCABULARIES",
    "CRNNConfig",
    "CellLoopNet",
    "CellLoopNetConfig",
    "CharLM",
    "CharLMConfig",
    "Describable",
    "Forecaster",
    "ForecasterConfig",
    "FrameTagger",
    "FrameTaggerConfig",
    "ModelDescription",
    "PeepholeLSTM",
    "PeepholeLSTMConfig",
    "RecurrentNet",
    "RecurrentNetConfig",
    "SequenceClassifier",
    "SequenceClassifierConfig",
    "count_parameters",
    "describe_model",
    "load_checkpoint",
    "read_checkpoint_extra",
    "save_checkpoint",
]
