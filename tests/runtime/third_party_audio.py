"""Stateful audio ONNX graphs as their projects export them, built by hand with onnx.helper.

- ``silero_v5``: Silero VAD 5 — ``input`` ``[batch, samples]`` float, ``state`` ``[2, batch, 128]``
  (h and c in one tensor), ``sr`` int64 scalar, ``output`` ``[batch, 1]`` and ``stateN``; an
  ``If`` on ``sr`` reshapes the window into 16 chunks, so only 512 samples run at 16 kHz and 256
  at 8 kHz (``batch=1``: the batch fixed at 1, as an export without dynamic axes writes it).
  ``silero_v4``: the older ``input, sr, h, c -> output, hn, cn`` (2 layers of 64).
- ``kws_windows``: a keyword spotter over ``[N, 576]`` windows (N in order: time), ``h``/``c``
  fixed ``[1, 1, 128]`` (no batch axis), ``prob`` ``[N, 1]``.
- ``kws_mel``: 49 frames of 40 mel bins flattened by a Reshape to ``[batch, 1960]``: only
  ``frames == 49`` runs; ``h0 -> hn`` ``[1, batch, H]``, ``logits`` ``[batch, 12]``.
- ``vad_with_threshold``: audio windows plus a float ``threshold`` input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.runtime.third_party import H, ints, save_graph, value_info

f32, i64 = TensorProto.FLOAT, TensorProto.INT64
_rng = np.random.default_rng(32)  # fixed weights (test data comes from per-test seeds)


def _w(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (scale * _rng.standard_normal(shape)).astype(np.float32)


# Silero VAD 5 -------------------------------------------------------------------------------

SILERO_H = 128
_S_W, _S_R, _S_V = _w(1, 4 * SILERO_H, 16), _w(1, 4 * SILERO_H, SILERO_H), _w(SILERO_H, 1)
_S_W4, _S_R4 = _w(1, 4 * 64, 16), _w(1, 4 * 64, 64)


def _window_features(chunk: int, name: str) -> onnx.GraphProto:
    """An If branch: the window as 16 chunks of ``chunk`` samples, averaged: ``[batch, 16]``."""
    return helper.make_graph(
        [
            helper.make_node("Reshape", ["input", f"shape_{chunk}"], [f"chunks_{chunk}"]),
            helper.make_node(
                "ReduceMean", [f"chunks_{chunk}"], [f"feat_{chunk}"], axes=[2], keepdims=0
            ),
        ],
        name,
        [],
        [value_info(f"feat_{chunk}", f32, None)],
        initializer=[numpy_helper.from_array(ints(0, 16, chunk), f"shape_{chunk}")],
    )


def _silero_front() -> list:
    """``input`` and ``sr`` to ``x`` ``[1, batch, 16]``: 512 samples at 16 kHz, 256 at 8 kHz."""
    return [
        helper.make_node("Equal", ["sr", "sr16k"], ["is16k"]),
        helper.make_node(
            "If",
            ["is16k"],
            ["feat"],
            then_branch=_window_features(32, "sr16k"),
            else_branch=_window_features(16, "sr8k"),
        ),
        helper.make_node("Unsqueeze", ["feat", "zero"], ["x"]),
    ]


def silero_v5(path: Path, batch: int | None = None) -> Path:
    """``batch=1``: exported without a dynamic batch (``[1, samples]``, state ``[2, 1, 128]``)."""
    nodes = [
        *_silero_front(),
        helper.make_node("Gather", ["state", "zero"], ["h"], axis=0),
        helper.make_node("Gather", ["state", "one"], ["c"], axis=0),
        helper.make_node(
            "LSTM", ["x", "W", "R", "", "", "h", "c"], ["", "hn", "cn"], hidden_size=SILERO_H
        ),
        helper.make_node("Concat", ["hn", "cn"], ["stateN"], axis=0),
        helper.make_node("Squeeze", ["hn", "zero"], ["h2"]),
        helper.make_node("MatMul", ["h2", "V"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
    ]
    return save_graph(
        path,
        nodes,
        [
            value_info("input", f32, [batch, None]),
            value_info("state", f32, [2, batch, SILERO_H]),
            value_info("sr", i64, []),
        ],
        [
            value_info("output", f32, [batch, 1]),
            value_info("stateN", f32, [2, batch, SILERO_H]),
        ],
        {
            "W": _S_W,
            "R": _S_R,
            "V": _S_V,
            "sr16k": np.array(16000, np.int64),
            "zero": ints(0),
            "one": ints(1),
        },
    )


def silero_v4(path: Path) -> Path:
    """Two stacked LSTM layers of 64 (the second reuses the first's weights shape)."""
    nodes = [
        *_silero_front(),
        helper.make_node("Gather", ["h", "zero"], ["h_a"], axis=0),
        helper.make_node("Gather", ["c", "zero"], ["c_a"], axis=0),
        helper.make_node("Gather", ["h", "one"], ["h_b"], axis=0),
        helper.make_node("Gather", ["c", "one"], ["c_b"], axis=0),
        helper.make_node(
            "LSTM", ["x", "W", "R", "", "", "h_a", "c_a"], ["y_a", "hn_a", "cn_a"], hidden_size=64
        ),
        helper.make_node("Squeeze", ["y_a", "one"], ["x_b"]),
        helper.make_node("MatMul", ["x_b", "P"], ["x_b16"]),
        helper.make_node(
            "LSTM", ["x_b16", "W", "R", "", "", "h_b", "c_b"], ["", "hn_b", "cn_b"], hidden_size=64
        ),
        helper.make_node("Concat", ["hn_a", "hn_b"], ["hn"], axis=0),
        helper.make_node("Concat", ["cn_a", "cn_b"], ["cn"], axis=0),
        helper.make_node("Squeeze", ["hn_b", "zero"], ["top"]),
        helper.make_node("MatMul", ["top", "V"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
    ]
    return save_graph(
        path,
        nodes,
        [
            value_info("input", f32, ["batch", "samples"]),
            value_info("sr", i64, [1]),
            value_info("h", f32, [2, "batch", 64]),
            value_info("c", f32, [2, "batch", 64]),
        ],
        [
            value_info("output", f32, ["batch", 1]),
            value_info("hn", f32, [2, "batch", 64]),
            value_info("cn", f32, [2, "batch", 64]),
        ],
        {
            "W": _S_W4,
            "R": _S_R4,
            "P": _w(64, 16),
            "V": _w(64, 1),
            "sr16k": ints(16000),
            "zero": ints(0),
            "one": ints(1),
        },
    )


# Keyword spotters ---------------------------------------------------------------------------

_K_W, _K_R, _K_V = _w(1, 4 * 128, 576, scale=0.05), _w(1, 4 * 128, 128, scale=0.1), _w(128, 1)


def kws_windows(path: Path) -> Path:
    nodes = [
        helper.make_node("Unsqueeze", ["input", "one"], ["x3"]),
        helper.make_node(
            "LSTM", ["x3", "W", "R", "", "", "h", "c"], ["y", "hn", "cn"], hidden_size=128
        ),
        helper.make_node("Squeeze", ["y", "one_two"], ["y2"]),
        helper.make_node("MatMul", ["y2", "V"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
    ]
    return save_graph(
        path,
        nodes,
        [
            value_info("input", f32, ["seq_len", 576]),
            value_info("h", f32, [1, 1, 128]),
            value_info("c", f32, [1, 1, 128]),
        ],
        [
            value_info("prob", f32, ["seq_len", 1]),
            value_info("hn", f32, [1, 1, 128]),
            value_info("cn", f32, [1, 1, 128]),
        ],
        {"W": _K_W, "R": _K_R, "V": _K_V, "one": ints(1), "one_two": ints(1, 2)},
    )


KWS_H, KWS_CLASSES = 16, 12
_M_P, _M_W, _M_R = _w(1960, 8, scale=0.05), _w(1, 3 * KWS_H, 8), _w(1, 3 * KWS_H, KWS_H)
_M_OUT = _w(KWS_H, KWS_CLASSES)


def kws_mel(path: Path) -> Path:
    nodes = [
        helper.make_node("Reshape", ["features", "flat"], ["flat_x"]),  # [batch, 49 * 40]
        helper.make_node("MatMul", ["flat_x", "P"], ["proj"]),
        helper.make_node("Unsqueeze", ["proj", "zero"], ["x"]),
        helper.make_node("GRU", ["x", "W", "R", "", "", "h0"], ["", "hn"], hidden_size=KWS_H),
        helper.make_node("Squeeze", ["hn", "zero"], ["top"]),
        helper.make_node("MatMul", ["top", "OUT"], ["logits"]),
    ]
    return save_graph(
        path,
        nodes,
        [
            value_info("features", f32, ["batch", "frames", 40]),
            value_info("h0", f32, [1, "batch", KWS_H]),
        ],
        [
            value_info("logits", f32, ["batch", KWS_CLASSES]),
            value_info("hn", f32, [1, "batch", KWS_H]),
        ],
        {"flat": ints(0, 1960), "P": _M_P, "W": _M_W, "R": _M_R, "OUT": _M_OUT, "zero": ints(0)},
    )


_A_W = _w(H)


def vad_with_threshold(path: Path) -> Path:
    """``audio`` ``[batch, samples]`` (any window length), ``threshold`` float ``[1]``: ``speech``
    ``[batch, 1]`` is 1 where the new state's mean passes the threshold; ``state -> stateN``."""
    nodes = [
        helper.make_node("ReduceMean", ["audio"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["m", "w"], ["drive"]),
        helper.make_node("Mul", ["state", "half"], ["decayed"]),
        helper.make_node("Add", ["decayed", "drive"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["stateN"]),
        helper.make_node("ReduceMean", ["stateN"], ["level"], axes=[1], keepdims=1),
        helper.make_node("Greater", ["level", "threshold"], ["above"]),
        helper.make_node("Cast", ["above"], ["speech"], to=f32),
    ]
    return save_graph(
        path,
        nodes,
        [
            value_info("audio", f32, ["batch", "samples"]),
            value_info("state", f32, ["batch", H]),
            value_info("threshold", f32, [1]),
        ],
        [value_info("speech", f32, ["batch", 1]), value_info("stateN", f32, ["batch", H])],
        {"w": _A_W, "half": np.array(0.5, np.float32)},
    )
