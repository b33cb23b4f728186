"""Files whose models take frame counts (sherpa-onnx's ``x_lens``) load without help and stream.

Each file is exported at test time with ``torch.onnx.export`` from a tiny model written as the
project writes it: icefall's LSTM transducer encoder (``x, x_lens, h, c -> encoder_out,
encoder_out_lens, next_h, next_c``, its output masked past each row's length), a time-major GRU
with int32 ``seq_lens``, a sherpa zipformer-style encoder whose int64 ``processed_lens`` is a
*state* (not a count to fill), NeMo's cache-aware encoder (channels-first ``audio_signal``,
``length``, ``cache_last_channel_len -> cache_last_channel_next_len``), a scalar ``seq_len``
with the batch fixed at 1, and a window model whose ``lengths`` count the samples of a window of
any size. The runtime fills each count (1 per step, T per chunk, the window's size) and returns
the output counts like any output; every result equals a hand-written onnxruntime loop that
feeds the counts itself.
"""

from __future__ import annotations

import json
import re
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
from rnnstream.runtime import METADATA_KEY
from tests.tolerances import KERNELS, assert_close

F, H, J = 6, 5, 4


def _mask(y: torch.Tensor, lens: torch.Tensor, axis: int) -> torch.Tensor:
    """``y`` zeroed past each row's length along ``axis`` (rows on axis 0, or 1 if axis is 0)."""
    steps = torch.arange(y.shape[axis])
    keep = steps[None, :] < lens[:, None] if axis else steps[:, None] < lens[None, :]
    shape = [y.shape[0], y.shape[1]] + [1] * (y.dim() - 2)
    return y * keep.reshape(shape).to(y.dtype)


class LstmTransducerEncoder(nn.Module):
    """icefall lstm_transducer_stateless2's encoder as its export-onnx.py traces it."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.out = nn.LSTM(F, H, 2, batch_first=True), nn.Linear(H, J)

    def forward(self, x, x_lens, h, c):
        y, (h, c) = self.rnn(x, (h, c))
        return _mask(self.out(y), x_lens, 1), x_lens, h, c


class TimeMajorInt32(nn.Module):
    """``x [T, B, F]`` with int32 ``seq_lens [B]``; ``hidden_in -> hidden_out``."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(F, H)

    def forward(self, x, seq_lens, hidden_in):
        y, hidden = self.rnn(x, hidden_in)
        return _mask(y, seq_lens, 0), hidden


class ZipformerLike(nn.Module):
    """A sherpa streaming encoder: ``processed_lens`` is a state counting frames seen so far."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.out = nn.GRU(F, H, batch_first=True), nn.Linear(H, J)

    def forward(self, x, x_lens, cached_h, processed_lens):
        y, h = self.rnn(x, cached_h)
        return _mask(self.out(y), x_lens, 1), x_lens, h, processed_lens + x_lens


class NemoLike(nn.Module):
    """NeMo's cache-aware streaming encoder interface: channels-first ``audio_signal [B, F, T]``,
    ``length``, a batch-first cache and its length."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(F, H, batch_first=True)

    def forward(self, audio_signal, length, cache_last_channel, cache_last_channel_len):
        y, h = self.rnn(audio_signal.transpose(1, 2), cache_last_channel.transpose(0, 1))
        outputs = _mask(y, length, 1).transpose(1, 2)
        return outputs, length, h.transpose(0, 1), cache_last_channel_len + length


class ScalarLength(nn.Module):
    """One sequence ``[1, T, F]`` and a 0-d ``seq_len``."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(F, H, batch_first=True)

    def forward(self, x, seq_len, h0):
        y, h = self.rnn(x, h0)
        return _mask(y, seq_len.reshape(1), 1), h


class WindowLengths(nn.Module):
    """Audio windows ``[B, S]`` of any size with ``lengths [B]`` (samples): a step per window."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.GRU(2, H, batch_first=True), nn.Linear(H, 1)

    def forward(self, audio, lengths, state):
        n = lengths.to(audio.dtype)[:, None]
        feats = torch.cat([audio.sum(1, keepdim=True) / n, (audio**2).sum(1, keepdim=True) / n], 1)
        y, state = self.rnn(feats[:, None], state)
        return torch.sigmoid(self.head(y[:, 0])), state


