"""Stateful ONNX graphs written the way other exporters write them, built by hand with onnx.helper.

Names, shapes and layouts follow real files (no file is downloaded); audio models (Silero VAD,
keyword spotters) are in :mod:`tests.runtime.third_party_audio`.

- ``keras_lstm``: tf2onnx from Keras — ``input_1:0`` ``[unk__12, unk__13, F]`` batch-first,
  ``state_h:0``/``state_c:0`` ``[unk__14, H]``, outputs ``Identity:0`` (sequence),
  ``Identity_1:0``/``Identity_2:0`` (states); nodes named ``lstm/while/...``.
- ``torch_lstm``: ``torch.onnx.export`` of a 2-layer batch-first LSTM — ``input`` ``[batch, seq,
  F]``, ``h0/c0 -> hn/cn`` ``[2, batch, H]``; ``torch_gru``: time-major ``x`` with
  ``hidden_in -> hidden_out``; ``torch_lstm_state``: ``state -> next_state`` as one ``[2, 2,
  batch, H]`` tensor; ``torch_unnamed_gru``: ``x, hidden -> getitem, getitem_1`` (generated output
  names); ``gru_batch_named(name)``: the batch dim_param ``N``, ``unk__123`` or none.
- ``token_gru``: ``input_ids`` int64 ``[batch, sequence]`` through an embedding, ``logits``.

Each returns the path it wrote. ``ort_loop`` is the hand-written onnxruntime loop the tests compare
against: one session run per step, the new states fed back by the pairs the test names. Files
exported from PyTorch at test time are cached per test module by ``exported_once``; their seeded
frames come from ``random_frames``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tests.tolerances import KERNELS, assert_close

f32, i64 = TensorProto.FLOAT, TensorProto.INT64
_rng = np.random.default_rng(31)  # fixed weights (test data comes from per-test seeds)


def _w(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (scale * _rng.standard_normal(shape)).astype(np.float32)


def save_graph(path: Path, nodes, inputs, outputs, weights: dict, opset: int = 17) -> Path:
    graph = helper.make_graph(
        nodes,
        path.stem,
        inputs,
        outputs,
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def value_info(name: str, dtype: int, shape: list | None):
    return helper.make_tensor_value_info(name, dtype, shape)


def ints(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


# tf2onnx (Keras) ----------------------------------------------------------------------------

F, H = 6, 5
_L_W, _L_R = _w(1, 4 * H, F), _w(1, 4 * H, H)


def keras_lstm(path: Path) -> Path:
    """Keras ``LSTM(return_sequences=True, return_state=True)`` with initial states as inputs."""
    nodes = [
        helper.make_node(
            "Transpose", ["input_1:0"], ["lstm/transpose:0"], perm=[1, 0, 2], name="lstm/transpose"
        ),
        helper.make_node("Unsqueeze", ["state_h:0", "zero"], ["lstm/h:0"], name="lstm/h"),
        helper.make_node("Unsqueeze", ["state_c:0", "zero"], ["lstm/c:0"], name="lstm/c"),
        helper.make_node(
            "LSTM",
            ["lstm/transpose:0", "W", "R", "", "", "lstm/h:0", "lstm/c:0"],
            ["lstm/while/y:0", "lstm/while/h:0", "lstm/while/c:0"],
            hidden_size=H,
            name="lstm/while",
        ),
        helper.make_node("Squeeze", ["lstm/while/y:0", "one"], ["lstm/y3:0"]),
        helper.make_node("Transpose", ["lstm/y3:0"], ["Identity:0"], perm=[1, 0, 2]),
        helper.make_node("Squeeze", ["lstm/while/h:0", "zero"], ["Identity_1:0"]),
        helper.make_node("Squeeze", ["lstm/while/c:0", "zero"], ["Identity_2:0"]),
    ]
    return save_graph(
        path,
        nodes,
        [
            value_info("input_1:0", f32, ["unk__12", "unk__13", F]),
            value_info("state_h:0", f32, ["unk__14", H]),
            value_info("state_c:0", f32, ["unk__15", H]),
        ],
        [
            value_info("Identity:0", f32, ["unk__16", "unk__17", H]),
            value_info("Identity_1:0", f32, ["unk__18", H]),
            value_info("Identity_2:0", f32, ["unk__19", H]),
        ],
        {"W": _L_W, "R": _L_R, "zero": ints(0), "one": ints(1)},
        opset=13,
    )


# torch.onnx.export -------------------------------------------------------------------------

_T_W1, _T_R1, _T_W2, _T_R2 = _w(1, 4 * H, F), _w(1, 4 * H, H), _w(1, 4 * H, H), _w(1, 4 * H, H)
_T_B = _w(1, 8 * H)


def _two_layer_lstm(x: str, h: str, c: str, hn: str, cn: str) -> list:
    """Nodes of a 2-layer time-major LSTM from ``x`` ``[T, B, F]``, states ``[2, B, H]``: the
    top layer's sequence is ``top`` ``[T, B, H]``."""
    return [
        helper.make_node("Gather", [h, "zero"], ["h_a"], axis=0),
        helper.make_node("Gather", [c, "zero"], ["c_a"], axis=0),
        helper.make_node("Gather", [h, "one"], ["h_b"], axis=0),
        helper.make_node("Gather", [c, "one"], ["c_b"], axis=0),
        helper.make_node(
            "LSTM", [x, "W1", "R1", "B", "", "h_a", "c_a"], ["y_a", "hn_a", "cn_a"], hidden_size=H
        ),
        helper.make_node("Squeeze", ["y_a", "one"], ["x_b"]),
        helper.make_node(
            "LSTM",
            ["x_b", "W2", "R2", "B", "", "h_b", "c_b"],
            ["y_b", "hn_b", "cn_b"],
            hidden_size=H,
        ),
        helper.make_node("Squeeze", ["y_b", "one"], ["top"]),
        helper.make_node("Concat", ["hn_a", "hn_b"], [hn], axis=0),
        helper.make_node("Concat", ["cn_a", "cn_b"], [cn], axis=0),
    ]


