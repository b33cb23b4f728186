"""Stateful ONNX files as other exporters write them load without help and stream.

Each graph of :mod:`tests.runtime.third_party` and :mod:`tests.runtime.third_party_audio` is
loaded with no state map and no axes (only a setting no default can stand for is given), streamed
by ``step`` and by ``feed`` (one run per chunk, or one per window for models without a time axis)
and compared with the hand-written onnxruntime loop; ``rnnstream info`` shows each decided axis
and how. Bad input to their streams is one line naming the tensor, and leaves the state as it
was.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import rnnstream
from rnnstream.errors import InputError
from tests.runtime import third_party as tp
from tests.runtime import third_party_audio as audio
from tests.tolerances import KERNELS, assert_close


@dataclass(frozen=True)
class Case:
    """A third-party graph and what loading it must decide."""

    build: Callable[[Path], Path]
    frame: tuple[int, ...] | None  # one step's frame for the caller (None: a token id)
    feeds: Callable[[np.ndarray], dict]  # that frame as the model's one-step feeds
    states: dict[str, tuple[int, ...]]  # zero state for one sequence
    pairs: dict[str, str]
    output: str
    axes: str  # what info shows for the stream input
    constants: dict = field(default_factory=dict)
    guessed: dict = field(default_factory=dict)
    paired: dict = field(default_factory=dict)  # states paired by evidence, and which


def _one(name: str) -> Callable[[np.ndarray], dict]:
    """One frame as ``[1, 1, ...]`` (batch and time of 1) under input ``name``."""
    return lambda f: {name: f[None, None]}


SR16K = {"sr": np.array(16000)}
CASES = {
    "silero_v5": Case(
        audio.silero_v5,
        (512,),
        lambda f: {"input": f[None], **SR16K},
        {"state": (2, 1, audio.SILERO_H)},
        {"state": "stateN"},
        "output",
        "batch axis 0 (probe), time axis none (probe), frame axis 1 (probe, fixed 512)",
        guessed={"constants": {"sr": 16000}},
    ),
    "silero_v5_batch_1": Case(
        lambda path: audio.silero_v5(path, batch=1),
        (512,),
        lambda f: {"input": f[None], **SR16K},
        {"state": (2, 1, audio.SILERO_H)},
        {"state": "stateN"},
        "output",
        "batch axis 0 (name), time axis none (probe), frame axis 1 (probe, fixed 512)",
        guessed={"constants": {"sr": 16000}},
    ),
    "silero_v4": Case(
        audio.silero_v4,
        (512,),
        lambda f: {"input": f[None], "sr": np.array([16000])},
        {"h": (2, 1, 64), "c": (2, 1, 64)},
        {"h": "hn", "c": "cn"},
        "output",
        "batch axis 0 (probe), time axis none (probe), frame axis 1 (probe, fixed 512)",
        guessed={"constants": {"sr": [16000]}},
    ),
    "kws_windows": Case(
        audio.kws_windows,
        (576,),
        lambda f: {"input": f[None]},
        {"h": (1, 1, 128), "c": (1, 1, 128)},
        {"h": "hn", "c": "cn"},
        "prob",
        "batch axis none (probe), time axis 0 (probe)",
    ),
    "kws_mel": Case(
        audio.kws_mel,
        (49, 40),
        lambda f: {"features": f[None]},
        {"h0": (1, 1, audio.KWS_H)},
        {"h0": "hn"},
        "logits",
        "batch axis 0 (probe), time axis none (probe), frame axis 1 (probe, fixed 49)",
    ),
    "keras_tf2onnx": Case(
        tp.keras_lstm,
        (tp.F,),
        _one("input_1:0"),
        {"state_h:0": (1, tp.H), "state_c:0": (1, tp.H)},
        {"state_h:0": "Identity_1:0", "state_c:0": "Identity_2:0"},
        "Identity:0",
        "batch axis 0 (probe), time axis 1 (probe)",
        paired={"state_h:0": "probe", "state_c:0": "probe"},  # h and c alike: carried
    ),
    "torch_h0_c0": Case(
        tp.torch_lstm,
        (tp.F,),
        _one("input"),
        {"h0": (2, 1, tp.H), "c0": (2, 1, tp.H)},
        {"h0": "hn", "c0": "cn"},
        "output",
        "batch axis 0 (probe), time axis 1 (probe)",
    ),
    "torch_one_state": Case(
        tp.torch_lstm_state,
        (tp.F,),
        _one("input"),
        {"state": (2, 2, 1, tp.H)},
        {"state": "next_state"},
        "output",
        "batch axis 0 (probe), time axis 1 (probe)",
    ),
    "torch_hidden_in": Case(
        tp.torch_gru,
        (tp.F,),
        _one("x"),
        {"hidden_in": (1, 1, tp.H)},
        {"hidden_in": "hidden_out"},
        "y",
        "batch axis 1 (probe), time axis 0 (probe)",
    ),
    "torch_generated_names": Case(
        tp.torch_unnamed_gru,
        (tp.F,),
        _one("x"),
        {"hidden": (1, 1, tp.H)},
        {"hidden": "getitem_1"},
        "getitem",
        "batch axis 1 (probe), time axis 0 (probe)",
        paired={"hidden": "probe"},  # getitem is [1, 1, H] too at one step: carrying tells
    ),
    **{
        f"batch_{name}": Case(
            lambda path, name=name: tp.gru_batch_named(path, name),
            (tp.F,),
            _one("x"),
            {"h0": (1, 1, tp.H)},
            {"h0": "hn"},
            "y",
            "batch axis 0 (probe), time axis 1 (probe)",
        )
        for name in ("N", "unk__123", None)
    },
    "token_ids": Case(
        tp.token_gru,
        None,
        lambda t: {"input_ids": np.array([[t]], np.int64)},
        {"past_h": (1, 1, tp.H)},
        {"past_h": "present_h"},
        "logits",
        "batch axis 0 (probe), time axis 1 (probe)",
    ),
    "audio_and_threshold": Case(
        audio.vad_with_threshold,
        (7,),
        lambda f: {"audio": f[None], "threshold": np.array([0.1], np.float32)},
        {"state": (1, tp.H)},
        {"state": "stateN"},
        "speech",
        "batch axis 0 (probe), time axis none (probe), frame axis 1 (probe)",
        constants={"threshold": 0.1},
    ),
}


def _frames(case: Case, steps: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if case.frame is None:
        return [np.int64(t) for t in rng.integers(0, tp.VOCAB, steps)]
    return [rng.uniform(-1, 1, case.frame).astype(np.float32) for _ in range(steps)]


def _loop(path: Path, case: Case, frames: list[np.ndarray]) -> np.ndarray:
    """The hand-written onnxruntime loop's outputs for one sequence, batch and time dropped."""
    zeros = {name: np.zeros(shape, np.float32) for name, shape in case.states.items()}
    steps = [case.feeds(f) for f in frames]
    results = tp.ort_loop(path, steps, zeros, case.pairs)
    return np.stack([r[case.output].reshape(r[case.output].shape[-1]) for r in results])