@dataclass(frozen=True)
class Case:
    """A model, how its project exports it, and what loading must decide."""

    module: Callable[[], nn.Module]
    example: tuple  # shapes and dtypes of the traced example, in argument order
    names: tuple[list[str], list[str]]
    dynamic: dict
    layout: str  # the stream input's axes: B batch, T time, F features, S samples
    lengths: tuple[str, str, bool, int]  # name, dtype, one per row?, the axis counted
    pairs: dict[str, str]
    batch: bool = True  # whether a pool can batch it
    dims: dict = field(default_factory=dict)


def _args(example: tuple) -> tuple:
    return tuple(
        torch.zeros(shape, dtype=dtype) + (1 if dtype != torch.float32 else 0)
        for shape, dtype in example
    )


CASES = {
    "icefall_lstm_x_lens": Case(
        LstmTransducerEncoder,
        (
            ((1, 3, F), torch.float32),
            ((1,), torch.int64),
            ((2, 1, H), torch.float32),
            ((2, 1, H), torch.float32),
        ),
        (["x", "x_lens", "h", "c"], ["encoder_out", "encoder_out_lens", "next_h", "next_c"]),
        {
            "x": {0: "N", 1: "T"},
            "x_lens": {0: "N"},
            "h": {1: "N"},
            "c": {1: "N"},
            "encoder_out": {0: "N", 1: "T"},
            "encoder_out_lens": {0: "N"},
            "next_h": {1: "N"},
            "next_c": {1: "N"},
        },
        "BTF",
        ("x_lens", "int64", True, 1),
        {"h": "next_h", "c": "next_c"},
    ),
    "time_major_int32_seq_lens": Case(
        TimeMajorInt32,
        (((3, 1, F), torch.float32), ((1,), torch.int32), ((1, 1, H), torch.float32)),
        (["x", "seq_lens", "hidden_in"], ["y", "hidden_out"]),
        {"x": {0: "time", 1: "batch"}, "seq_lens": {0: "batch"}, "hidden_in": {1: "batch"}},
        "TBF",
        ("seq_lens", "int32", True, 0),
        {"hidden_in": "hidden_out"},
    ),
    "zipformer_processed_lens_state": Case(
        ZipformerLike,
        (
            ((1, 3, F), torch.float32),
            ((1,), torch.int64),
            ((1, 1, H), torch.float32),
            ((1,), torch.int64),
        ),
        (
            ["x", "x_lens", "cached_h", "processed_lens"],
            ["encoder_out", "encoder_out_lens", "new_cached_h", "new_processed_lens"],
        ),
        {
            "x": {0: "N", 1: "T"},
            "x_lens": {0: "N"},
            "cached_h": {1: "N"},
            "processed_lens": {0: "N"},
            "encoder_out": {0: "N", 1: "T"},
        },
        "BTF",
        ("x_lens", "int64", True, 1),
        {"cached_h": "new_cached_h", "processed_lens": "new_processed_lens"},
    ),
    "nemo_cache_aware": Case(
        NemoLike,
        (
            ((1, F, 3), torch.float32),
            ((1,), torch.int64),
            ((1, 1, H), torch.float32),
            ((1,), torch.int64),
        ),
        (
            ["audio_signal", "length", "cache_last_channel", "cache_last_channel_len"],
            [
                "outputs",
                "encoded_lengths",
                "cache_last_channel_next",
                "cache_last_channel_next_len",
            ],
        ),
        {
            "audio_signal": {0: "B", 2: "T"},
            "length": {0: "B"},
            "cache_last_channel": {0: "B"},
            "cache_last_channel_len": {0: "B"},
            "outputs": {0: "B", 2: "T"},
            "encoded_lengths": {0: "B"},
            "cache_last_channel_next": {0: "B"},
            "cache_last_channel_next_len": {0: "B"},
        },
        "BFT",
        ("length", "int64", True, 2),
        {
            "cache_last_channel": "cache_last_channel_next",
            "cache_last_channel_len": "cache_last_channel_next_len",
        },
    ),
    "scalar_seq_len_batch_of_one": Case(
        ScalarLength,
        (((1, 3, F), torch.float32), ((), torch.int64), ((1, 1, H), torch.float32)),
        (["x", "seq_len", "h0"], ["y", "hn"]),
        {"x": {1: "T"}, "y": {1: "T"}},
        "BTF",
        ("seq_len", "int64", False, 1),
        {"h0": "hn"},
        batch=False,
    ),
}


