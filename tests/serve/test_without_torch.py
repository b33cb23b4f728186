"""rnnstream.serve needs only the runtime: proven in a subprocess where torch and onnx fail."""

from __future__ import annotations

import subprocess
import sys

from rnnstream.assets import DEMO_ONNX

CHILD = r"""
import importlib.abc
import sys


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx"):
            raise ImportError(f"{name} is blocked in this test")
        return None


sys.meta_path.insert(0, Block())
from rnnstream.errors import ExportError
from rnnstream.serve import write_triton_repository

model, repo = sys.argv[1], sys.argv[2]
written = write_triton_repository(model, repo, name="lm", ort=False)
print("python model:", written.python.name)
try:
    write_triton_repository(model, repo, name="lm")
except ExportError as e:
    print("refused:", e)
"""


def test_python_model_is_written_without_torch_or_onnx(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(DEMO_ONNX), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "python model: lm" in result.stdout
    assert "refused: the lm_ort model needs onnx" in result.stdout, result.stdout
    assert "rnnstream[export]" in result.stdout
    assert (tmp_path / "lm/1/model.py").is_file() and not (tmp_path / "lm_ort").exists()
