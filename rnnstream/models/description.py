"""What a model says about itself for its exported signature: kind, vocabulary, BOS/EOS, labels.

The configs of rnnstream's models implement :class:`Describable`, so ``export()`` reads these
from the model instead of every caller copying them out of the config by hand. A model of your
own can implement ``describe()`` too (on the module or on its ``config``), or pass a
:class:`ModelDescription` to ``export(description=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Describable", "ModelDescription", "describe_model"]


@dataclass(frozen=True)
class ModelDescription:
    """The signature fields a model decides: what it is and how its tokens and classes read."""

    kind: str = "generic"
    vocab: str | None = None  # token-id inputs: the character of each id
    bos: int | None = None
    eos: int | None = None
    labels: tuple[str, ...] | None = None  # classifiers and taggers: the name of each class


@runtime_checkable
class Describable(Protocol):
    """Anything with ``describe() -> ModelDescription`` (the model, or its ``config``)."""

    def describe(self) -> ModelDescription: ...


def describe_model(model: object) -> ModelDescription:
    """``model.describe()``, else ``model.config.describe()``, else a generic model's."""
    for candidate in (model, getattr(model, "config", None)):
        if isinstance(candidate, Describable):
            return candidate.describe()
    return ModelDescription()