def _export(module: Callable[[], nn.Module], example: tuple, names, dynamic, path: Path) -> Path:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module().eval(),
            _args(example),
            str(path),
            input_names=names[0],
            output_names=names[1],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Callable[[str], Path]:
    folder, paths = tmp_path_factory.mktemp("lengths"), {}

    def get(name: str) -> Path:
        if name not in paths:
            case = CASES[name]
            paths[name] = _export(
                case.module, case.example, case.names, case.dynamic, folder / f"{name}.onnx"
            )
        return paths[name]

    return get


def _model_chunk(case: Case, chunk: np.ndarray) -> np.ndarray:
    """``[T, F]`` frames of one sequence in the model's layout (batch of 1)."""
    order = {"B": None, "T": 0, "F": 1}
    x = chunk.transpose([order[a] for a in case.layout if a != "B"])
    return np.expand_dims(x, case.layout.index("B"))


class OrtLoop:
    """The hand-written onnxruntime loop: it feeds the counts and carries the states itself."""

    def __init__(self, path: Path, pairs: dict[str, str], rows: int = 1) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]
        types = {"tensor(float)": np.float32, "tensor(int64)": np.int64}
        self.states = {
            a.name: np.zeros([d if isinstance(d, int) else rows for d in a.shape], types[a.type])
            for a in self.session.get_inputs()
            if a.name in pairs
        }
        self.pairs = pairs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(zip(self.names, self.session.run(None, {**feeds, **self.states})))
        self.states = {i: out[o] for i, o in self.pairs.items()}
        return {n: v for n, v in out.items() if n not in self.pairs.values()}


def _counts(case: Case, count: int, rows: int = 1) -> dict[str, np.ndarray]:
    name, dtype, per_row, _ = case.lengths
    return {name: np.full((rows,) if per_row else (), count, dtype)}


def _to_caller(case: Case, y: np.ndarray) -> np.ndarray:
    """A model output ``[..]`` in the input's layout as ``[B, T, ...]`` (counts: ``[B]``)."""
    return y.transpose([case.layout.index(a) for a in "BTF"]) if y.ndim == 3 else y


def _caller(case: Case, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A model output of one sequence as a stream returns it: ``[T, ...]`` (rows dropped)."""
    return {name: _to_caller(case, y)[0] if y.ndim else y for name, y in out.items()}


def _by_name(model: rnnstream.Model, output: object) -> dict[str, np.ndarray]:
    """A stream's output by output name (a model with one output returns an array)."""
    if isinstance(output, dict):
        return output
    return {model.signature.outputs[0].name: np.asarray(output)}


def _frames(steps: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (steps, F)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(CASES))
def test_counts_are_filled_per_call_and_stream_like_an_onnxruntime_loop(name, exported, cli):
    case, path = CASES[name], exported(name)
    model = rnnstream.load(path)
    sig = model.signature
    lname, dtype, per_row, counts = case.lengths
    assert [(s.name, s.dtype, len(s.shape), s.counts) for s in sig.lengths] == [
        (lname, dtype, int(per_row), counts)
    ]
    assert {s.input: s.output for s in sig.states} == case.pairs
    frames = _frames(7, seed=11)

    loop = OrtLoop(path, case.pairs)
    want = [
        _caller(case, loop.run({sig.input.name: _model_chunk(case, f[None]), **_counts(case, 1)}))
        for f in frames
    ]
    stream = model.stream()
    for f, w in zip(frames, want):
        got = _by_name(model, stream.step(f))
        for key, value in w.items():
            assert_close(np.asarray(got[key]).reshape(-1), value.reshape(-1), KERNELS)

    # chunks: the count is the chunk's length, so nothing past the first step is masked away
    loop, stream = OrtLoop(path, case.pairs), model.stream()
    for part in (frames[:3], frames[3:]):
        w = _caller(
            case, loop.run({sig.input.name: _model_chunk(case, part), **_counts(case, len(part))})
        )
        got = _by_name(model, stream.feed(part))
        for key, value in w.items():
            assert_close(np.asarray(got[key]), value, KERNELS)
    assert np.abs(np.asarray(got[sig.outputs[0].name])[-1]).max() > 0

    text = cli("-q", "info", str(path)).output
    assert re.search(rf"  lengths {lname}: {dtype} .*the size of axis {counts} of ", text), text


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c.batch))
def test_a_pool_and_whole_runs_fill_one_count_per_row(name, exported):
    case, path = CASES[name], exported(name)
    model = rnnstream.load(path)
    rows = [_frames(4, seed=2), _frames(4, seed=3)]
    solo = []
    for frames in rows:
        stream = model.stream()
        solo.append([_by_name(model, stream.step(f)) for f in frames])
    pool = model.pool()
    ids = [pool.open(), pool.open()]
    ticks = [pool.step(dict(zip(ids, step))) for step in zip(*rows)]
    for stream_id, alone in zip(ids, solo):
        for tick, want in zip(ticks, alone):
            for key in want:
                got = _by_name(model, tick[stream_id])[key]
                assert_close(np.asarray(got), np.asarray(want[key]), KERNELS)

    whole = _by_name(model, model.run(np.stack(rows)))  # [2, 4, F]: both rows counted 4
    loop = OrtLoop(path, case.pairs, rows=2)
    x = np.concatenate([_model_chunk(case, r) for r in rows], axis=case.layout.index("B"))
    want = loop.run({model.signature.input.name: x, **_counts(case, 4, rows=2)})
    assert whole.keys() >= want.keys()
    for name, value in want.items():
        assert_close(np.asarray(whole[name]), _to_caller(case, value), KERNELS)


