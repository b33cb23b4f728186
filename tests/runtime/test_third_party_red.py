"""Red team: stateful files as more projects export them, never seen by the runtime before.

Each file is exported at test time with ``torch.onnx.export`` (TorchScript at opsets 9-17, and
dynamo) from a tiny model written as the project writes it: an RNNoise-like denoiser (three GRU
states of three sizes), a state kept batch-first ``[B, L, H]`` for a serving batcher, a
Silero-like window encoder into an ``LSTMCell`` (2-D ``h``/``c``), Silero 5's stacked
``state [2, B, H]`` with ``sr``, an LSTM's ``h``/``c`` packed in one ``[L, 2, B, H]``, a causal
conv whose left context is a state ``[B, C, K-1]``, a keyword spotter returning only the last
frame's logits, a ``GRUCell`` returning its new hidden as output and state, stereo frames
``[B, T, 2, F]``, a CRNN's ``[B, 1, T, F]``, int64 argmax and softmax heads, int32 token ids,
CTC log-probs returned time-major from a batch-first input, an opset-9 file with its weights
listed as graph inputs, and dynamo files (one whose time axis the exporter baked into a Reshape).
Each loads without help and streams by ``step``, ``feed``, a pool and ``rnnstream stream``
exactly like a hand-written onnxruntime loop carrying the state; ``rnnstream info`` shows the
decided axes. Inputs the runtime cannot fill (speechbrain's relative ``wav_lens``, a ``mask``)
are refused naming them and stream once pinned.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import rnnstream
from rnnstream.errors import InputError, SignatureError
from tests.runtime.third_party import (
    assert_step_and_feed_match,
    assert_steps_match,
    exported_once,
    ort_loop,
    outputs_by_name,
    random_frames,
)
from tests.tolerances import KERNELS, assert_close

F, H, V = 6, 5, 11


class RnnoiseLike(nn.Module):
    """RNNoise: vad, noise and denoise GRUs, each with its own state; gains and vad out."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(F, 4)
        self.vad_gru = nn.GRU(4, 3, batch_first=True)
        self.noise_gru = nn.GRU(4 + 3 + F, 7, batch_first=True)
        self.denoise_gru = nn.GRU(3 + 7 + F, 9, batch_first=True)
        self.gains_out, self.vad_out = nn.Linear(9, 4), nn.Linear(3, 1)

    def forward(self, x, vad_gru_state, noise_gru_state, denoise_gru_state):
        d = torch.tanh(self.dense(x))
        v, vs = self.vad_gru(d, vad_gru_state)
        n, ns = self.noise_gru(torch.cat([d, v, x], -1), noise_gru_state)
        g, ds = self.denoise_gru(torch.cat([v, n, x], -1), denoise_gru_state)
        return torch.sigmoid(self.gains_out(g)), torch.sigmoid(self.vad_out(v)), vs, ns, ds


class BatchFirstState(nn.Module):
    """A 2-layer GRU whose state is kept ``[B, L, H]`` (a serving batcher stacks axis 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(F, H, 2, batch_first=True)

    def forward(self, x, state):
        y, h = self.rnn(x, state.transpose(0, 1).contiguous())
        return y, h.transpose(0, 1)


class CellWindow(nn.Module):
    """A window of 64 samples through a strided Conv1d into an ``LSTMCell``; ``h``, ``c [B, H]``."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.cell, self.head = (
            nn.Conv1d(1, 4, 16, stride=16),
            nn.LSTMCell(16, H),
            nn.Linear(H, 1),
        )

    def forward(self, input, h, c):
        h, c = self.cell(torch.relu(self.enc(input.unsqueeze(1))).flatten(1), (h, c))
        return torch.sigmoid(self.head(h)), h, c


class SileroV5(nn.Module):
    """Silero VAD 5's interface: ``input [B, 512]``, ``state [2, B, H]`` (h and c), ``sr``."""

    def __init__(self) -> None:
        super().__init__()
        self.stft, self.cell, self.head = (
            nn.Conv1d(1, 4, 64, stride=64),
            nn.LSTMCell(32, H),
            nn.Linear(H, 1),
        )

    def forward(self, input, state, sr):
        z = torch.relu(self.stft((input * (sr.float() / 16000.0)).unsqueeze(1))).flatten(1)
        h, c = self.cell(z, (state[0], state[1]))
        return torch.sigmoid(self.head(h)), torch.stack([h, c])


