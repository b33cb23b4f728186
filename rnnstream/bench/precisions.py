"""Every cell kind x precision in one table, measured side by side in one run (issue 12).

    python -m rnnstream.bench.precisions [--models lstm,gru,rnn_tanh,demo]
        [--precisions float32,float16,int8,int4] [--unpinned] [--steps N] [--rounds N]
        [--bpc-tokens N] [--json FILE]

(``make bench-precisions``.) Rows: a seeded ``RecurrentNet`` of each cell kind on the reference
shape (2 layers, input 64, hidden 256, head 256->64) exported at float32 and converted to float16,
int8 and int4 with parity against PyTorch, as ``rnnstream export``/``quantize`` do; and the
shipped demo model (2x256 character LSTM) at the same four precisions. For each: the file size,
``Stream.step`` (batch 1, one onnxruntime thread) median and p99, ``Stream.feed`` of a 64-frame
chunk in µs per frame, and the largest relative error of the parity record (reference shape) or
the bits per character streamed on held-out validation text (demo model). ``--unpinned`` adds
``Stream.step`` of the same file loaded with ``pin_steps=False`` (steps on the general session,
as before step sessions: what pinning gains). All timings are interleaved rounds of the same
run: on a shared machine, read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import rnnstream
from rnnstream.assets import DEMO_FP16_ONNX, DEMO_INT4_ONNX, DEMO_INT8_ONNX, DEMO_ONNX
from rnnstream.bench.latency import measure
from rnnstream.export import ParitySettings, export, quantize_file
from rnnstream.export.quality import char_lm_tokens, stream_bits_per_token
from rnnstream.models import RecurrentNet, RecurrentNetConfig

__all__ = ["MODELS", "PRECISIONS", "main", "run", "table"]

PRECISIONS = ("float32", "float16", "int8", "int4")
CELLS = ("lstm", "gru", "rnn_tanh")
MODELS = (*CELLS, "demo")
REFERENCE = {"num_layers": 2, "input_size": 64, "hidden_size": 256, "output_size": 64}
DEMO_FILES = {
    "float32": DEMO_ONNX,
    "float16": DEMO_FP16_ONNX,
    "int8": DEMO_INT8_ONNX,
    "int4": DEMO_INT4_ONNX,
}
CHUNK = 64


def reference_files(
    cell: str,
    folder: Path,
    parity_steps: int,
    hidden: int = REFERENCE["hidden_size"],
    precisions: tuple[str, ...] = PRECISIONS,
) -> dict[str, Path]:
    """The reference-shape model of ``cell`` at ``precisions`` (float32 always), each with its
    parity record."""
    torch.manual_seed(0)
    shape = {**REFERENCE, "hidden_size": hidden}
    net = RecurrentNet(RecurrentNetConfig(cell=cell, **shape)).eval()
    fp32 = folder / f"{cell}.float32.onnx"
    export(net, fp32, parity=ParitySettings(steps=parity_steps))
    files = {"float32": fp32}
    for precision in [p for p in PRECISIONS[1:] if p in precisions]:
        path = folder / f"{cell}.{precision}.onnx"
        quantize_file(fp32, path, precision, against=net, parity=ParitySettings(steps=parity_steps))
        files[precision] = path
    return files


def _timed(
    path: Path, model: rnnstream.Model, frame: object, chunk: np.ndarray, unpinned: bool
) -> dict[str, tuple]:
    step_stream, chunk_stream = model.stream(), model.stream()

    def step() -> None:
        step_stream.step(frame)

    def feed() -> None:
        chunk_stream.feed(chunk)

    methods = {"step": (step, 1), "chunk": (feed, len(chunk))}
    if unpinned:
        general_stream = rnnstream.load(path, pin_steps=False).stream()

        def step_unpinned() -> None:
            general_stream.step(frame)

        methods["step_unpinned"] = (step_unpinned, 1)
    return methods


def run(
    steps: int,
    rounds: int,
    bpc_tokens: int,
    parity_steps: int,
    hidden: int = REFERENCE["hidden_size"],
    models: tuple[str, ...] = MODELS,
    precisions: tuple[str, ...] = PRECISIONS,
    unpinned: bool = False,
) -> dict:
    """The rows (``"<model> <precision>"``): size, step median/p99 (and unpinned), chunk
    µs/frame, quality; ``models`` and ``precisions`` choose the rows (float32 always)."""
    rows: dict[str, dict] = {}
    methods: dict[str, tuple[Callable[[], object], int]] = {}
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((CHUNK, REFERENCE["input_size"])).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="rnnstream-precisions-") as tmp:
        loaded: dict[str, tuple[Path, rnnstream.Model]] = {}
        for cell in [c for c in CELLS if c in models]:
            files = reference_files(cell, Path(tmp), parity_steps, hidden, precisions)
            for precision, path in files.items():
                loaded[f"{cell} {precision}"] = (path, rnnstream.load(path))
        tokens = np.zeros(0, np.int64)
        if "demo" in models:
            for precision in [p for p in PRECISIONS if p in precisions or p == "float32"]:
                path = DEMO_FILES[precision]
                loaded[f"demo {precision}"] = (path, rnnstream.load(path))
            demo_sig = loaded["demo float32"][1].signature
            tokens = char_lm_tokens(demo_sig, "stdlib", 100_000 + bpc_tokens)[100_000:]
        for name, (path, model) in loaded.items():
            row: dict = {"size_bytes": path.stat().st_size}
            if name.startswith("demo"):
                row["bpc"] = round(stream_bits_per_token(model, tokens), 4)
                frame, chunk = int(tokens[0]), tokens[:CHUNK]
            else:
                parity = model.signature.parity
                row["max_rel_err"] = round(parity.max_rel_err, 4)
                frame, chunk = frames[0], frames
            rows[name] = row
            for what, method in _timed(path, model, frame, chunk, unpinned).items():
                methods[f"{name}|{what}"] = method
        for key, stats in measure(methods, steps, rounds).items():
            name, what = key.split("|")
            rows[name][f"{what}_median_us"] = round(stats["median_us"], 2)
            rows[name][f"{what}_p99_us"] = round(stats["p99_us"], 2)
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
    }
    return {"machine": machine, "hidden": hidden, "bpc_tokens": len(tokens), "rows": rows}


def table(report: dict) -> str:
    """The rows as a Markdown table, sizes and step times also as ratios to the float32 row
    (with ``--unpinned``: the unpinned step, its ratio to the unpinned float32 step, and what
    pinning gains)."""
    rows = report["rows"]
    unpinned = any("step_unpinned_median_us" in row for row in rows.values())
    extra = " unpinned µs | unpinned vs f32 | pinned gain |" if unpinned else ""
    lines = [
        "| model | precision | size KB | vs f32 | step µs median (p99) | step vs f32 "
        "| chunk µs/frame | quality |" + extra,
        "|---|---|---|---|---|---|---|---|" + "---|" * (3 if unpinned else 0),
    ]
    for name, row in rows.items():
        model, precision = name.split()
        base = rows[f"{model} float32"]
        quality = f"{row['bpc']:.4f} bpc" if "bpc" in row else f"rel err {row['max_rel_err']:.3f}"
        lines.append(
            f"| {model} | {precision} | {row['size_bytes'] / 1024:.0f} "
            f"| {base['size_bytes'] / row['size_bytes']:.1f}x smaller "
            f"| {row['step_median_us']:.1f} ({row['step_p99_us']:.0f}) "
            f"| {base['step_median_us'] / row['step_median_us']:.2f}x "
            f"| {row['chunk_median_us']:.1f} | {quality} |"
            + (_unpinned_columns(row, base) if unpinned else "")
        )
    return "\n".join(lines)


def _unpinned_columns(row: dict, base: dict) -> str:
    general = row["step_unpinned_median_us"]
    return (
        f" {general:.1f} | {base['step_unpinned_median_us'] / general:.2f}x "
        f"| {general / row['step_median_us']:.2f}x |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="calls per method per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--bpc-tokens", type=int, default=20_000)
    parser.add_argument("--parity-steps", type=int, default=300)
    parser.add_argument(
        "--hidden", type=int, default=REFERENCE["hidden_size"], help="(smoke tests)"
    )
    parser.add_argument("--models", default=",".join(MODELS), help="some of " + ",".join(MODELS))
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="float32 always")
    parser.add_argument(
        "--unpinned", action="store_true", help="also time steps without the pinned session"
    )
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("precisions.json"))
    args = parser.parse_args(argv)
    models, precisions = tuple(args.models.split(",")), tuple(args.precisions.split(","))
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(precisions) - set(PRECISIONS))
    if unknown:
        parser.error(f"unknown models or precisions: {unknown}")
    report = run(
        args.steps,
        args.rounds,
        args.bpc_tokens,
        args.parity_steps,
        args.hidden,
        models,
        precisions,
        args.unpinned,
    )
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))


if __name__ == "__main__":
    main()