@pytest.fixture(scope="module")
def window_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("window_lengths")
    return _export(
        WindowLengths,
        (((1, 512), torch.float32), ((1,), torch.int64), ((1, 1, H), torch.float32)),
        (["audio", "lengths", "state"], ["speech_prob", "stateN"]),
        {"audio": {0: "batch", 1: "samples"}, "lengths": {0: "batch"}, "state": {1: "batch"}},
        folder / "window.onnx",
    )


def test_a_window_of_any_size_is_counted_per_step(window_model):
    model = rnnstream.load(window_model)
    assert model.signature.input.time_axis is None
    assert [(s.name, s.counts) for s in model.signature.lengths] == [("lengths", 1)]
    rng = np.random.default_rng(5)
    windows = [rng.uniform(-1, 1, n).astype(np.float32) for n in (512, 300, 512, 77)]
    loop = OrtLoop(window_model, {"state": "stateN"})
    stream = model.stream()
    for w in windows:
        want = loop.run({"audio": w[None], "lengths": np.array([len(w)])})["speech_prob"]
        assert_close(stream.step(w), want[0], KERNELS)


def test_a_pool_refuses_windows_of_different_sizes_in_one_tick(window_model):
    pool = rnnstream.load(window_model).pool()
    a, b = pool.open(), pool.open()
    before = [pool.state(a), pool.state(b)]
    rng = np.random.default_rng(6)
    frames = {a: rng.uniform(-1, 1, 512).astype(np.float32), b: np.zeros(400, np.float32)}
    with pytest.raises(
        InputError, match=rf"'audio'.*streams \[{a}, {b}\].*{a}: \[512\], {b}: \[400\]"
    ):
        pool.step(frames)
    for stream_id, state in zip((a, b), before):
        assert_close(pool.state(stream_id)["state"], state["state"])
    assert pool.step({a: frames[a], b: frames[a]})  # same sizes run


def test_pinning_a_count_is_refused_naming_it(exported):
    path = exported("icefall_lstm_x_lens")
    with pytest.raises(SignatureError, match=r"input 'x_lens' \(int64 \['N'\]\).*fills it"):
        rnnstream.load(path, constants={"x_lens": 1})


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"x": np.zeros(F, np.float32), "x_lens": 1}, r"got a dict with keys \['x', 'x_lens'\]"),
        ((np.zeros(F, np.float32), np.int64(1)), "not a rectangular array"),
        (np.zeros(F, bool), "expected float32, got bool"),
        (np.zeros(F, np.complex64), "expected float32, got complex64"),
        (np.zeros(F + 1, np.float32), r"expected shape \[6\], got \[7\]"),
        (np.full(F, 1e39), "values beyond float32's range"),
    ],
    ids=["dict_with_lengths", "tuple_with_lengths", "bool", "complex", "size", "range"],
)
def test_bad_frames_are_refused_naming_the_input_and_change_no_state(bad, message, exported):
    stream = rnnstream.load(exported("icefall_lstm_x_lens")).stream()
    stream.step(_frames(1, seed=4)[0])
    before = stream.state
    with pytest.raises(InputError, match=r"input 'x'.*" + message):
        stream.step(bad)
    for key, value in before.items():
        assert_close(stream.state[key], value)