class PackedLstmState(nn.Module):
    """One ``states [L, 2, B, H]``: each layer's h and c on axis 1, the batch on axis 2."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(F, H, 2, batch_first=True)

    def forward(self, x, states):
        y, (h, c) = self.rnn(x, (states[:, 0].contiguous(), states[:, 1].contiguous()))
        return y, torch.stack([h, c], 1)


class ConvCacheGru(nn.Module):
    """A causal Conv1d whose left context is a state ``[B, F, 2]``, then a GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.rnn = nn.Conv1d(F, F, 3), nn.GRU(F, H, batch_first=True)

    def forward(self, x, conv_cache, h):
        xt = torch.cat([conv_cache, x.transpose(1, 2)], 2)
        y, h = self.rnn(self.conv(xt).transpose(1, 2), h)
        return y, xt[:, :, -2:], h


class LastFrame(nn.Module):
    """A keyword spotter returning the last frame's logits ``[B, classes]`` only."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.GRU(F, H, batch_first=True), nn.Linear(H, 3)

    def forward(self, x, h):
        y, h = self.rnn(x, h)
        return self.head(y[:, -1]), h


class GruCellTwice(nn.Module):
    """A ``GRUCell`` step returning its new hidden as the output and as the state."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.GRUCell(F, H)

    def forward(self, x, hx):
        h = self.cell(x, hx)
        return h, h


class TimeMajorLstm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(F, H, 2)

    def forward(self, x, h0, c0):
        y, (h, c) = self.rnn(x, (h0, c0))
        return y, h, c


class Stereo(nn.Module):
    """Two channels per frame ``[B, T, 2, F]``, flattened into one GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(2 * F, H, batch_first=True)

    def forward(self, x, h):
        return self.rnn(x.flatten(2), h)


class Crnn(nn.Module):
    """A spectrogram ``[B, 1, T, F]`` through a Conv2d over frequency only, then a GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.rnn = (
            nn.Conv2d(1, 2, (1, 3), padding=(0, 1)),
            nn.GRU(2 * F, H, batch_first=True),
        )

    def forward(self, spec, h):
        return self.rnn(self.conv(spec).permute(0, 2, 1, 3).flatten(2), h)


class ArgmaxHead(nn.Module):
    """int64 predictions and softmax probabilities per frame."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.GRU(F, H, batch_first=True), nn.Linear(H, 4)

    def forward(self, x, h):
        y, h = self.rnn(x, h)
        scores = self.head(y)
        return scores.argmax(-1), scores.softmax(-1), h


class Int32Tokens(nn.Module):
    """int32 token ids (as some exporters cast them) into an embedding and an LSTM."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.rnn, self.out = (
            nn.Embedding(V, F),
            nn.LSTM(F, H, batch_first=True),
            nn.Linear(H, V),
        )

    def forward(self, y, h, c):
        e, (h, c) = self.rnn(self.emb(y.long()), (h, c))
        return self.out(e), h, c


