"""export() reads kind, vocabulary, BOS/EOS and labels from the model; an explicit one overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import rnnstream
from rnnstream.export import ModelDescription, ParitySettings, export
from rnnstream.models import (
    CharLM,
    CharLMConfig,
    Forecaster,
    ForecasterConfig,
    FrameTagger,
    FrameTaggerConfig,
    RecurrentNet,
    RecurrentNetConfig,
    describe_model,
)
from rnnstream.models.charlm import BOS, EOS
from rnnstream.models.inputs import BYTE_VOCAB

QUICK = ParitySettings(steps=20)


class Described(nn.Module):
    """A user's module that describes itself on the module (no rnnstream config)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(3, 4)
        self.rnn = nn.GRU(4, 6, batch_first=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.embed(x))[0])

    def describe(self) -> ModelDescription:
        return ModelDescription(kind="char_lm", vocab="xyz", eos=2)


def _signature(model: nn.Module, path: Path, **kw: object) -> rnnstream.Signature:
    export(model, path, parity=QUICK, **kw)
    return rnnstream.load(path).signature


def test_rnnstream_models_describe_themselves() -> None:
    chars = CharLMConfig(num_layers=1, hidden_size=4, embed_size=2, chars="ab")
    assert describe_model(CharLM(chars)) == ModelDescription("char_lm", chars.vocab, BOS, EOS)
    tagger = FrameTagger(FrameTaggerConfig(("x", "y", "z"), hidden_size=4, embed_size=2))
    assert describe_model(tagger) == ModelDescription(
        "frame_tagger", BYTE_VOCAB, labels=("x", "y", "z")
    )
    assert describe_model(Forecaster(ForecasterConfig(hidden_size=4))).kind == "forecaster"
    net = RecurrentNet(RecurrentNetConfig(hidden_size=4, vocab="abc"))
    assert describe_model(net) == ModelDescription("char_lm", "abc")
    assert describe_model(nn.LSTM(2, 3)) == ModelDescription()  # nothing to say: generic


def test_export_writes_the_models_own_description(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = CharLMConfig(num_layers=1, hidden_size=6, embed_size=3, chars="abc")
    sig = _signature(CharLM(config), tmp_path / "lm.onnx")
    assert (sig.kind, sig.vocab, sig.bos, sig.eos) == ("char_lm", config.vocab, BOS, EOS)


def test_a_users_module_can_describe_itself(tmp_path: Path) -> None:
    torch.manual_seed(1)
    sig = _signature(Described(), tmp_path / "user.onnx")
    assert (sig.kind, sig.vocab, sig.bos, sig.eos) == ("char_lm", "xyz", None, 2)


@pytest.mark.parametrize("model", [nn.LSTM(3, 5, batch_first=True), Described()])
def test_an_explicit_description_overrides(model: nn.Module, tmp_path: Path) -> None:
    torch.manual_seed(2)
    labels = ModelDescription(kind="frame_tagger", labels=("on", "off", "unk"))
    sig = _signature(model, tmp_path / "m.onnx", description=labels)
    assert (sig.kind, sig.labels, sig.vocab, sig.eos) == (
        "frame_tagger",
        ("on", "off", "unk"),
        None,
        None,
    )


def test_a_plain_module_exports_as_generic(tmp_path: Path) -> None:
    torch.manual_seed(3)
    sig = _signature(nn.GRU(3, 4, batch_first=True), tmp_path / "gru.onnx")
    assert (sig.kind, sig.vocab, sig.bos, sig.eos, sig.labels) == ("generic",) + (None,) * 4


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"steps": 0}, "steps"),
        ({"batch": 2.5}, "batch"),
        ({"chunk": True}, "chunk"),
        ({"eval_tokens": 1}, "eval_tokens"),
        ({"atol": -1.0}, "atol"),
        ({"atol": float("nan")}, "atol"),
    ],
)
def test_bad_parity_settings_are_export_errors(settings: dict, words: str) -> None:
    with pytest.raises(rnnstream.ExportError, match=words):
        ParitySettings(**settings)
