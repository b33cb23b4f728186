"""Training recipes: for each kind of model, how to build it and the task it learns from its data.

A recipe holds the data and the architecture; :func:`prepare` gives the model to train (a new one,
or the one saved in a checkpoint when resuming, checked against the data) and its task, ready for
:func:`rnnstream.train.train`. The ``rnnstream train`` commands are these recipes with options.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from rnnstream.corpus import TextCorpus
from rnnstream.errors import CheckpointError
from rnnstream.models.charlm import CharLM, CharLMConfig
from rnnstream.models.checkpoint import load_checkpoint
from rnnstream.models.classifier import SequenceClassifier, SequenceClassifierConfig
from rnnstream.models.crnn import CRNN, CRNNConfig
from rnnstream.models.forecaster import Forecaster, ForecasterConfig
from rnnstream.models.tagger import FrameTagger, FrameTaggerConfig
from rnnstream.train.classify import ClassificationTask
from rnnstream.train.filekinds import FileKindData
from rnnstream.train.forecast import ForecastTask
from rnnstream.train.lm import LanguageModelTask
from rnnstream.train.loop import Task
from rnnstream.train.pytags import TaggedData
from rnnstream.train.series import Series, standardisation
from rnnstream.train.tag import TaggingTask
from rnnstream.train.text import corpus_chars

__all__ = [
    "Architecture",
    "CRNNRecipe",
    "CharLMRecipe",
    "ClassifierRecipe",
    "ForecasterRecipe",
    "Recipe",
    "TaggerRecipe",
    "prepare",
]


@dataclass(frozen=True)
class Architecture:
    """The recurrent core every recipe builds on."""

    cell: str = "lstm"
    num_layers: int = 1
    hidden_size: int = 128
    dropout: float = 0.0


class Recipe(Protocol):
    """What a recipe tells: its data, the model it builds, the task for a (built or loaded)
    model, which it refuses with :class:`CheckpointError` when the model does not fit the data,
    and the validation metrics the task reports (key: a name for people)."""

    metrics: ClassVar[dict[str, str]]

    def describe(self) -> str: ...

    def build(self) -> nn.Module: ...

    def task(self, model: nn.Module, batch_size: int, seed: int) -> Task: ...


def prepare(
    recipe: Recipe, checkpoint: str | Path, *, batch_size: int, seed: int, resume: bool = False
) -> tuple[nn.Module, Task]:
    """The model to train and its task: when resuming the model saved in ``checkpoint``,
    otherwise a new one (its initial weights drawn after seeding torch with ``seed``)."""
    if resume:
        model = load_checkpoint(checkpoint)
    else:
        torch.manual_seed(seed)
        model = recipe.build()
    return model, recipe.task(model, batch_size, seed)


class _OnData:
    """A recipe over ``self.data``, which describes itself."""

    data: Any

    def describe(self) -> str:
        return self.data.describe()


def _expect(
    model: nn.Module, model_class: type[nn.Module], labels: tuple[str, ...] | None = None
) -> None:
    """Refuse a (loaded) model of another class, or with other labels than the data's."""
    if not isinstance(model, model_class):
        raise CheckpointError(
            f"the checkpoint holds a {type(model).__name__}, not a {model_class.__name__}"
        )
    if labels is not None and model.config.labels != labels:
        raise CheckpointError(f"the checkpoint's labels {model.config.labels} are not {labels}")


@dataclass(frozen=True)
class CharLMRecipe(_OnData):
    """A character language model over a text corpus; ``vocab`` is ``"printable"`` (the default
    characters) or ``"data"`` (the characters of the training text)."""

    metrics: ClassVar[dict[str, str]] = {"loss": "loss", "bpc": "bits per character"}
    data: TextCorpus
    arch: Architecture
    embed_size: int = 64
    vocab: str = "printable"
    seq_len: int = 128

    def build(self) -> CharLM:
        chars = corpus_chars(self.data.train) if self.vocab == "data" else CharLMConfig().chars
        return CharLM(CharLMConfig(embed_size=self.embed_size, chars=chars, **asdict(self.arch)))

    def task(self, model: nn.Module, batch_size: int, seed: int) -> LanguageModelTask:
        _expect(model, CharLM)
        return LanguageModelTask.from_corpus(
            self.data, model.config, batch_size, self.seq_len, seed
        )


