"""Training (needs the ``export`` extra): a task-agnostic loop and the character LM task."""

from rnnstream.train.lm import LanguageModelTask, LMBatch, bits_per_token
from rnnstream.train.loop import StepInfo, Task, TrainConfig, TrainResult, train
from rnnstream.train.state import load_train_state, save_train_state, train_state_path
from rnnstream.train.text import (
    TextCorpus,
    corpus_chars,
    encode,
    load_corpus,
    load_stdlib,
    load_text_file,
    stdlib_sources,
    token_stream,
)

__all__ = [
    "LMBatch",
    "LanguageModelTask",
    "StepInfo",
    "Task",
    "TextCorpus",
    "TrainConfig",
    "TrainResult",
    "bits_per_token",
    "corpus_chars",
    "encode",
    "load_corpus",
    "load_stdlib",
    "load_text_file",
    "load_train_state",
    "save_train_state",
    "stdlib_sources",
    "token_stream",
    "train",
    "train_state_path",
]
