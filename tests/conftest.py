"""Fixtures every test shares: seeded RNGs, one torch thread, torchlib listed once, a CLI runner,
exported models."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from rnnstream.cli import main
from rnnstream.train import stdlib_sources


@pytest.fixture(autouse=True)
def seeded_global_rngs() -> None:
    """Seed the global RNGs (torch, numpy's legacy one, random) before every test.

    A test that draws from a global RNG then gets the same data whichever tests ran before it;
    tests that need their own draws still make a seeded generator of their own.
    """
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


@pytest.fixture(scope="session", autouse=True)
def torch_single_thread() -> Iterator[None]:
    """Run PyTorch on one thread.

    The models here are tiny and run many sequential steps: with several intra-op threads on a
    small, shared CPU, torch's thread pool contends with onnxruntime and any other process and a
    one-second export can take twenty. One thread is as fast when idle and stable when busy.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def torchlib_listed_once() -> Iterator[None]:
    """List onnxscript's torchlib functions once a session instead of at every export.

    ``torch.onnx.export`` builds its operator registry from that list at every call, and
    onnxscript makes it by re-parsing the source of each of its ~500 functions: half of a small
    model's export, and the suite exports hundreds. The list depends only on the installed
    onnxscript, so one serves every export. Where torch reads it elsewhere (another torch), the
    exports run as they are.
    """
    try:
        from onnxscript._framework_apis import torch_2_11 as torch_apis
    except ImportError:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch_apis, "get_torchlib_ops", functools.cache(torch_apis.get_torchlib_ops))
        yield


Cli = Callable[..., Result]


def invoke(*args: str, input: str | bytes | None = None, ok: bool | None = True) -> Result:
    """``rnnstream ARGS`` through click's runner; ``ok`` asserts success (True) or failure
    (False), None asserts nothing."""
    result = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    if ok is not None:
        assert (result.exit_code == 0) == ok, result.output
    return result


@pytest.fixture
def cli() -> Cli:
    """The command line: ``cli("-q", "info", path)``."""
    return invoke


@dataclass(frozen=True)
class Exported:
    """A checkpoint and its exported ONNX file."""

    checkpoint: Path
    onnx: Path


def _exported(folder: Path, *init_args: str) -> Exported:
    ckpt, onnx_path = folder / "model.safetensors", folder / "model.onnx"
    invoke("-q", "init", *init_args, "-o", str(ckpt))
    invoke("-q", "export", str(ckpt), "-o", str(onnx_path), "--steps", "50")
    return Exported(ckpt, onnx_path)


@pytest.fixture(scope="session")
def char_model(tmp_path_factory) -> Exported:
    """A 2-layer GRU over printable characters (token ids in, 100 logits out)."""
    folder = tmp_path_factory.mktemp("char")
    return _exported(
        folder, "--cell", "gru", "--layers", "2", "--hidden", "32", "--vocab", "printable"
    )


@pytest.fixture(scope="session")
def frames_model(tmp_path_factory) -> Exported:
    """An LSTM reading frames of 3 numbers and writing 2 (states h0 -> hn, c0 -> cn)."""
    folder = tmp_path_factory.mktemp("frames")
    return _exported(
        folder, "--cell", "lstm", "--hidden", "6", "--input-size", "3", "--output-size", "2"
    )


@pytest.fixture(scope="session")
def python_text() -> str:
    """Tiny real text for training tests: a slice of a standard-library source file."""
    path = next(p for p in stdlib_sources() if p.name == "textwrap.py")
    return path.read_text(encoding="utf-8")[:12000]


@pytest.fixture
def text_file(tmp_path: Path, python_text: str) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(python_text, encoding="utf-8")
    return path
