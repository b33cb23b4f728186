"""Users' models at int8, float16 and int4: the ones a red-team pass found broken, each exported
with ``precision=``, then stepped, fed in chunks, ticked in a ``StreamPool``, restored from a
snapshot and re-verified, every output within its precision's tolerance of PyTorch.

Found and fixed:

* an ``nn.LSTM`` stepped in a Python loop (a cell loop) at int8: ``quantize_dynamic`` put a
  ``DynamicQuantizeLSTM`` inside the loop's ``Scan`` body without importing ``com.microsoft``,
  and onnx's checker refused the graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import rnnstream
from rnnstream.export import TOLERANCES, ParitySettings, export, verify
from tests.export.streaming import Case
from tests.export.test_user_models_3 import BatchFirstStepLoop  # streamed there at float32

SETTINGS = ParitySettings(steps=24, chunk=4)
BATCH, STEPS, CHUNK, SPLIT = 2, 9, 4, 5


class SteppedTwoLayerLstmStateArguments(nn.Module):
    """A 2-layer LSTM stepped over time with ``h`` and ``c`` passed in and returned."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, num_layers=2, batch_first=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple:
        ys = []
        for t in range(x.size(1)):
            y, (h, c) = self.lstm(x[:, t : t + 1], (h, c))
            ys.append(self.fc(y))
        return torch.cat(ys, 1), h, c


# the harness's Case: ``call`` gives PyTorch's per-step output ([batch, time, ...]) from the zero
# state
CASES = [
    Case("lstm_stepped", BatchFirstStepLoop, lambda m, x: [m(x)], features=4),
    Case(
        "lstm_2_layers_stepped_h_c_arguments",
        SteppedTwoLayerLstmStateArguments,
        lambda m, x: [m(x, torch.zeros(2, len(x), 6), torch.zeros(2, len(x), 6))[0]],
        features=4,
    ),
]
PRECISIONS = ["int8", "float16", "int4"]


def _assert_within(actual: np.ndarray, expected: np.ndarray, precision: str) -> None:
    """Within ``precision``'s parity tolerance: its atol, or its rtol of the expected tensor's
    largest magnitude."""
    tol = TOLERANCES[precision]
    error = float(np.abs(actual - expected).max())
    assert error <= max(tol.atol, tol.rtol * float(np.abs(expected).max())), (precision, error)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_users_model_streams_at_lower_precision(case: Case, precision: str, tmp_path: Path) -> None:
    torch.manual_seed(sum(map(ord, case.name)))
    model = case.make().eval()
    path = tmp_path / f"m.{precision}.onnx"
    report = export(model, path, parity=SETTINGS, precision=precision)
    assert report.signature.precision == precision
    assert report.parity is not None and report.parity.passed
    x = case.input(seed=7, batch=BATCH, steps=STEPS)
    with torch.no_grad():
        (want,) = (y.numpy() for y in case.call(model, x))
    frames = x.numpy()
    loaded = rnnstream.load(path)
    stream = loaded.stream(batch=BATCH)
    _assert_within(np.stack([stream.step(frames[:, t]) for t in range(STEPS)], 1), want, precision)
    stream.reset()
    chunks = [stream.feed(frames[:, t : t + CHUNK]) for t in range(0, STEPS, CHUNK)]
    _assert_within(np.concatenate(chunks, 1), want, precision)

    stream.reset()
    stream.feed(frames[:, :SPLIT])
    snapshot, rest = stream.state, stream.feed(frames[:, SPLIT:])
    stream.reset()
    stream.state = snapshot
    np.testing.assert_array_equal(stream.feed(frames[:, SPLIT:]), rest)

    pool = loaded.pool()
    rows = [pool.open() for _ in range(BATCH)]
    ticks = [pool.step({row: frames[i, t] for i, row in enumerate(rows)}) for t in range(STEPS)]
    for i, row in enumerate(rows):
        _assert_within(np.stack([tick[row] for tick in ticks]), want[i], precision)

    assert verify(path, model, SETTINGS).passed