@dataclass(frozen=True)
class ClassifierRecipe(_OnData):
    """A sequence classifier telling file kinds apart from their first bytes."""

    metrics: ClassVar[dict[str, str]] = {"loss": "loss", "accuracy": "accuracy"}
    data: FileKindData
    arch: Architecture
    embed_size: int = 32
    bidirectional: bool = False
    min_len: int = 16
    max_len: int = 256

    def build(self) -> SequenceClassifier:
        config = SequenceClassifierConfig(
            labels=self.data.labels,
            embed_size=self.embed_size,
            bidirectional=self.bidirectional,
            **asdict(self.arch),
        )
        return SequenceClassifier(config)

    def task(self, model: nn.Module, batch_size: int, seed: int) -> ClassificationTask:
        _expect(model, SequenceClassifier, self.data.labels)
        return ClassificationTask.from_file_kinds(
            self.data, batch_size, self.min_len, self.max_len, seed
        )


@dataclass(frozen=True)
class TaggerRecipe(_OnData):
    """A frame tagger labelling each byte of Python source."""

    data: TaggedData
    arch: Architecture
    embed_size: int = 32
    min_len: int = 64
    max_len: int = 256
    metrics: ClassVar[dict[str, str]] = {"loss": "loss", "accuracy": "accuracy"}

    def build(self) -> FrameTagger:
        config = FrameTaggerConfig(
            labels=self.data.labels, embed_size=self.embed_size, **asdict(self.arch)
        )
        return FrameTagger(config)

    def task(self, model: nn.Module, batch_size: int, seed: int) -> TaggingTask:
        _expect(model, FrameTagger, self.data.labels)
        return TaggingTask.from_tagged(self.data, batch_size, self.min_len, self.max_len, seed)


@dataclass(frozen=True)
class ForecasterRecipe(_OnData):
    """A next-value forecaster of a time series, standardised with its training part's mean and
    spread."""

    metrics: ClassVar[dict[str, str]] = {"mae": "MAE", "naive_mae": "repeat-last MAE"}
    model_class: ClassVar[type[nn.Module]] = Forecaster
    data: Series
    arch: Architecture
    min_len: int = 32
    max_len: int = 128

    def build(self) -> Forecaster:
        mean, scale = standardisation(self.data.train)
        config = ForecasterConfig(
            features=self.data.train.shape[1], mean=mean, scale=scale, **asdict(self.arch)
        )
        return Forecaster(config)

    def task(self, model: nn.Module, batch_size: int, seed: int) -> ForecastTask:
        _expect(model, self.model_class)
        features = self.data.train.shape[1]
        if model.config.features != features:
            raise CheckpointError(
                f"the checkpoint forecasts {model.config.features} feature(s), the data has "
                f"{features}"
            )
        return ForecastTask.from_series(self.data, batch_size, self.min_len, self.max_len, seed)


@dataclass(frozen=True)
class CRNNRecipe(ForecasterRecipe):
    """The forecaster's task for a :class:`~rnnstream.models.CRNN`: causal dilated convolutions
    over time in front of the recurrent core."""

    model_class: ClassVar[type[nn.Module]] = CRNN
    conv_layers: int = 2
    conv_channels: int = 16
    kernel_size: int = 3

    def build(self) -> CRNN:
        mean, scale = standardisation(self.data.train)
        config = CRNNConfig(
            features=self.data.train.shape[1],
            mean=mean,
            scale=scale,
            conv_layers=self.conv_layers,
            conv_channels=self.conv_channels,
            kernel_size=self.kernel_size,
            **asdict(self.arch),
        )
        return CRNN(config)
