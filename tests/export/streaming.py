"""The export-stream-compare harness the export tests share.

A model is built seeded (with the BatchNorm statistics a trained model would have), fed a seeded
sequence, and its exported file streamed step by step, in chunks, through a pool or from a state
snapshot, each compared with PyTorch's whole-sequence forward within ``tests.tolerances.PARITY``.
Every test keeps its own model and its own assertions; only the machinery lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import rnnstream
from rnnstream.export import ParitySettings, export
from rnnstream.runtime import StreamPool
from tests.tolerances import PARITY, assert_close

__all__ = [
    "USER_PARITY",
    "Case",
    "ModelSet",
    "assert_pool_rows_match",
    "assert_refused_in_a_short_message",
    "assert_snapshot_restores",
    "assert_steps_and_chunks_match",
    "batch_time",
    "by_name",
    "export_and_stream_like_pytorch",
    "prepared",
    "refusal",
    "sequence",
    "torch_batch_time",
]


def prepared(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``factory()`` built under ``seed`` in eval mode, its BatchNorm layers given the running
    statistics a trained model would have (a fresh one's are the identity)."""
    torch.manual_seed(seed)
    model = factory()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def sequence(batch: int, steps: int, features: int, batch_first: bool, seed: int) -> torch.Tensor:
    """A seeded float sequence laid out as the model reads it: ``[batch, time, features]`` or
    ``[time, batch, features]``."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, steps, features) if batch_first else (steps, batch, features)
    return torch.randn(shape, generator=gen)


def batch_time(x: torch.Tensor | np.ndarray, batch_first: bool) -> np.ndarray:
    """``x`` as numpy ``[batch, time, ...]``, the layout a stream is fed in."""
    array = x.numpy() if isinstance(x, torch.Tensor) else x
    return array if batch_first else array.swapaxes(0, 1)


def torch_batch_time(model: nn.Module, x: torch.Tensor, batch_first: bool) -> np.ndarray:
    """PyTorch's whole-sequence output as ``[batch, time, features]``."""
    with torch.no_grad():
        return batch_time(model(x), batch_first)


def assert_steps_and_chunks_match(
    stream: rnnstream.Stream, frames: np.ndarray, want: np.ndarray, chunk: int
) -> None:
    """Step ``frames`` (``[batch, time, ...]``) one at a time, reset, then feed them ``chunk``
    steps at a time: both must match ``want`` (``[batch, time, ...]``)."""
    steps = frames.shape[1]
    stepped = np.stack([stream.step(frames[:, t]) for t in range(steps)], axis=1)
    assert_close(stepped, want, PARITY)
    stream.reset()
    chunked = [stream.feed(frames[:, t : t + chunk]) for t in range(0, steps, chunk)]
    assert_close(np.concatenate(chunked, axis=1), want, PARITY)


def assert_pool_rows_match(
    pool: StreamPool,
    sequences: list[np.ndarray],
    sits_out: Callable[[int], bool],
    reference: Callable[[np.ndarray], np.ndarray],
) -> list[int]:
    """Open one pool row per sequence (``[time, ...]``) and tick them together, the rows after the
    first sitting out the ticks where ``sits_out(tick)``; each row's outputs must match
    ``reference`` (the model alone on the frames that row was given). Returns the steps each row
    took."""
    ids = [pool.open() for _ in sequences]
    xs = dict(zip(ids, sequences))
    outputs: dict[int, list[np.ndarray]] = {sid: [] for sid in ids}
    for tick in range(len(sequences[0])):
        ticking = ids[:1] if sits_out(tick) else ids
        for sid, y in pool.step({sid: xs[sid][len(outputs[sid])] for sid in ticking}).items():
            outputs[sid].append(y)
    for sid, ys in outputs.items():
        assert_close(np.stack(ys), reference(xs[sid][: len(ys)]), PARITY)
    return [len(ys) for ys in outputs.values()]


def assert_snapshot_restores(stream: rnnstream.Stream, frames: np.ndarray, split: int) -> None:
    """Feed ``frames[:split]``, snapshot the state, feed the rest; after a reset and the snapshot
    restored, the rest gives the same outputs."""
    stream.feed(frames[:split])
    snapshot = stream.state
    first = stream.feed(frames[split:])
    stream.reset()
    stream.state = snapshot
    assert_close(stream.feed(frames[split:]), first, PARITY)


def refusal(model: nn.Module, path: Path, **export_args: object) -> str:
    """The message of the ExportError exporting ``model`` to ``path`` raises; no file is left."""
    with pytest.raises(rnnstream.ExportError) as info:
        export(model, path, **export_args)
    assert not path.exists()
    return str(info.value)


def assert_refused_in_a_short_message(
    model: nn.Module,
    path: Path,
    message: str,
    example: torch.Tensor | None,
    parity: ParitySettings,
) -> None:
    """Exporting ``model`` raises an ExportError containing ``message``, in at most three lines
    with no traceback, and writes no file."""
    text = refusal(model, path, example=example, parity=parity)
    assert message in text
    assert len(text.splitlines()) <= 3 and "Traceback" not in text