@pytest.fixture(params=sorted(CASES))
def loaded(request, tmp_path) -> tuple[Case, Path, rnnstream.Model]:
    case = CASES[request.param]
    path = case.build(tmp_path / f"{request.param}.onnx")
    return case, path, rnnstream.load(path, constants=case.constants)


def test_loads_without_help_and_steps_like_an_onnxruntime_loop(loaded):
    case, path, model = loaded
    assert model.signature.source.get("guessed", {}) == case.guessed
    assert model.signature.source.get("paired", {}) == case.paired
    assert {s.input: s.output for s in model.signature.states} == case.pairs
    frames = _frames(case, 6, seed=1)
    stream = model.stream()
    stepped = np.stack([np.asarray(stream.step(f)).reshape(-1) for f in frames])
    assert_close(stepped, _loop(path, case, frames), KERNELS)


def test_feeds_chunks_like_an_onnxruntime_loop(loaded):
    """With a time axis, one run per chunk; without (one window per run), a run per window."""
    case, path, model = loaded
    frames = _frames(case, 7, seed=2)
    stream = model.stream()
    chunks = [stream.feed(np.stack(frames[:3])), stream.feed(np.stack(frames[3:]))]
    fed = np.concatenate([np.asarray(c).reshape(len(c), -1) for c in chunks])
    assert_close(fed, _loop(path, case, frames), KERNELS)


