"""Training recipes (rnnstream/train/recipes.py): what they build, and what they refuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnstream.errors import CheckpointError
from rnnstream.models import CharLM, Forecaster, FrameTagger, save_checkpoint
from rnnstream.train import (
    Architecture,
    CharLMRecipe,
    ForecasterRecipe,
    Series,
    TaggedData,
    TaggerRecipe,
    TextCorpus,
    prepare,
    standardisation,
)
from tests.tolerances import assert_close

ARCH = Architecture(cell="gru", num_layers=1, hidden_size=8)


def series(features: int, seed: int) -> Series:
    values = np.random.default_rng(seed).normal(3.0, 2.0, (400, features)).astype(np.float32)
    return Series(values[:300], values[300:], "random")


def test_standardisation_is_the_mean_and_spread_with_a_floor():
    values = np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32)
    mean, scale = standardisation(values)
    assert_close(mean, [2.0, 5.0])
    assert_close(scale[0], 1.0)
    assert scale[1] == float(np.float32(1e-6))  # the floor of a constant feature


def test_a_new_model_is_built_from_the_seed_and_its_task_fits(tmp_path):
    recipe = ForecasterRecipe(series(2, seed=0), ARCH, min_len=8, max_len=16)
    first, task = prepare(recipe, tmp_path / "f.safetensors", batch_size=4, seed=7)
    again, _ = prepare(recipe, tmp_path / "f.safetensors", batch_size=4, seed=7)
    assert isinstance(first, Forecaster) and first.config.features == 2
    for a, b in zip(first.parameters(), again.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the same seed, the same weights
    mean, scale = standardisation(recipe.data.train)
    assert first.config.mean == mean and first.config.scale == scale
    assert task.batches_per_epoch >= 1 and recipe.metrics == {
        "mae": "MAE",
        "naive_mae": "repeat-last MAE",
    }


def test_resuming_loads_the_checkpoint_and_checks_it_against_the_data(tmp_path):
    ckpt = tmp_path / "f.safetensors"
    model, _ = prepare(ForecasterRecipe(series(2, 0), ARCH), ckpt, batch_size=4, seed=0)
    save_checkpoint(model, ckpt)
    resumed, _ = prepare(
        ForecasterRecipe(series(2, 1), ARCH), ckpt, batch_size=4, seed=0, resume=True
    )
    for a, b in zip(model.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="forecasts 2 feature"):
        prepare(ForecasterRecipe(series(3, 0), ARCH), ckpt, batch_size=4, seed=0, resume=True)
    corpus = TextCorpus(("def f():\n    return 1\n" * 20,), ("x = 2\n" * 20,), "text")
    with pytest.raises(CheckpointError, match="holds a Forecaster, not a CharLM"):
        prepare(CharLMRecipe(corpus, ARCH), ckpt, batch_size=2, seed=0, resume=True)


def test_a_tagger_with_other_labels_is_refused(tmp_path):
    tags = np.zeros(40, dtype=np.int64)
    data = TaggedData(("code", "string"), ((b"x" * 40, tags),), ((b"y" * 40, tags),))
    ckpt = tmp_path / "t.safetensors"
    model, _ = prepare(TaggerRecipe(data, ARCH, min_len=4, max_len=8), ckpt, batch_size=2, seed=0)
    assert isinstance(model, FrameTagger)
    save_checkpoint(model, ckpt)
    other = TaggedData(("code", "comment"), data.train, data.validation)
    with pytest.raises(CheckpointError, match="labels"):
        prepare(TaggerRecipe(other, ARCH), ckpt, batch_size=2, seed=0, resume=True)


def test_a_char_lm_takes_the_characters_of_its_data_when_asked():
    corpus = TextCorpus(("abcab",), ("ab",), "text")
    model = CharLMRecipe(corpus, ARCH, embed_size=4, vocab="data").build()
    assert isinstance(model, CharLM) and model.config.chars == "abc\ufffd"  # and "unknown"
