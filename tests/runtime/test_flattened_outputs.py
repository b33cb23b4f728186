"""A third-party file whose output flattens batch and time (``out.reshape(-1, H)`` before a head,
as char-RNN tutorials write it) is refused at load by name, not streamed along the wrong axis."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import rnnstream
from rnnstream.errors import SignatureError
from tests.tolerances import PARITY, assert_close


class FlattenedHead(nn.Module):
    def __init__(self, cell: str, batch_first: bool, order: str) -> None:
        super().__init__()
        self.rnn = getattr(nn, cell)(5, 8, batch_first=batch_first)
        self.fc = nn.Linear(8, 4)
        self.batch_first, self.order = batch_first, order

    def forward(self, x, h):
        out, h = self.rnn(x, h)
        if self.order == "reshape":
            flat = out.reshape(-1, out.shape[-1])
        elif self.order == "view":
            flat = out.contiguous().view(-1, 8)
        else:
            flat = out.flatten(0, 1)
        return self.fc(flat), h


@pytest.mark.parametrize(
    ("cell", "batch_first", "order"),
    [("GRU", True, "reshape"), ("GRU", False, "view"), ("RNN", True, "flatten")],
)
def test_an_output_flattening_batch_and_time_is_refused_by_name(tmp_path, cell, batch_first, order):
    torch.manual_seed(0)
    model = FlattenedHead(cell, batch_first, order).eval()
    x = torch.randn((2, 3, 5) if batch_first else (3, 2, 5))
    h = torch.zeros(1, 2, 8)
    batch, time = ("batch", "time") if batch_first else ("time", "batch")
    path = tmp_path / "flat.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x, h),
            path,
            input_names=["x", "h0"],
            output_names=["logits", "hn"],
            dynamic_axes={"x": {0: batch, 1: time}, "h0": {1: "batch"}, "logits": {0: "rows"}},
            dynamo=False,
        )
    with pytest.raises(SignatureError) as refused:
        rnnstream.load(path)
    message = str(refused.value)
    assert "'logits'" in message and "batch and time on one axis" in message
    assert len(message.splitlines()) == 1


def test_a_flattened_output_reshaped_back_streams(tmp_path):
    """The fix the message gives: reshape back to [B, T, ...] after the head."""

    class ReshapedBack(FlattenedHead):
        def forward(self, x, h):
            y, h = super().forward(x, h)
            return y.reshape(x.shape[0], x.shape[1], -1), h

    torch.manual_seed(1)
    model = ReshapedBack("GRU", True, "reshape").eval()
    x = torch.randn(2, 3, 5)
    path = tmp_path / "back.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x, torch.zeros(1, 2, 8)),
            path,
            input_names=["x", "h0"],
            output_names=["logits", "hn"],
            dynamic_axes={"x": {0: "batch", 1: "time"}, "h0": {1: "batch"}},
            dynamo=False,
        )
    stream = rnnstream.load(path).stream()
    frames = np.random.default_rng(2).standard_normal((6, 5)).astype(np.float32)
    got = np.stack([stream.step(f) for f in frames])
    with torch.no_grad():
        want = model(torch.from_numpy(frames)[None], torch.zeros(1, 1, 8))[0][0].numpy()
    assert_close(got, want, PARITY)