_LSTM_WEIGHTS = {"W1": _T_W1, "R1": _T_R1, "W2": _T_W2, "R2": _T_R2, "B": _T_B}


def torch_lstm(path: Path) -> Path:
    nodes = [
        helper.make_node("Transpose", ["input"], ["/lstm/Transpose_output_0"], perm=[1, 0, 2]),
        *_two_layer_lstm("/lstm/Transpose_output_0", "h0", "c0", "hn", "cn"),
        helper.make_node("Transpose", ["top"], ["output"], perm=[1, 0, 2]),
    ]
    return save_graph(
        path,
        nodes,
        [
            value_info("input", f32, ["batch", "seq", F]),
            value_info("h0", f32, [2, "batch", H]),
            value_info("c0", f32, [2, "batch", H]),
        ],
        [
            value_info("output", f32, ["batch", "seq", H]),
            value_info("hn", f32, [2, "batch", H]),
            value_info("cn", f32, [2, "batch", H]),
        ],
        {**_LSTM_WEIGHTS, "zero": ints(0), "one": ints(1)},
    )


def torch_lstm_state(path: Path) -> Path:
    """The same LSTM with h and c passed as one ``state`` ``[2, layers, batch, H]``."""
    nodes = [
        helper.make_node("Gather", ["state", "zero_s"], ["h"], axis=0),
        helper.make_node("Gather", ["state", "one_s"], ["c"], axis=0),
        helper.make_node("Transpose", ["input"], ["xt"], perm=[1, 0, 2]),
        *_two_layer_lstm("xt", "h", "c", "hn", "cn"),
        helper.make_node("Transpose", ["top"], ["output"], perm=[1, 0, 2]),
        helper.make_node("Unsqueeze", ["hn", "zero"], ["hn4"]),
        helper.make_node("Unsqueeze", ["cn", "zero"], ["cn4"]),
        helper.make_node("Concat", ["hn4", "cn4"], ["next_state"], axis=0),
    ]
    return save_graph(
        path,
        nodes,
        [
            value_info("input", f32, ["batch", "seq", F]),
            value_info("state", f32, [2, 2, "batch", H]),
        ],
        [
            value_info("output", f32, ["batch", "seq", H]),
            value_info("next_state", f32, [2, 2, "batch", H]),
        ],
        {
            **_LSTM_WEIGHTS,
            "zero": ints(0),
            "one": ints(1),
            "zero_s": np.array(0, np.int64),
            "one_s": np.array(1, np.int64),
        },
    )


_G_W, _G_R = _w(1, 3 * H, F), _w(1, 3 * H, H)


def torch_gru(path: Path) -> Path:
    nodes = [
        helper.make_node(
            "GRU", ["x", "W", "R", "", "", "hidden_in"], ["y4", "hidden_out"], hidden_size=H
        ),
        helper.make_node("Squeeze", ["y4", "one"], ["y"]),
    ]
    return save_graph(
        path,
        nodes,
        [
            value_info("x", f32, ["seq_len", "batch", F]),
            value_info("hidden_in", f32, [1, "batch", H]),
        ],
        [
            value_info("y", f32, ["seq_len", "batch", H]),
            value_info("hidden_out", f32, [1, "batch", H]),
        ],
        {"W": _G_W, "R": _G_R, "one": ints(1)},
    )


def torch_unnamed_gru(path: Path) -> Path:
    """A torch.export-based export with the forward's argument names (``x``, ``hidden``) and
    generated output names: ``getitem`` (the sequence, whose shape would pass for the state's)
    then ``getitem_1`` (the new state)."""
    nodes = [
        helper.make_node(
            "GRU", ["x", "W", "R", "", "", "hidden"], ["y4", "getitem_1"], hidden_size=H
        ),
        helper.make_node("Squeeze", ["y4", "one"], ["getitem"]),
    ]
    return save_graph(
        path,
        nodes,
        [value_info("x", f32, ["s0", "s1", F]), value_info("hidden", f32, [1, "s1", H])],
        [value_info("getitem", f32, ["s0", "s1", H]), value_info("getitem_1", f32, [1, "s1", H])],
        {"W": _G_W, "R": _G_R, "one": ints(1)},
        opset=18,
    )


