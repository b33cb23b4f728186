"""The runtime needs neither torch nor onnx: proven in a subprocess where importing them fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import rnnstream
from rnnstream.export import ParitySettings, export

CHILD = r"""
import importlib.abc
import json
import sys

BLOCKED = ("torch", "onnx")
attempts = []


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ImportError(f"{name} is blocked in this test")
        return None


sys.meta_path.insert(0, Block())

for name in BLOCKED:  # the block really works
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"importing {name} did not fail")
attempts.clear()

import numpy as np

import rnnstream
import rnnstream.runtime

model = rnnstream.load(sys.argv[1])
stream = model.stream()
frames = np.asarray(json.loads(sys.argv[2]), dtype=np.float32)
stepped = [stream.step(f).tolist() for f in frames[:3]]
fed = stream.feed(frames[3:]).tolist()
runtime_attempts = list(attempts)
torch_loaded = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
onnx_loaded = sorted(m for m in sys.modules if m.split(".")[0] == "onnx")

try:
    import rnnstream.export  # needs torch: must fail here
except ImportError:
    export_importable = False
else:
    export_importable = True

print(json.dumps({
    "stepped": stepped,
    "fed": fed,
    "state": {k: v.tolist() for k, v in stream.state.items()},
    "torch_loaded": torch_loaded,
    "onnx_loaded": onnx_loaded,
    "runtime_attempts": runtime_attempts,
    "export_importable": export_importable,
}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("iso") / "lstm.onnx"
    export(nn.LSTM(3, 6, 2, batch_first=True), path, parity=ParitySettings(steps=50))
    return path


def test_runtime_streams_without_torch_or_onnx(exported: Path) -> None:
    frames = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(exported), json.dumps(frames.tolist())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout.strip().splitlines()[-1])

    assert child["torch_loaded"] == []
    assert child["onnx_loaded"] == []
    # Nothing on the runtime's path (import, load, step, feed) even asked for torch or onnx...
    assert child["runtime_attempts"] == []
    # ...while the exporter, which needs torch, is refused in that same process.
    assert child["export_importable"] is False

    # Same numbers as the same file streamed in this (torch-enabled) process.
    stream = rnnstream.load(exported).stream()
    stepped = [stream.step(f) for f in frames[:3]]
    fed = stream.feed(frames[3:])
    np.testing.assert_array_equal(np.asarray(child["stepped"], np.float32), np.stack(stepped))
    np.testing.assert_array_equal(np.asarray(child["fed"], np.float32), fed)
    for name, value in stream.state.items():
        np.testing.assert_array_equal(np.asarray(child["state"][name], np.float32), value)
    assert np.asarray(child["fed"]).shape == (4, 6)