def test_batched_rows_match_their_own_loops(loaded):
    case, path, model = loaded
    if model.signature.input.batch_axis is None:
        with pytest.raises(rnnstream.SignatureError, match="no batch axis"):
            model.stream(batch=2)
        return
    if model.signature.input.shape[model.signature.input.batch_axis] == 1:
        with pytest.raises(rnnstream.SignatureError, match="fixed batch of 1; cannot hold 2"):
            model.stream(batch=2)
        return
    rows = [_frames(case, 4, seed=3), _frames(case, 4, seed=4)]
    stream = model.stream(batch=2)
    out = np.stack([np.asarray(stream.step(np.stack(step))) for step in zip(*rows)], axis=1)
    for row, frames in zip(out, rows):
        assert_close(row.reshape(len(frames), -1), _loop(path, case, frames), KERNELS)


def test_info_shows_the_decided_axes_and_why(loaded, cli):
    case, path, _ = loaded
    consts = [arg for k, v in case.constants.items() for arg in ("--const", f"{k}={v}")]
    text = cli("-q", "info", str(path), *consts).output
    input_name = next(iter(case.feeds(_frames(case, 1, seed=5)[0])))
    assert f"stream input {input_name}: {case.axes}\n" in text
    assert "probe   probed " in text
    if case.frame is None:
        assert f"tokens  ids in [0, {tp.VOCAB}) (probe: larger ids are refused)" in text


def _same_state(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])


@pytest.mark.parametrize(
    "name, bad, message",
    [
        (
            "silero_v5",
            np.zeros(511, np.float32),
            r"input 'input': expected shape \[512\], got \[511\]",
        ),
        ("silero_v5", np.zeros((1, 512), np.float32), r"expected shape \[512\], got \[1, 512\]"),
        ("silero_v5", np.zeros(512, bool), "input 'input': expected float32, got bool"),
        ("silero_v5", np.full(512, np.inf, np.float32), "input 'input': contains NaN or infinity"),
        ("kws_mel", np.zeros((48, 40), np.float32), r"expected shape \[49, 40\], got \[48, 40\]"),
        ("kws_windows", np.zeros(512, np.float32), r"expected shape \[576\], got \[512\]"),
        ("token_ids", 1.5, "input 'input_ids': expected int64, got float64"),
        ("token_ids", -1, rf"token ids must be in \[0, {tp.VOCAB}\), got -1"),
        (
            "token_ids",
            np.int64(tp.VOCAB),
            rf"token ids must be in \[0, {tp.VOCAB}\), got {tp.VOCAB}",
        ),
        ("audio_and_threshold", np.zeros(0, np.float32), r"the frame is empty \(shape \[0\]\)"),
        ("keras_tf2onnx", np.zeros(tp.F + 1, np.float32), rf"expected shape \[{tp.F}\]"),
    ],
)
def test_bad_input_is_one_line_and_leaves_the_state(tmp_path, name, bad, message):
    case = CASES[name]
    path = case.build(tmp_path / f"{name}.onnx")
    stream = rnnstream.load(path, constants=case.constants).stream()
    for frame in _frames(case, 2, seed=6):
        stream.step(frame)
    before = stream.state
    with pytest.raises(InputError, match=message) as error:
        stream.step(bad)
    assert "\n" not in str(error.value)
    _same_state(before, stream.state)


def test_a_fixed_window_refuses_a_wrong_window_in_a_batch_too(tmp_path):
    stream = rnnstream.load(audio.silero_v5(tmp_path / "silero.onnx")).stream(batch=2)
    stream.step(np.zeros((2, 512), np.float32))
    before = stream.state
    with pytest.raises(InputError, match=r"expected shape \[2, 512\], got \[2, 256\]"):
        stream.step(np.zeros((2, 256), np.float32))
    _same_state(before, stream.state)


@pytest.mark.parametrize(
    "value, message",
    [
        (16000.5, "constant 'sr': not a int64 of shape \\[\\]: got 16000.5, which int64 cannot"),
        ("16k", "constant 'sr': not a int64 of shape \\[\\]: got str '16k'"),
        (True, "constant 'sr': not a int64 of shape \\[\\]: got bool True"),
        ([16000, 8000], "constant 'sr': not a int64 of shape \\[\\]"),
        (2**70, "constant 'sr': not a int64"),
    ],
)
def test_a_sample_rate_of_the_wrong_type_is_refused_at_load(tmp_path, value, message):
    with pytest.raises(InputError, match=message):
        rnnstream.load(audio.silero_v5(tmp_path / "silero.onnx"), constants={"sr": value})


