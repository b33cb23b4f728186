"""CharLM: config, token layout, export with parity, streaming, and sampling on the runtime."""

from __future__ import annotations

import string

import numpy as np
import pytest
import torch

import rnnstream
from rnnstream.cells import CELLS
from rnnstream.errors import CheckpointError, InputError, NotALanguageModelError
from rnnstream.export import ParitySettings, export
from rnnstream.models import CharLM, CharLMConfig, load_checkpoint, save_checkpoint
from rnnstream.models.charlm import BOS, BOS_CHAR, EOS, EOS_CHAR, N_SPECIAL
from rnnstream.runtime import Vocabulary
from rnnstream.runtime.generate import generate
from rnnstream.train import encode
from tests.tolerances import PARITY, assert_close


def small(cell: str = "lstm", **kw) -> CharLM:
    torch.manual_seed(0)
    return CharLM(CharLMConfig(cell=cell, num_layers=2, hidden_size=24, embed_size=8, **kw))


def export_lm(model: CharLM, path) -> rnnstream.Model:
    export(model, path, parity=ParitySettings(steps=200))
    return rnnstream.load(path)


def test_config_round_trips_through_json():
    config = CharLMConfig(cell="gru", num_layers=3, hidden_size=40, chars="abc\n\ufffd")
    assert CharLMConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown config fields"):
        CharLMConfig.from_json('{"cell": "lstm", "width": 3}')


@pytest.mark.parametrize(
    "bad",
    [
        {"cell": "rnn"},
        {"chars": "ab" + BOS_CHAR},
        {"chars": "aa"},
        {"chars": ""},
        {"hidden_size": 0},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        CharLMConfig(**bad)


def test_token_ids_are_positions_in_the_vocab_string():
    config = CharLMConfig()
    vocab = config.vocab
    assert (vocab[BOS], vocab[EOS]) == (BOS_CHAR, EOS_CHAR)
    assert vocab[N_SPECIAL:] == config.chars and len(vocab) == config.vocab_size
    assert set(string.printable) <= set(config.chars)
    text = "def f(x):\n\treturn x ** 2  # ok\n"
    runtime_ids = Vocabulary(vocab).encode(text)
    np.testing.assert_array_equal(runtime_ids, encode(text, config))
    assert Vocabulary(vocab).decode(runtime_ids) == text


@pytest.mark.parametrize("cell", CELLS)
def test_exports_and_streams_with_parity(tmp_path, cell):
    model = small(cell).eval()
    onnx_model = export_lm(model, tmp_path / "lm.onnx")
    sig = onnx_model.signature
    assert sig.parity.passed and sig.parity.max_abs_err <= 1e-5
    assert (sig.kind, sig.vocab, sig.bos, sig.eos) == ("char_lm", model.config.vocab, BOS, EOS)
    # Text in, one chunk then single steps, against one PyTorch forward of the whole sequence.
    ids = np.concatenate([[BOS], Vocabulary(sig.vocab).encode("import os\nprint(os.sep)")])
    stream = onnx_model.stream()
    got = np.concatenate([stream.feed(ids[:10]), np.stack([stream.step(i) for i in ids[10:]])])
    with torch.no_grad():
        want, _ = model(torch.from_numpy(ids)[None])
    assert_close(got, want[0].numpy(), PARITY)


def test_checkpoint_round_trip_and_pickle_refused(tmp_path):
    model = small("gru", dropout=0.1, chars="xyz\ufffd")
    save_checkpoint(model, tmp_path / "lm.safetensors")
    loaded = load_checkpoint(tmp_path / "lm.safetensors")
    assert isinstance(loaded, CharLM) and loaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])
    torch.save(model.state_dict(), tmp_path / "pickled.safetensors")
    with pytest.raises(CheckpointError, match="never loads pickle"):
        load_checkpoint(tmp_path / "pickled.safetensors")


@pytest.fixture(scope="module")
def lm_onnx(tmp_path_factory) -> tuple[CharLM, rnnstream.Model]:
    model = small("lstm").eval()
    return model, export_lm(model, tmp_path_factory.mktemp("lm") / "lm.onnx")


def test_greedy_sampling_follows_the_pytorch_argmax(lm_onnx):
    model, onnx_model = lm_onnx
    prompt = "for i in"
    text = generate(onnx_model, prompt, max_tokens=30, temperature=0).text
    vocab = Vocabulary(model.config.vocab)
    ids = torch.from_numpy(np.concatenate([[BOS], vocab.encode(prompt + text)]))[None]
    with torch.no_grad():
        logits, _ = model(ids)
    argmax = logits[0].argmax(-1).numpy()
    # Every generated token is PyTorch's argmax after the tokens before it (EOS would stop).
    start = 1 + len(prompt)
    np.testing.assert_array_equal(ids[0, start:].numpy(), argmax[start - 1 : -1])
    assert len(text) == 30 or argmax[-1] == EOS


def test_sampling_is_reproducible_with_a_seed(lm_onnx):
    _, onnx_model = lm_onnx

    def sample(seed: int) -> str:
        return generate(onnx_model, "x = ", 40, temperature=1.0, seed=seed).text

    assert sample(3) == sample(3)
    assert sample(3) != sample(4)


def test_sampling_stops_at_eos(tmp_path):
    model = small("gru").eval()
    with torch.no_grad():
        model.head.bias[EOS] = 100.0  # EOS is always the most likely next token
    onnx_model = export_lm(model, tmp_path / "eos.onnx")
    out = generate(onnx_model, "abc", max_tokens=50, temperature=1.0, seed=0)
    assert (out.text, out.token_ids, out.finish) == ("", [EOS], "eos")


def test_sampling_errors(lm_onnx, tmp_path):
    _, onnx_model = lm_onnx
    with pytest.raises(InputError, match="not in the model's vocabulary"):
        generate(onnx_model, "caf\u00e9", 5)
    with pytest.raises(InputError, match="temperature"):
        generate(onnx_model, "a", 5, temperature=-1)
    torch.manual_seed(0)
    frames = torch.nn.LSTM(4, 8, batch_first=True)
    export(frames, tmp_path / "frames.onnx", parity=ParitySettings(steps=50))
    with pytest.raises(NotALanguageModelError, match="no vocabulary"):
        generate(rnnstream.load(tmp_path / "frames.onnx"), "a", 5)
