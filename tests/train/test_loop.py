"""The training loop on a character LM: learning, reproducibility, checkpoints and resume."""

from __future__ import annotations

import math

import pytest
import torch

from rnnstream.errors import CheckpointError
from rnnstream.models import CharLM, CharLMConfig, load_checkpoint
from rnnstream.models.charlm import FALLBACK_CHAR
from rnnstream.train import (
    LanguageModelTask,
    TextCorpus,
    TrainConfig,
    bits_per_token,
    load_train_state,
    train,
    train_state_path,
)

CHARS = "".join(sorted(set("abcdefghijklmnopqrstuvwxyz_ ()=:.,'\"\n\t0123456789#"))) + FALLBACK_CHAR


def make(python_text: str, cell: str = "lstm", seed: int = 0, **arch) -> tuple:
    config = CharLMConfig(cell=cell, chars=CHARS, **{"hidden_size": 32, "num_layers": 1, **arch})
    torch.manual_seed(seed)
    model = CharLM(config)
    cut = len(python_text) * 9 // 10
    corpus = TextCorpus((python_text[:cut],), (python_text[cut:],), "test")
    return model, LanguageModelTask.from_corpus(corpus, config, batch_size=4, seq_len=32, seed=seed)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_a_few_steps_lower_the_loss(python_text, cell):
    model, task = make(python_text, cell)
    before = task.evaluate(model)
    result = train(model, task, TrainConfig(steps=40, lr=1e-2, eval_every=20, save_every=0))
    after = result.metrics
    assert after["val_loss"] < before["loss"] - 0.5
    assert result.history[0]["train_loss"] > after["train_loss"]
    assert after["val_bpc"] == pytest.approx(after["val_loss"] / math.log(2))


def test_an_epoch_end_reports_the_epoch_loss(python_text):
    model, task = make(python_text)
    steps = task.batches_per_epoch + 1
    result = train(model, task, TrainConfig(steps=steps, accumulate=1, save_every=0))
    epochs = [r for r in result.history if "epoch" in r]
    assert len(epochs) == 1 and epochs[0]["epoch"] == 1
    assert epochs[0]["step"] == task.batches_per_epoch and "val_bpc" in epochs[0]


def test_uniform_predictions_cost_log2_vocabulary_bits():
    model = CharLM(CharLMConfig(chars=CHARS, hidden_size=8, num_layers=1))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    tokens = torch.randint(0, model.config.vocab_size, (1000,))
    nats, bits = bits_per_token(model, tokens, lanes=3, seq_len=50)
    assert nats == pytest.approx(math.log(model.config.vocab_size), rel=1e-6)
    assert bits == pytest.approx(math.log2(model.config.vocab_size), rel=1e-6)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_gives_identical_weights(python_text):
    runs = []
    for seed in (5, 5, 6):
        model, task = make(python_text, "gru", seed=seed, dropout=0.2, num_layers=2)
        train(model, task, TrainConfig(steps=6, accumulate=2, seed=seed, save_every=0))
        runs.append(weights(model))
    assert same(runs[0], runs[1])
    assert not same(runs[0], runs[2])


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, python_text):
    config = TrainConfig(steps=12, lr=5e-3, accumulate=2, save_every=4, seed=1)
    arch = {"dropout": 0.3, "num_layers": 2}  # dropout: the random generator must be restored

    model, task = make(python_text, seed=1, **arch)
    train(model, task, config)
    uninterrupted = weights(model)

    ckpt = tmp_path / "lm.safetensors"
    model, task = make(python_text, seed=1, **arch)

    def stop_after_save(info) -> None:
        if info.step == 8:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(model, task, config, checkpoint=ckpt, on_step=stop_after_save)
    progress, _ = load_train_state(train_state_path(ckpt), torch.optim.Adam(model.parameters()))
    assert progress["step"] == 8

    resumed_model = load_checkpoint(ckpt)
    _, fresh_task = make(python_text, seed=1, **arch)
    result = train(resumed_model, fresh_task, config, checkpoint=ckpt, resume=True)
    assert result.steps == 12
    assert same(uninterrupted, weights(resumed_model))
    assert same(uninterrupted, weights(load_checkpoint(ckpt)))


def test_resume_refuses_missing_or_pickled_state(tmp_path, python_text):
    model, task = make(python_text)
    ckpt = tmp_path / "lm.safetensors"
    with pytest.raises(CheckpointError, match="does not exist"):
        train(model, task, TrainConfig(steps=2), checkpoint=ckpt, resume=True)
    train(model, task, TrainConfig(steps=2), checkpoint=ckpt)
    torch.save({"state": {}}, train_state_path(ckpt))
    with pytest.raises(CheckpointError, match="not an rnnstream training state"):
        train(model, task, TrainConfig(steps=4), checkpoint=ckpt, resume=True)


def test_train_config_is_checked_and_decays_the_learning_rate():
    config = TrainConfig(steps=100, lr=1e-3, min_lr_fraction=0.1)
    assert config.lr_at(0) == pytest.approx(1e-3)
    assert config.lr_at(50) == pytest.approx(0.55e-3)
    assert config.lr_at(100) == pytest.approx(1e-4)
    with pytest.raises(ValueError):
        TrainConfig(accumulate=0)