def gru_batch_named(path: Path, batch: str | None) -> Path:
    """A batch-first GRU whose batch dim_param is ``batch`` (None: anonymous) and whose time
    dim_param is anonymous too: ``x`` ``[batch, ?, F]``, ``h0 -> hn`` ``[1, batch, H]``."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("GRU", ["xt", "W", "R", "", "", "h0"], ["y4", "hn"], hidden_size=H),
        helper.make_node("Squeeze", ["y4", "one"], ["y3"]),
        helper.make_node("Transpose", ["y3"], ["y"], perm=[1, 0, 2]),
    ]
    return save_graph(
        path,
        nodes,
        [value_info("x", f32, [batch, None, F]), value_info("h0", f32, [1, batch, H])],
        [value_info("y", f32, [batch, None, H]), value_info("hn", f32, [1, batch, H])],
        {"W": _G_W, "R": _G_R, "one": ints(1)},
    )


VOCAB = 11
_E = _w(VOCAB, F, scale=1.0)
_OUT = _w(H, VOCAB)


def token_gru(path: Path) -> Path:
    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["emb"]),  # [batch, sequence, F]
        helper.make_node("Transpose", ["emb"], ["xt"], perm=[1, 0, 2]),
        helper.make_node(
            "GRU", ["xt", "W", "R", "", "", "past_h"], ["y4", "present_h"], hidden_size=H
        ),
        helper.make_node("Squeeze", ["y4", "one"], ["y3"]),
        helper.make_node("Transpose", ["y3"], ["y"], perm=[1, 0, 2]),
        helper.make_node("MatMul", ["y", "OUT"], ["logits"]),
    ]
    return save_graph(
        path,
        nodes,
        [
            value_info("input_ids", i64, ["batch", "sequence"]),
            value_info("past_h", f32, [1, "batch", H]),
        ],
        [
            value_info("logits", f32, ["batch", "sequence", VOCAB]),
            value_info("present_h", f32, [1, "batch", H]),
        ],
        {"E": _E, "W": _G_W, "R": _G_R, "OUT": _OUT, "one": ints(1)},
    )


def exported_once(folder: Path, export: Callable[[str, Path], Path]) -> Callable[[str], Path]:
    """A getter of each case's file: ``export(name, folder / name / "model.onnx")`` the first time
    ``name`` is asked for, the same path after."""
    paths: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in paths:
            (folder / name).mkdir(exist_ok=True)
            paths[name] = export(name, folder / name / "model.onnx")
        return paths[name]

    return get


def random_frames(
    steps: int, seed: int, frame: tuple[int, ...], vocab: int | None = None, dtype=np.int64
) -> list[np.ndarray]:
    """One seeded frame per step as a caller passes it: a token id below ``vocab`` (of ``dtype``)
    when ``vocab`` is given, else a float32 array of shape ``frame`` in [-1, 1)."""
    rng = np.random.default_rng(seed)
    if vocab is not None:
        return [dtype(t) for t in rng.integers(0, vocab, steps)]
    return [rng.uniform(-1, 1, frame).astype(np.float32) for _ in range(steps)]


def ort_loop(
    path: Path,
    steps: list[dict[str, np.ndarray]],
    states: dict[str, np.ndarray],
    pairs: dict[str, str],
) -> list[dict[str, np.ndarray]]:
    """One session run per step (each step's feeds given whole), states fed back by ``pairs``."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    results = []
    for feeds in steps:
        out = dict(zip(names, session.run(None, {**feeds, **states})))
        states = {name_in: out[name_out] for name_in, name_out in pairs.items()}
        results.append(out)
    return results


def outputs_by_name(output: object, names: list[str]) -> dict[str, np.ndarray]:
    """A stream's result as ``{output name: array}`` (a lone output comes back bare)."""
    return dict(output) if isinstance(output, dict) else {names[0]: np.asarray(output)}


def assert_steps_match(got: list[dict], want: list[dict]) -> None:
    """Step by step, the same outputs with the same values (``KERNELS`` closeness)."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for name in w:
            assert g[name].size == w[name].size, name
            assert_close(g[name].reshape(-1), w[name].reshape(-1), KERNELS)


def assert_step_and_feed_match(model, frames: list[np.ndarray], want: list[dict]) -> None:
    """``model``'s streams give ``want`` stepped frame by frame and fed in two chunks (3 + rest)."""
    names = [o.name for o in model.signature.outputs]
    stream = model.stream()
    assert_steps_match([outputs_by_name(stream.step(f), names) for f in frames], want)
    stream = model.stream()
    parts = (frames[:3], frames[3:])
    chunks = [outputs_by_name(stream.feed(np.stack(part)), names) for part in parts]
    fed = [{n: c[n][t] for n in names} for c in chunks for t in range(len(c[names[0]]))]
    assert_steps_match(fed, want)