@dataclass(frozen=True)
class ModelSet:
    """Named models (a factory and whether it is batch-first) built under one seed, reading
    ``features`` floats per step: a test file's zoo, exported once by its module fixture."""

    factories: dict[str, tuple[Callable[[], nn.Module], bool]]
    features: int
    seed: int

    def model(self, name: str) -> tuple[nn.Module, bool]:
        """The model ``name`` (seeded, eval mode) and whether it is batch-first."""
        factory, batch_first = self.factories[name]
        return prepared(factory, self.seed), batch_first

    def sequence(self, batch: int, steps: int, batch_first: bool, seed: int) -> torch.Tensor:
        return sequence(batch, steps, self.features, batch_first, seed)

    def export_all(self, folder: Path, parity: ParitySettings, example: bool) -> dict[str, Path]:
        """Export every model into ``folder`` (its parity checked at export); ``example`` passes
        a seeded input, otherwise the exporter guesses it from the layout."""
        paths = {}
        for name in self.factories:
            model, batch_first = self.model(name)
            path = folder / f"{name}.onnx"
            if example:
                ex = self.sequence(2, 3, batch_first, seed=0)
                report = export(model, path, example=ex, parity=parity)
            else:
                report = export(model, path, batch_first=batch_first, parity=parity)
            assert report.parity is not None and report.parity.passed, name
            paths[name] = path
        return paths

    def assert_streams_like_pytorch(
        self, path: Path, name: str, batch: int, steps: int, chunk: int, seed: int
    ) -> None:
        """The exported ``name`` stepped and fed in chunks matches PyTorch on a seeded input."""
        model, batch_first = self.model(name)
        x = self.sequence(batch, steps, batch_first, seed)
        stream = rnnstream.load(path).stream(batch=batch)
        want = torch_batch_time(model, x, batch_first)
        assert_steps_and_chunks_match(stream, batch_time(x, batch_first), want, chunk)


# --- users' models: several heads, state arguments, token or float inputs --------------------

USER_PARITY = ParitySettings(steps=40, chunk=6)
USER_STEPS, USER_BATCH, USER_CHUNK = 23, 2, 5


@dataclass(frozen=True)
class Case:
    """A model, how PyTorch is called from the zero state, and the heads it returns, by name."""

    name: str
    make: Callable[[], nn.Module]
    call: Callable[[nn.Module, torch.Tensor], list[torch.Tensor]]
    names: tuple[str, ...] = ("y",)
    tokens: int | None = None
    features: int | tuple[int, ...] | None = 0  # None: no feature axis ([batch, time] floats)
    batch_first: bool = True
    example: bool = False  # export with example= (the input cannot be guessed)

    def input(self, seed: int, batch: int = USER_BATCH, steps: int = USER_STEPS) -> torch.Tensor:
        """A seeded input of ``batch`` sequences of ``steps`` steps, as the model reads it."""
        gen = torch.Generator().manual_seed(seed)
        lead = (batch, steps) if self.batch_first else (steps, batch)
        if self.tokens is not None:
            return torch.randint(0, self.tokens, lead, generator=gen)
        if self.features is None:
            features: tuple[int, ...] = ()
        else:
            features = (self.features,) if isinstance(self.features, int) else self.features
        return torch.randn(*lead, *features, generator=gen)


def by_name(result: object, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """A stream's outputs by name: a dict as it is, a lone output under ``names[0]``."""
    return result if isinstance(result, dict) else {names[0]: result}


def export_and_stream_like_pytorch(case: Case, tmp_path: Path) -> None:
    """Export ``case``'s model, then stream it step by step and in chunks against PyTorch: every
    head along time, a head without a time axis at its last value."""
    torch.manual_seed(sum(map(ord, case.name)))
    model = case.make().eval()
    example = case.input(seed=0) if case.example else None
    report = export(model, tmp_path / "m.onnx", example=example, parity=USER_PARITY)
    sig = report.signature
    assert [o.name for o in sig.outputs] == list(case.names)
    assert report.parity is not None and report.parity.passed
    x = case.input(seed=7)
    with torch.no_grad():
        refs = [t.numpy() for t in case.call(model, x)]
    frames = batch_time(x, case.batch_first)
    loaded = rnnstream.load(report.path)
    for mode in ("step", "chunk"):
        stream = loaded.stream(batch=USER_BATCH)
        if mode == "step":
            calls = [stream.step(frames[:, t]) for t in range(USER_STEPS)]
        else:
            calls = [
                stream.feed(frames[:, t : t + USER_CHUNK]) for t in range(0, USER_STEPS, USER_CHUNK)
            ]
        results = [by_name(result, case.names) for result in calls]
        for spec, ref in zip(sig.outputs, refs):
            ref = ref.swapaxes(0, 1) if spec.time_axis is not None and spec.batch_axis == 1 else ref
            per_call = [r[spec.name] for r in results]
            if spec.time_axis is None:
                got = per_call[-1]
            elif mode == "step":
                got = np.stack(per_call, axis=1)
            else:
                got = np.concatenate(per_call, axis=1)
            assert_close(got, ref, PARITY)