class CtcTimeMajor(nn.Module):
    """Batch-first features in, log-probs out time-major ``[T, B, V]`` (CTC's layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.GRU(F, H, batch_first=True), nn.Linear(H, 4)

    def forward(self, x, h):
        y, h = self.rnn(x, h)
        return self.head(y).log_softmax(-1).transpose(0, 1), h


BT = {0: "batch", 1: "time"}
BATCH_1 = {1: "batch"}
PROBED = "batch axis 0 (probe), time axis 1 (probe)"
WINDOW = "batch axis 0 (probe), time axis none (probe)"


def _zeros(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape)


@dataclass(frozen=True)
class Case:
    """A model, how its project exported it, and what loading the file must decide."""

    module: Callable[[], nn.Module]
    example: Callable[[], tuple]
    names: tuple[list[str], list[str]] | None  # TorchScript's input/output names; None: dynamo's
    dynamic: dict[str, dict[int, str]]
    opset: int
    pairs: dict[str, str]
    frame: tuple[int, ...]  # one step's frame as a caller passes it
    step: tuple[int, ...]  # the same frame in the model's layout (batch and time of 1)
    axes: str  # what info shows for the stream input
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # fed by the hand loop too
    tokens: bool = False


def _batch_first(*shapes: tuple[int, ...]) -> Callable[[], tuple]:
    return lambda: (torch.randn(2, 3, F), *(_zeros(*s) for s in shapes))


CASES = {
    "rnnoise_three_states": Case(
        RnnoiseLike,
        _batch_first((1, 2, 3), (1, 2, 7), (1, 2, 9)),
        (
            ["input", "vad_gru_state", "noise_gru_state", "denoise_gru_state"],
            ["gains", "vad", "vad_gru_state_out", "noise_gru_state_out", "denoise_gru_state_out"],
        ),
        {"input": BT, "gains": BT, "vad": BT}
        | {f"{n}_gru_state{s}": BATCH_1 for n in ("vad", "noise", "denoise") for s in ("", "_out")},
        13,
        {f"{n}_gru_state": f"{n}_gru_state_out" for n in ("vad", "noise", "denoise")},
        (F,),
        (1, 1, F),
        PROBED,
    ),
    "state_batch_first": Case(
        BatchFirstState,
        _batch_first((2, 2, H)),
        (["x", "state"], ["y", "next_state"]),
        {"x": BT, "y": BT, "state": {0: "batch"}, "next_state": {0: "batch"}},
        17,
        {"state": "next_state"},
        (F,),
        (1, 1, F),
        PROBED,
    ),
    "lstmcell_window": Case(
        CellWindow,
        lambda: (torch.randn(2, 64), _zeros(2, H), _zeros(2, H)),
        (["input", "h", "c"], ["output", "hn", "cn"]),
        {n: {0: "batch"} for n in ("input", "h", "c", "output", "hn", "cn")},
        16,
        {"h": "hn", "c": "cn"},
        (64,),
        (1, 64),
        WINDOW,
    ),
    "silero_v5_stacked_state": Case(
        SileroV5,
        lambda: (torch.randn(2, 512), _zeros(2, 2, H), torch.tensor(16000)),
        (["input", "state", "sr"], ["output", "stateN"]),
        {"input": {0: "batch"}, "output": {0: "batch"}, "state": BATCH_1, "stateN": BATCH_1},
        16,
        {"state": "stateN"},
        (512,),
        (1, 512),
        WINDOW,
        extra={"sr": np.array(16000, np.int64)},
    ),
    "lstm_state_packed": Case(
        PackedLstmState,
        _batch_first((2, 2, 2, H)),
        (["x", "states"], ["y", "new_states"]),
        {"x": BT, "y": BT, "states": {2: "batch"}, "new_states": {2: "batch"}},
        17,
        {"states": "new_states"},
        (F,),
        (1, 1, F),
        PROBED,
    ),
    "conv_cache_state": Case(
        ConvCacheGru,
        _batch_first((2, F, 2), (1, 2, H)),
        (["x", "conv_cache", "h"], ["y", "new_conv_cache", "new_h"]),
        {"x": BT, "y": BT, "conv_cache": {0: "batch"}, "new_conv_cache": {0: "batch"}}
        | {"h": BATCH_1, "new_h": BATCH_1},
        17,
        {"conv_cache": "new_conv_cache", "h": "new_h"},
        (F,),
        (1, 1, F),
        PROBED,
    ),
    "kws_last_frame": Case(
        LastFrame,
        _batch_first((1, 2, H)),
        (["x", "h"], ["logits", "h_out"]),
        {"x": BT, "logits": {0: "batch"}, "h": BATCH_1, "h_out": BATCH_1},
        14,
        {"h": "h_out"},
        (F,),
        (1, 1, F),
        "batch axis 0 (probe), time axis 1 (probe, outputs the last step's: one step a run)",
    ),
    "grucell_hidden_twice": Case(
        GruCellTwice,
        lambda: (torch.randn(2, F), _zeros(2, H)),
        (["x", "hx"], ["output", "hy"]),
        {n: {0: "N"} for n in ("x", "hx", "output", "hy")},
        11,
        {"hx": "hy"},
        (F,),
        (1, F),
        WINDOW,
    ),
    "stereo_frames": Case(
        Stereo,
        lambda: (torch.randn(2, 3, 2, F), _zeros(1, 2, H)),
        (["x", "h"], ["y", "hn"]),
        {"x": BT, "y": BT, "h": BATCH_1, "hn": BATCH_1},
        17,
        {"h": "hn"},
        (2, F),
        (1, 1, 2, F),
        PROBED,
    ),
    "crnn_channel_of_one": Case(
        Crnn,
        lambda: (torch.randn(2, 1, 3, F), _zeros(1, 2, H)),
        (["spec", "h"], ["y", "hn"]),
        {"spec": {0: "batch", 2: "time"}, "y": BT, "h": BATCH_1, "hn": BATCH_1},
        17,
        {"h": "hn"},
        (1, F),
        (1, 1, 1, F),
        "batch axis 0 (probe), time axis 2 (probe)",
    ),
    "argmax_and_softmax": Case(
        ArgmaxHead,
        _batch_first((1, 2, H)),
        (["x", "h"], ["pred", "probs", "hn"]),
        {"x": BT, "pred": BT, "probs": BT, "h": BATCH_1, "hn": BATCH_1},
        15,
        {"h": "hn"},
        (F,),
        (1, 1, F),
        PROBED,
    ),
    "int32_token_ids": Case(
        Int32Tokens,
        lambda: (torch.randint(0, V, (2, 3), dtype=torch.int32), _zeros(1, 2, H), _zeros(1, 2, H)),
        (["y", "h", "c"], ["logit", "next_h", "next_c"]),
        {"y": BT, "logit": BT} | {n: {1: "N"} for n in ("h", "c", "next_h", "next_c")},
        11,
        {"h": "next_h", "c": "next_c"},
        (),
        (1, 1),
        PROBED,
        tokens=True,
    ),
    "ctc_time_major_output": Case(
        CtcTimeMajor,
        _batch_first((1, 2, H)),
        (["features", "hidden"], ["log_probs", "hidden_out"]),
        {"features": BT, "log_probs": {0: "time", 1: "batch"}, "hidden": BATCH_1}
        | {"hidden_out": BATCH_1},
        12,
        {"hidden": "hidden_out"},
        (F,),
        (1, 1, F),
        PROBED,
    ),
    # opset 9 with keep_initializers_as_inputs: every weight is also a graph input
    "opset9_weights_as_inputs": Case(
        TimeMajorLstm,
        lambda: (torch.randn(3, 2, F), _zeros(2, 2, H), _zeros(2, 2, H)),
        (["input", "h0", "c0"], ["output", "hn", "cn"]),
        {"input": {0: "seq", 1: "batch"}, "output": {0: "seq", 1: "batch"}}
        | {n: BATCH_1 for n in ("h0", "c0", "hn", "cn")},
        9,
        {"h0": "hn", "c0": "cn"},
        (F,),
        (1, 1, F),
        "batch axis 1 (probe), time axis 0 (probe)",
    ),
    "dynamo_state_batch_first": Case(
        BatchFirstState,
        _batch_first((2, 2, H)),
        None,
        {"x": BT, "state": {0: "batch"}},
        18,
        {"state": "transpose_1"},
        (F,),
        (1, 1, F),
        PROBED,
    ),
    # dynamo bakes the example's 3 steps into a Reshape: runs of 3 (and 6, wrongly) only
    "dynamo_time_baked_at_3": Case(
        TimeMajorLstm,
        lambda: (torch.randn(3, 2, F), _zeros(2, 2, H), _zeros(2, 2, H)),
        None,
        {"x": {0: "frames", 1: "batch"}, "h0": BATCH_1, "c0": BATCH_1},
        20,
        {"h0": "getitem_1", "c0": "getitem_2"},
        (3, F),
        (3, 1, F),
        "batch axis 1 (probe), time axis none (probe), frame axis 0 (probe, fixed 3)",
    ),
}


def _export(case: Case, path: Path) -> Path:
    torch.manual_seed(0)
    module = case.module().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case.names is None:
            args = module.forward.__code__.co_varnames[1 : module.forward.__code__.co_argcount]
            shapes = {
                arg: {a: torch.export.Dim(n, min=1, max=64) for a, n in case.dynamic[arg].items()}
                for arg in args
            }
            torch.onnx.export(
                module, case.example(), str(path), dynamo=True, opset_version=case.opset,
                dynamic_shapes=shapes,
            )  # fmt: skip
        else:
            torch.onnx.export(
                module, case.example(), str(path), dynamo=False, opset_version=case.opset,
                input_names=case.names[0], output_names=case.names[1], dynamic_axes=case.dynamic,
                keep_initializers_as_inputs=case.opset == 9,
            )  # fmt: skip
    return path


DYNAMO = sorted(name for name, case in CASES.items() if case.names is None)


def _export_apart(folder: Path) -> None:
    """The dynamo files, exported in one interpreter of their own (the baked one last): torch
    2.13's dynamo exporter carries a time size it specialised in one export into later exports
    of the same process (an LSTM exported after this file's baked one comes out with its time
    fixed at 3 too, and this file's GRU after another test's LSTM)."""
    code = (
        "import sys; from pathlib import Path; from tests.runtime import test_third_party_red as t"
    )
    code += (
        "\nfor name in t.DYNAMO: t._export(t.CASES[name], Path(sys.argv[1]) / name / 'model.onnx')"
    )
    for name in DYNAMO:
        (folder / name).mkdir(exist_ok=True)
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-c", code, str(folder)], cwd=root, check=True, capture_output=True
    )


def _export_case(name: str, path: Path) -> Path:
    """``name``'s file: a dynamo one from the subprocess that writes them all, the first time one
    is asked for; any other exported here."""
    if name in DYNAMO:
        if not path.exists():
            _export_apart(path.parents[1])
        return path
    return _export(CASES[name], path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Callable[[str], Path]:
    """Each case's file, exported once for the module."""
    return exported_once(tmp_path_factory.mktemp("red_exports"), _export_case)


