"""Training (needs the ``export`` extra): a task-agnostic loop, its tasks and built-in data."""

from rnnstream.corpus import (
    TextCorpus,
    load_corpus,
    load_stdlib,
    load_text_file,
    stdlib_sources,
)
from rnnstream.models.scoring import bits_per_token
from rnnstream.train.classify import ClassificationTask, bytes_to_ids
from rnnstream.train.filekinds import FILE_KINDS, FileKindData, load_file_kinds
from rnnstream.train.forecast import ForecastTask
from rnnstream.train.lm import LanguageModelTask, LMBatch
from rnnstream.train.loop import StepInfo, Task, TrainConfig, TrainResult, train
from rnnstream.train.pytags import PY_TAGS, TaggedData, load_python_tags, tag_python
from rnnstream.train.recipes import (
    Architecture,
    CharLMRecipe,
    ClassifierRecipe,
    CRNNRecipe,
    ForecasterRecipe,
    Recipe,
    TaggerRecipe,
    prepare,
)
from rnnstream.train.series import Series, load_csv, load_series, mackey_glass, standardisation
from rnnstream.train.state import load_train_state, save_train_state, train_state_path
from rnnstream.train.tag import TaggingTask
from rnnstream.train.text import corpus_chars, encode, token_stream

__all__ = [
    "FILE_KINDS",
    "PY_TAGS",
    "Architecture",
    "CRNNRecipe",
    "CharLMRecipe",
    "ClassificationTask",
    "ClassifierRecipe",
    "FileKindData",
    "ForecastTask",
    "ForecasterRecipe",
    "LMBatch",
    "LanguageModelTask",
    "Recipe",
    "Series",
    "StepInfo",
    "TaggedData",
    "TaggerRecipe",
    "TaggingTask",
    "Task",
    "TextCorpus",
    "TrainConfig",
    "TrainResult",
    "bits_per_token",
    "bytes_to_ids",
    "corpus_chars",
    "encode",
    "load_corpus",
    "load_csv",
    "load_file_kinds",
    "load_python_tags",
    "load_series",
    "load_stdlib",
    "load_text_file",
    "load_train_state",
    "mackey_glass",
    "prepare",
    "save_train_state",
    "standardisation",
    "stdlib_sources",
    "tag_python",
    "token_stream",
    "train",
    "train_state_path",
]