def test_counts_that_disagree_with_the_probed_axes_are_refused(tmp_path):
    """``x_lens`` named after axis 1 of a batch-first ``[N, T, F]``: its rows cannot be T."""
    path = _export(
        LstmTransducerEncoder,
        CASES["icefall_lstm_x_lens"].example,
        CASES["icefall_lstm_x_lens"].names,
        {**CASES["icefall_lstm_x_lens"].dynamic, "x_lens": {0: "T"}},
        tmp_path / "wrong_rows.onnx",
    )
    with pytest.raises(SignatureError, match=r"lengths input 'x_lens' \['T'\].*--axes"):
        rnnstream.load(path)


def test_triton_serves_counts_from_the_python_backend_only(exported, tmp_path):
    """The python backend steps a pool, which fills the counts; Triton's ONNX Runtime backend
    would need every client to send them, so that model is refused naming the counts."""
    from rnnstream.serve import write_triton_repository

    path = exported("icefall_lstm_x_lens")
    with pytest.raises(SignatureError, match=r"would need each client to send 'x_lens'.*--no-ort"):
        write_triton_repository(path, tmp_path / "repo", name="enc", ort=True)
    written = write_triton_repository(path, tmp_path / "repo2", name="enc", ort=False)
    assert (written.python / "config.pbtxt").is_file() and written.ort is None


COUNT_NAMES = ["lengths", "seq_lens", "input_lengths", "speech_lengths", "length", "ilens"]


@pytest.mark.parametrize("count", COUNT_NAMES)
def test_counts_are_found_by_the_names_projects_give_them(count, tmp_path):
    """ESPnet's ``ilens``/``speech_lengths``, NeMo's ``length``, fairseq-style
    ``input_lengths``: the icefall encoder re-exported under each name."""
    case = CASES["icefall_lstm_x_lens"]
    inputs = ["x", count, "h", "c"]
    dynamic = {(count if k == "x_lens" else k): v for k, v in case.dynamic.items()}
    path = _export(case.module, case.example, (inputs, case.names[1]), dynamic, tmp_path / "m.onnx")
    model = rnnstream.load(path)
    assert [(s.name, s.counts) for s in model.signature.lengths] == [(count, 1)]
    frames = _frames(4, seed=7)
    loop = OrtLoop(path, case.pairs)
    want = loop.run({"x": frames[None], count: np.array([4])})
    assert_close(model.stream().feed(frames)["encoder_out"], want["encoder_out"][0], KERNELS)


def test_a_count_exported_for_a_batch_of_one_counts_time(tmp_path):
    """``x_lens`` fixed at ``[1]`` beside ``x`` ``[1, T, F]`` (only T dynamic): its one row is
    the batch of one, and it counts T."""
    case = CASES["icefall_lstm_x_lens"]
    dynamic = {"x": {1: "T"}, "encoder_out": {1: "T"}}
    path = _export(case.module, case.example, case.names, dynamic, tmp_path / "one.onnx")
    model = rnnstream.load(path)
    assert [(s.name, s.shape, s.counts) for s in model.signature.lengths] == [("x_lens", (1,), 1)]
    frames = _frames(5, seed=8)
    want = OrtLoop(path, case.pairs).run({"x": frames[None], "x_lens": np.array([5])})
    assert_close(model.stream().feed(frames)["encoder_out"], want["encoder_out"][0], KERNELS)


def test_the_command_line_streams_a_file_with_counts(exported, tmp_path, cli):
    path = exported("icefall_lstm_x_lens")
    frames = _frames(5, seed=9)
    np.save(tmp_path / "frames.npy", frames)
    lines = [
        json.loads(line)
        for line in cli("-q", "stream", str(path), str(tmp_path / "frames.npy")).output.splitlines()
        if line.strip()
    ]
    want = rnnstream.load(path).stream().feed(frames)
    assert [line["encoder_out_lens"] for line in lines] == [1] * 5
    assert_close(np.array([line["encoder_out"] for line in lines]), want["encoder_out"], KERNELS)


