"""A Triton Inference Server model repository for a streamable model.

Two models serve the same ONNX file:

- ``<name>`` (python backend): ``model.py`` over a StreamPool; Triton's sequence batcher passes
  START / END / CORRID control inputs, every output of the model is served;
- ``<name>_ort`` (ONNX Runtime backend): a batch-first copy of the model whose recurrent state
  Triton keeps itself (implicit state, zeros at START). Writing it needs onnx (the ``export``
  extra).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from rnnstream.errors import ExportError, InputError, SignatureError
from rnnstream.runtime import load
from rnnstream.serve.triton_config import Batching, ort_config, python_config, render_pbtxt

__all__ = ["TritonRepository", "write_triton_repository"]

MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class TritonRepository:
    """What was written: the repository and each model's folder (``ort`` None when skipped)."""

    root: Path
    python: Path
    ort: Path | None
    ort_parity: dict | None


def write_triton_repository(
    model_path: str | os.PathLike,
    repo: str | os.PathLike,
    name: str | None = None,
    batching: Batching | None = None,
    ort: bool = True,
) -> TritonRepository:
    """Write ``<name>`` and ``<name>_ort`` for ``model_path`` into the repository ``repo``.

    ``name`` defaults to the file's stem. ``batching`` sets the sequence batcher (defaults of
    :class:`Batching`). The ``_ort`` model's batch-first copy is checked against the original
    before it is written (:func:`rnnstream.export.batch_first.write_batch_first`); ``ort=False``
    skips it, which needs no onnx.
    """
    model_path = Path(model_path)
    name = name or model_path.stem
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise InputError(f"model name {name!r}: use letters, digits, '_', '.' and '-' only")
    batching = batching or Batching()
    model = load(model_path)
    model.pool()  # refuses, naming why, a model that cannot stream in a batch
    root = Path(repo)
    python_dir = root / name
    version = python_dir / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path, version / MODEL_FILE)
    template = resources.files("rnnstream.serve").joinpath("triton_model.py")
    (version / "model.py").write_text(template.read_text())
    _write_config(python_dir, python_config(name, model.signature, batching))
    if not ort:
        return TritonRepository(root, python_dir, None, None)
    if model.signature.lengths:
        counts = ", ".join(repr(spec.name) for spec in model.signature.lengths)
        raise SignatureError(
            f"{model_path}: the {name}_ort model would need each client to send {counts} (frame "
            f"counts the python backend fills itself); serve {name} alone (ort=False, CLI: "
            "--no-ort)"
        )
    try:
        from rnnstream.export.batch_first import batch_first_signature, write_batch_first
    except ImportError as e:
        raise ExportError(
            f"the {name}_ort model needs onnx ({e}): install rnnstream[export], or skip it"
        ) from e
    ort_dir = root / f"{name}_ort"
    (ort_dir / "1").mkdir(parents=True, exist_ok=True)
    parity = write_batch_first(model_path, ort_dir / "1" / MODEL_FILE)
    first = batch_first_signature(model.signature)
    _write_config(ort_dir, ort_config(f"{name}_ort", first, batching))
    return TritonRepository(root, python_dir, ort_dir, parity)


def _write_config(folder: Path, config: dict) -> None:
    (folder / "config.pbtxt").write_text(render_pbtxt(config) + "\n")