def test_a_sample_rate_the_model_has_no_window_for_is_named_at_load(tmp_path):
    # sr=44100 takes the 8 kHz branch (256 samples): the probe finds what the model runs.
    model = rnnstream.load(audio.silero_v5(tmp_path / "silero.onnx"), constants={"sr": 44100})
    assert model.signature.input.shape[1] == 256


def test_a_setting_left_out_is_named_with_the_fix(tmp_path, cli):
    path = audio.vad_with_threshold(tmp_path / "vad.onnx")
    message = (
        "input 'threshold' (float32 [1]): a setting (scalar input) the model needs a value for; "
        "pin it with constants={'threshold': ...} (CLI: --const threshold=...)"
    )
    with pytest.raises(rnnstream.SignatureError) as error:
        rnnstream.load(path)
    assert str(error.value) == f"{path}: {message}"
    result = cli("-q", "info", str(path), ok=False)
    assert result.exit_code == 1 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_wrong_sample_rate_on_the_command_line_is_one_line(tmp_path, cli):
    path = audio.silero_v5(tmp_path / "silero.onnx")
    result = cli("-q", "info", str(path), "--const", "sr=16000.5", ok=False)
    assert result.exit_code == 1 and "constant 'sr': not a int64" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_chunk_of_windows_is_checked_whole_before_any_runs(tmp_path):
    model = rnnstream.load(audio.silero_v5(tmp_path / "silero.onnx"))
    stream = model.stream(batch=2)
    windows = np.random.default_rng(7).uniform(-1, 1, (2, 3, 512)).astype(np.float32)
    stream.feed(windows)
    before = stream.state
    bad = windows.copy()
    bad[1, 2, 5] = np.nan  # the last window of the second row
    with pytest.raises(InputError, match="contains NaN or infinity"):
        stream.feed(bad)
    _same_state(before, stream.state)
    with pytest.raises(InputError, match=r"expected shape \[2, 'time', 512\], got \[3, 512\]"):
        stream.feed(windows[0])
    with pytest.raises(InputError, match=r"the chunk is empty \(0 time steps\)"):
        stream.feed(np.zeros((2, 0, 512), np.float32))
    _same_state(before, stream.state)
    one = model.stream()
    one.feed(windows[1])
    assert_close(stream.feed(windows)[1], one.feed(windows[1]), KERNELS)


def _table_model(path: Path) -> Path:
    """Windows whose loudest sample picks a row of a 4-row table: a sample of 10 passes every
    check and fails in onnxruntime (index out of range)."""
    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT
    nodes = [
        helper.make_node("ReduceMax", ["audio"], ["loudest"], axes=[1], keepdims=0),
        helper.make_node("Cast", ["loudest"], ["row"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "row"], ["picked"]),  # [batch, H]
        helper.make_node("Add", ["state", "picked"], ["stateN"]),
        helper.make_node("ReduceMean", ["stateN"], ["level"], axes=[1], keepdims=1),
    ]
    table = np.arange(4 * tp.H, dtype=np.float32).reshape(4, tp.H)
    return tp.save_graph(
        path,
        nodes,
        [tp.value_info("audio", f32, ["batch", 16]), tp.value_info("state", f32, ["batch", tp.H])],
        [tp.value_info("level", f32, ["batch", 1]), tp.value_info("stateN", f32, ["batch", tp.H])],
        {"table": table},
    )


def test_a_run_failing_mid_chunk_puts_the_state_back(tmp_path):
    """A sample of 10 fails in onnxruntime on the third window of the chunk."""
    stream = rnnstream.load(_table_model(tmp_path / "table.onnx")).stream()
    windows = np.random.default_rng(8).uniform(0, 1, (4, 16)).astype(np.float32)
    stream.feed(windows[:2])
    before = stream.state
    windows[2, 3] = 10.0
    with pytest.raises(InputError, match=r"onnxruntime rejected the run: .*Gather"):
        stream.feed(windows)
    _same_state(before, stream.state)


def test_a_run_onnxruntime_fails_is_one_stderr_line_in_a_real_process(tmp_path):
    """onnxruntime's own log line is not printed on top of the one-line error."""
    path = _table_model(tmp_path / "table.onnx")
    frames = tmp_path / "audio.csv"
    frames.write_text(",".join(["0.5"] * 15 + ["10"]) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "rnnstream.cli", "-q", "stream", str(path), str(frames)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    stderr = proc.stderr.decode()
    assert proc.returncode == 1 and stderr.count("\n") == 1, stderr
    assert "onnxruntime rejected the run: " in stderr and "Gather" in stderr