def _frames(case: Case, steps: int, seed: int) -> list[np.ndarray]:
    """One frame per step as a caller passes it (an int32 token id, or ``case.frame``)."""
    return random_frames(steps, seed, case.frame, V if case.tokens else None, np.int32)


def _loop(path: Path, case: Case, frames: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The hand-written onnxruntime loop: one run per step, the new states fed back."""
    args = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()
    shapes = {a.name: a.shape for a in args}
    states = {
        name: np.zeros([d if isinstance(d, int) else 1 for d in shapes[name]], np.float32)
        for name in case.pairs
    }
    steps = [{args[0].name: np.asarray(f).reshape(case.step), **case.extra} for f in frames]
    outs = ort_loop(path, steps, states, case.pairs)
    return [{n: v for n, v in out.items() if n not in case.pairs.values()} for out in outs]


@pytest.mark.parametrize("name", sorted(CASES))
def test_loads_without_help_and_streams_like_an_onnxruntime_loop(name, exported, cli, tmp_path):
    case, path = CASES[name], exported(name)
    model = rnnstream.load(path)
    assert {s.input: s.output for s in model.signature.states} == case.pairs
    names = [o.name for o in model.signature.outputs]
    frames = _frames(case, 7, seed=1)
    want = _loop(path, case, frames)

    assert_step_and_feed_match(model, frames, want)

    pool = model.pool()
    rows = [frames[:4], _frames(case, 4, seed=2)]
    ids = [pool.open(), pool.open()]
    ticks = [pool.step(dict(zip(ids, step))) for step in zip(*rows)]
    for stream_id, row in zip(ids, rows):
        assert_steps_match(
            [outputs_by_name(t[stream_id], names) for t in ticks], _loop(path, case, row)
        )

    text = cli("-q", "info", str(path)).output
    assert f"stream input {model.signature.input.name}: {case.axes}\n" in text

    np.save(tmp_path / "frames.npy", np.stack(frames))
    lines = cli("-q", "stream", str(path), str(tmp_path / "frames.npy")).output.splitlines()
    printed = [json.loads(line) for line in lines if line.strip()]
    assert [line.pop("t") for line in printed] == list(range(len(frames)))
    for line, step in zip(printed, want):
        got = np.concatenate([np.ravel(v) for v in line.values()])
        assert_close(got, np.concatenate([step[n].ravel() for n in names]), KERNELS)


def test_a_classifier_of_the_last_frame_runs_a_chunk_step_by_step(exported):
    """``y[:, -1]``: one run over a chunk would give only its last frame's logits, so ``feed``
    runs one step a run and returns every frame's logits."""
    case, path = CASES["kws_last_frame"], exported("kws_last_frame")
    model = rnnstream.load(path)
    assert model.signature.input.shape == ("batch", 1, F)
    frames = _frames(case, 5, seed=3)
    got = model.stream().feed(np.stack(frames))
    assert got.shape == (5, 3)
    assert_close(got, np.concatenate([w["logits"] for w in _loop(path, case, frames)]), KERNELS)


def test_a_time_axis_baked_into_a_reshape_is_a_fixed_window(exported):
    """The dynamo file runs at 3 and 6 steps but not 4 (its Reshape wants multiples of 3, and a
    run of 6 returns 3 rows of garbage): a step is exactly 3, anything else is refused by name
    and leaves the state as it was."""
    case, path = CASES["dynamo_time_baked_at_3"], exported("dynamo_time_baked_at_3")
    stream = rnnstream.load(path).stream()
    stream.step(_frames(case, 1, seed=4)[0])
    before = stream.state
    for steps in (1, 4, 6):
        with pytest.raises(InputError, match=re.escape(f"expected shape [3, 6], got [{steps}, 6]")):
            stream.step(np.zeros((steps, F), np.float32))
    for name, value in stream.state.items():
        np.testing.assert_array_equal(value, before[name])


class RelativeLengths(nn.Module):
    """speechbrain's ``(wavs, wav_lens)``: lengths as fractions of the longest row."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(F, H, batch_first=True)

    def forward(self, feats, wav_lens, h):
        y, h = self.rnn(feats, h)
        keep = torch.arange(y.shape[1])[None, :].float() < wav_lens[:, None] * y.shape[1]
        return y * keep[..., None].float(), h


class Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(F, H, batch_first=True)

    def forward(self, x, mask, h):
        return self.rnn(x * mask[..., None], h)


@pytest.mark.parametrize(
    ("module", "second", "second_axes"),
    [(RelativeLengths, "wav_lens", {0: "batch"}), (Masked, "mask", BT)],
)
def test_a_second_input_it_cannot_fill_is_named_and_streams_once_pinned(
    module, second, second_axes, tmp_path
):
    path = tmp_path / "model.onnx"
    x2 = torch.ones(*(2, 3)[: len(second_axes)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module().eval(), (torch.randn(2, 3, F), x2, _zeros(1, 2, H)), str(path),
            dynamo=False, input_names=["x", second, "h"], output_names=["y", "hn"],
            dynamic_axes={"x": BT, "y": BT, second: second_axes, "h": BATCH_1, "hn": BATCH_1},
        )  # fmt: skip
    with pytest.raises(SignatureError, match=re.escape(f"the inputs left are ['x', '{second}']")):
        rnnstream.load(path)
    model = rnnstream.load(path, constants={second: np.ones([1] * len(second_axes), np.float32)})
    frames = np.random.default_rng(5).uniform(-1, 1, (4, F)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    h, pinned = np.zeros((1, 1, H), np.float32), np.ones([1] * len(second_axes), np.float32)
    stream = model.stream()
    for frame in frames:
        y, h = session.run(None, {"x": frame.reshape(1, 1, F), second: pinned, "h": h})
        assert_close(stream.step(frame), y.reshape(-1), KERNELS)


class StateOnlyEncoder(nn.Module):
    """An encoder returning only its new state (``return h, c``)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(F, H, batch_first=True)

    def forward(self, x, h, c):
        _, (h, c) = self.rnn(x, (h, c))
        return h, c


def test_a_model_returning_only_its_state_steps_and_feeds(tmp_path, cli):
    """Nothing follows the time axis but the states carry across runs: it is time (was taken
    for a window of any length, so ``step(frame)`` was refused)."""
    path = tmp_path / "encoder.onnx"
    torch.manual_seed(0)
    dims = {"x": {0: "B", 1: "T"}} | {n: {1: "B"} for n in ("h", "c", "hn", "cn")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            StateOnlyEncoder().eval(), (torch.randn(2, 3, F), _zeros(1, 2, H), _zeros(1, 2, H)),
            str(path), dynamo=False, input_names=["x", "h", "c"], output_names=["hn", "cn"],
            dynamic_axes=dims,
        )  # fmt: skip
    assert (
        "stream input x: batch axis 0 (probe), time axis 1 (probe)\n"
        in cli("-q", "info", str(path)).output
    )
    frames = np.random.default_rng(6).uniform(-1, 1, (5, F)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    h = c = np.zeros((1, 1, H), np.float32)
    for frame in frames:
        h, c = session.run(None, {"x": frame.reshape(1, 1, F), "h": h, "c": c})
    stepped, fed = rnnstream.load(path).stream(), rnnstream.load(path).stream()
    for frame in frames:
        stepped.step(frame)
    fed.feed(frames[:2])
    fed.feed(frames[2:])
    for stream in (stepped, fed):
        assert_close(stream.state["h"], h, KERNELS)
        assert_close(stream.state["c"], c, KERNELS)


class OffsetCounter(nn.Module):
    """A GRU plus positions from an int64 ``offset [1]`` state that counts the frames seen."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.position = nn.GRU(F, H, batch_first=True), nn.Linear(1, H)

    def forward(self, x, h, offset):
        y, h = self.rnn(x, h)
        steps = (offset + torch.arange(x.shape[1])).float()[None, :, None] * 0.01
        return y + self.position(steps), h, offset + x.shape[1]


def test_a_frame_counter_state_streams_and_a_pool_is_refused_naming_it(tmp_path):
    """``offset [1]`` is shared by every row of a run, so rows at different offsets cannot
    share one: the pool is refused naming it; a stream carries it like any state."""
    path = tmp_path / "counter.onnx"
    torch.manual_seed(0)
    example = (torch.randn(2, 3, F), _zeros(1, 2, H), torch.zeros(1, dtype=torch.int64))
    dims = {"x": {0: "B", 1: "T"}, "y": {0: "B", 1: "T"}, "h": {1: "B"}, "hn": {1: "B"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            OffsetCounter().eval(), example, str(path), dynamo=False,
            input_names=["x", "h", "offset"], output_names=["y", "hn", "next_offset"],
            dynamic_axes=dims,
        )  # fmt: skip
    model = rnnstream.load(path)
    assert {s.input: s.output for s in model.signature.states} == {
        "h": "hn",
        "offset": "next_offset",
    }
    with pytest.raises(SignatureError, match=re.escape("state 'offset' [1] at axis 0")):
        model.pool()
    frames = np.random.default_rng(7).uniform(-1, 1, (5, F)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    h, offset, want = np.zeros((1, 1, H), np.float32), np.zeros(1, np.int64), []
    for frame in frames:
        y, h, offset = session.run(None, {"x": frame.reshape(1, 1, F), "h": h, "offset": offset})
        want.append(y.reshape(-1))
    stepped = model.stream()
    assert_close(np.stack([np.ravel(stepped.step(f)) for f in frames]), np.stack(want), KERNELS)
    fed = model.stream()
    chunks = [fed.feed(frames[:2]), fed.feed(frames[2:])]
    assert_close(np.concatenate(chunks), np.stack(want), KERNELS)
    assert fed.state["offset"].tolist() == stepped.state["offset"].tolist() == [5]
