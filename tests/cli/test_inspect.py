"""`rnnstream info` (rnnstream/cli/inspect.py)."""

from __future__ import annotations

import json


def test_info_text_and_json(cli, char_model):
    text = cli("-q", "info", str(char_model.onnx)).output
    assert "h0 -> hn" in text and "kind char_lm" in text and "100 characters" in text
    info = json.loads(cli("-q", "info", str(char_model.onnx), "--json").output)
    assert info["signature"]["states"][0]["shape"] == [2, "batch", 32]
    assert [a["name"] for a in info["inputs"]] == ["x", "h0"]
    # 2-layer GRU, embedding 32 -> hidden 32, head 32 -> 100: weights of W, R and the head.
    assert info["cost"]["macs_per_step"] == 2 * (3 * 32 * 32 * 2) + 32 * 100
    assert "multiply-adds per step" in text
    assert "c0" not in text  # a GRU has no cell state


def test_info_of_a_frames_model_and_a_state_given_by_hand(cli, frames_model):
    text = cli("-q", "info", str(frames_model.onnx), "--state", "h0=hn").output
    assert "state   h0 -> hn: float32 [1, 'batch', 6]" in text
    assert "state   c0 -> cn" in text and "kind discovered" in text  # the metadata set aside
    assert "parity" not in text