class SubsamplingEncoder(nn.Module):
    """An icefall-style encoder whose front end subsamples time (a Conv1d of kernel 3, stride
    2: T' = (T - 3) // 2 + 1 frames out, and ``encoder_out_lens`` so computed): it refuses runs
    of fewer than 3 frames."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(F, F, 3, stride=2)
        self.rnn = nn.LSTM(F, H, batch_first=True)

    def forward(self, x, x_lens, h, c):
        y, (h, c) = self.rnn(self.conv(x.transpose(1, 2)).transpose(1, 2), (h, c))
        return y, (x_lens - 3) // 2 + 1, h, c


def test_an_encoder_that_subsamples_time_takes_chunks_of_its_least_size(tmp_path, cli):
    case = CASES["icefall_lstm_x_lens"]
    example = (((1, 9, F), torch.float32), ((1,), torch.int64)) + (((1, 1, H), torch.float32),) * 2
    dynamic = {**case.dynamic, "encoder_out": {0: "N", 1: "T'"}}
    dynamic |= {n: {1: "N"} for n in ("h", "c", "next_h", "next_c")}
    path = _export(SubsamplingEncoder, example, case.names, dynamic, tmp_path / "sub.onnx")
    model = rnnstream.load(path)
    assert model.signature.source["axes"]["time"] == {"axis": 1, "by": "name", "least": 3}
    assert model.signature.least_steps == 3
    assert "time axis 1 (name, at least 3 a run)" in cli("-q", "info", str(path)).output

    stream = model.stream()
    with pytest.raises(InputError, match=r"input 'x': the model runs on at least 3 time steps"):
        stream.step(np.zeros(F, np.float32))
    with pytest.raises(InputError, match=r"at least 3 time steps at once .*got 2; feed\(\) chunks"):
        stream.feed(np.zeros((2, F), np.float32))
    with pytest.raises(SignatureError, match=r"at least 3 time steps at once .*a pool steps one"):
        model.pool()

    loop = OrtLoop(path, {"h": "next_h", "c": "next_c"})
    for seed, steps in ((1, 9), (2, 7)):
        chunk = _frames(steps, seed)
        got = stream.feed(chunk)
        want = loop.run({"x": chunk[None], "x_lens": np.array([steps])})
        assert got["encoder_out_lens"] == (steps - 3) // 2 + 1
        assert_close(got["encoder_out"], want["encoder_out"][0], KERNELS)


def _with_signature(path: Path, signature: dict, out: Path) -> Path:
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(signature)})
    onnx.save(model, str(out))
    return out


def test_counts_kept_in_the_files_signature_are_read_and_checked(exported, tmp_path):
    """The discovered signature written into the file as rnnstream metadata loads as is (no
    probe) and streams; a malformed or contradicting ``lengths`` field is refused naming it."""
    path = exported("icefall_lstm_x_lens")
    signature = json.loads(rnnstream.load(path).signature.to_json())
    assert signature["lengths"] == [
        {"name": "x_lens", "dtype": "int64", "shape": ["N"], "counts": 1}
    ]
    kept = rnnstream.load(_with_signature(path, signature, tmp_path / "kept.onnx"))
    assert kept.signature.lengths == rnnstream.load(path).signature.lengths
    frames = _frames(4, seed=12)
    want = OrtLoop(path, {"h": "next_h", "c": "next_c"}).run(
        {"x": frames[None], "x_lens": np.array([4])}
    )
    assert_close(kept.stream().feed(frames)["encoder_out"], want["encoder_out"][0], KERNELS)

    bad = {
        "lengths[0].dtype: expected int32 or int64, got 'float32'": {"dtype": "float32"},
        "lengths[0].counts: 3 is not an axis of input 'x'": {"counts": 3},
        "lengths[0].shape: expected [] or [rows], got ['N', 2]": {"shape": ["N", 2]},
        "lengths[0].name: 'lens' is not an input of the graph": {"name": "lens"},
        "lengths[0].dtype: 'x_lens' is int64 in the graph, the signature says int32": {
            "dtype": "int32"
        },
    }
    for i, (message, change) in enumerate(bad.items()):
        broken = {**signature, "lengths": [{**signature["lengths"][0], **change}]}
        with pytest.raises(SignatureError, match=re.escape(message)):
            rnnstream.load(_with_signature(path, broken, tmp_path / f"bad{i}.onnx"))
    without = {k: v for k, v in signature.items() if k != "lengths"}
    with pytest.raises(SignatureError, match=r"the graph also takes \['x_lens'\]"):
        rnnstream.load(_with_signature(path, without, tmp_path / "forgotten.onnx"))
