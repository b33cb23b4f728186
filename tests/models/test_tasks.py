"""SequenceClassifier, FrameTagger, Forecaster: training, export with parity, streaming, data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rnnstream
from rnnstream.cells import CELLS
from rnnstream.export import ParitySettings, export
from rnnstream.models import (
    Forecaster,
    ForecasterConfig,
    FrameTagger,
    FrameTaggerConfig,
    SequenceClassifier,
    SequenceClassifierConfig,
)
from rnnstream.models.inputs import BYTE_VOCAB
from rnnstream.train import (
    PY_TAGS,
    ClassificationTask,
    ForecastTask,
    TaggingTask,
    TrainConfig,
    bytes_to_ids,
    load_file_kinds,
    mackey_glass,
    tag_python,
    train,
)
from rnnstream.train.batching import CropSampler
from tests.models.round_trip import assert_checkpoint_round_trip
from tests.tolerances import PARITY, assert_close

PY = b"import os\n\ndef f(x):\n    return os.path.join(x, 'a')  # join\n" * 3
C = b"#include <stdio.h>\n\nstatic int f(int x) {\n    return x + 1; /* add */\n}\n" * 3
SH = b'#!/bin/sh\nset -e\nfor f in *.txt; do\n    echo "$f"\ndone\n' * 3


def classifier_task() -> ClassificationTask:
    data = [(bytes_to_ids(b), k) for k, b in enumerate((PY, C, SH))]
    return ClassificationTask(data * 4, data, batch_size=6, min_len=8, max_len=48, seed=0)


def tagger_task() -> TaggingTask:
    data, tags = tag_python(PY.decode())
    seqs = [(bytes_to_ids(data), torch.from_numpy(tags))]
    return TaggingTask(seqs, seqs, batch_size=6, min_len=16, max_len=48, seed=0, per_epoch=4)


def forecast_task() -> ForecastTask:
    series = mackey_glass(length=600)
    return ForecastTask(series[:500], series[500:], batch_size=8, min_len=16, max_len=40, warmup=10)


def build(kind: str, cell: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "sequence_classifier":
        labels = ("python", "c", "shell")
        return SequenceClassifier(
            SequenceClassifierConfig(labels, cell, hidden_size=16, embed_size=8, **kw)
        )
    if kind == "frame_tagger":
        return FrameTagger(
            FrameTaggerConfig(PY_TAGS, cell, num_layers=2, hidden_size=16, embed_size=8)
        )
    return Forecaster(ForecasterConfig(1, cell, hidden_size=16, mean=(0.9,), scale=(0.2,)))


TASKS = {
    "sequence_classifier": classifier_task,
    "frame_tagger": tagger_task,
    "forecaster": forecast_task,
}


# Every kind with the LSTM (its long parity check) and one other cell, each other cell once: a
# kind's code does not depend on its cell, and every cell's export is covered by test_matrix.
KIND_CELLS = [
    ("sequence_classifier", "lstm"),
    ("sequence_classifier", "rnn_relu"),
    ("frame_tagger", "lstm"),
    ("frame_tagger", "gru"),
    ("forecaster", "lstm"),
    ("forecaster", "rnn_tanh"),
]


def test_the_kind_and_cell_pairs_cover_every_kind_and_cell():
    assert {k for k, _ in KIND_CELLS} == set(TASKS) and {c for _, c in KIND_CELLS} == set(CELLS)


@pytest.mark.parametrize(("kind", "cell"), KIND_CELLS)
def test_trains_exports_and_streams_with_parity(tmp_path, kind, cell):
    model, task = build(kind, cell), TASKS[kind]()
    probe = task.batch(0)
    with torch.no_grad():
        before = task.loss(model, probe).item()
    train(model, task, TrainConfig(steps=12, lr=1e-2, min_lr_fraction=1.0))
    with torch.no_grad():
        assert task.loss(model, probe).item() < before
    assert model.config.describe().kind == kind
    steps = 1000 if cell == "lstm" else 200  # one long check per kind
    c = model.config
    labels = getattr(c, "labels", None)
    path = tmp_path / "m.onnx"
    report = export(model, path, parity=ParitySettings(steps=steps))  # the model describes itself
    sig = rnnstream.load(path).signature
    assert sig.labels == labels and report.signature.labels == labels
    assert sig.parity.passed and sig.parity.max_abs_err <= 1e-5
    assert (sig.kind, sig.streamable, sig.vocab) == (kind, True, c.describe().vocab)
    # The stream, one step at a time, against one PyTorch forward of a real sequence.
    x = task.validation[0][0][:40] if kind != "forecaster" else task.validation[None, :40]
    x = x[None] if kind != "forecaster" else x
    stream = rnnstream.load(tmp_path / "m.onnx").stream()
    got = np.stack([stream.step(v) for v in x[0].numpy()])
    with torch.no_grad():
        want, _ = model(x)
    assert_close(got, want[0].numpy(), PARITY)


def test_streamed_estimate_ends_at_the_sequence_label(tmp_path):
    model, task = build("sequence_classifier", "gru"), classifier_task()
    train(model, task, TrainConfig(steps=30, lr=1e-2))
    export(model, tmp_path / "c.onnx", parity=ParitySettings(steps=200))
    assert rnnstream.load(tmp_path / "c.onnx").signature.vocab == BYTE_VOCAB
    onnx_model = rnnstream.load(tmp_path / "c.onnx")
    texts = [PY[:30], C[:45], SH[:20]]
    x, lengths = torch.zeros(3, 45, dtype=torch.int64), torch.tensor([30, 45, 20])
    for i, t in enumerate(texts):
        x[i, : len(t)] = bytes_to_ids(t)
    with torch.no_grad():
        labels = model.sequence_logits(x, lengths).argmax(-1).tolist()
    for text, label in zip(texts, labels):
        stream = onnx_model.stream()
        # Text decoded as latin-1 is the byte ids, through the signature's vocabulary.
        ids = rnnstream.runtime.Vocabulary(onnx_model.signature.vocab).encode(
            text.decode("latin-1")
        )
        estimates = [int(stream.step(i).argmax()) for i in ids]
        assert estimates[-1] == label


def test_bidirectional_classifier_exports_as_not_streamable(tmp_path):
    model, task = build("sequence_classifier", "lstm", bidirectional=True), classifier_task()
    train(model, task, TrainConfig(steps=5, lr=1e-2))
    report = export(model, tmp_path / "b.onnx", parity=ParitySettings(steps=200))
    sig = report.signature
    assert not sig.streamable and sig.parity.passed and sig.parity.max_abs_err <= 1e-5
    assert sig.outputs[0].shape == ("batch", 3)
    # Packed sequences give each padded sequence the logits of its unpadded forward.
    a, b = bytes_to_ids(PY[:20]), bytes_to_ids(C[:33])
    x = torch.zeros(2, 33, dtype=torch.int64)
    x[0, :20], x[1] = a, b
    with torch.no_grad():
        packed = model.sequence_logits(x, torch.tensor([20, 33]))
        alone = torch.cat([model(a[None])[0], model(b[None])[0]])
    torch.testing.assert_close(packed, alone)


@pytest.mark.parametrize("kind", list(TASKS))
def test_checkpoint_round_trip(tmp_path, kind):
    model = build(kind, "gru")
    assert_checkpoint_round_trip(model, tmp_path / "m.safetensors", model.example_input())


def test_configs_reject_bad_values():
    with pytest.raises(ValueError, match="exactly one"):
        SequenceClassifierConfig(("a", "b"), num_tokens=0, input_size=0)
    with pytest.raises(ValueError, match="labels"):
        FrameTaggerConfig(("a", "a"))
    with pytest.raises(ValueError, match="one value per feature"):
        ForecasterConfig(features=2, mean=(1.0,))
    frames = SequenceClassifier(SequenceClassifierConfig(("a", "b"), num_tokens=0, input_size=5))
    assert frames.example_input().shape == (2, 3, 5) and frames.config.describe().vocab is None


def test_python_tags_come_from_tokenize():
    data, tags = tag_python("x = 'é'  # c\n")
    assert data == "x = 'é'  # c\n".encode()
    names = [PY_TAGS[t] for t in tags]
    # 'é' is two bytes of UTF-8: the string is four bytes long.
    assert names == ["code"] * 4 + ["string"] * 4 + ["code"] * 2 + ["comment"] * 3 + ["code"]


def test_datasets_are_deterministic():
    first = load_file_kinds(("python", "c_header"), max_files=25, max_bytes=64)
    assert first == load_file_kinds(("python", "c_header"), max_files=25, max_bytes=64)
    assert first.labels == ("python", "c_header") and first.train and first.validation
    np.testing.assert_array_equal(mackey_glass(300), mackey_glass(300))
    assert mackey_glass(300).min() > 0.2 and mackey_glass(300).max() < 1.5


def test_file_kinds_fail_clearly():
    with pytest.raises(ValueError, match="unknown file kinds"):
        load_file_kinds(("python", "cobol"))
    with pytest.raises(ValueError, match="need 10000"):
        load_file_kinds(("python", "c_header"), max_files=50, min_files=10000)


def test_sampler_is_seeded_and_resumable():
    def draw(sampler: CropSampler, n: int) -> list:
        return [sampler.batch(i % sampler.per_epoch) for i in range(n)]

    a, b = CropSampler([50, 80, 9], 2, 4, 20, seed=3), CropSampler([50, 80, 9], 2, 4, 20, seed=3)
    assert draw(a, 5) == draw(b, 5)
    state = a.state_dict()
    rest = [a.batch(i % 2) for i in range(5, 9)]
    c = CropSampler([50, 80, 9], 2, 4, 20, seed=99)
    c.load_state_dict(state)
    # Batch 5 is index 1 of the third epoch: the resumed sampler continues at that index.
    assert [c.batch(i % 2) for i in range(5, 9)] == rest
    for index, start, stop in (crop for batch in rest for crop in batch):
        assert 0 <= start < stop <= [50, 80, 9][index] and stop - start <= 20


def test_frame_input_classifier_exports_and_streams(tmp_path):
    torch.manual_seed(0)
    config = SequenceClassifierConfig(("on", "off"), "gru", num_tokens=0, input_size=4)
    model = SequenceClassifier(config).eval()
    report = export(model, tmp_path / "f.onnx")
    sig = report.signature
    assert sig.input.dtype == "float32" and sig.vocab is None and sig.labels == ("on", "off")
    assert sig.parity.passed and sig.parity.max_abs_err <= 1e-5
