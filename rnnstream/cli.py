"""The ``rnnstream`` command line: thin commands over the Python API.

Commands that need torch (init, export, verify) import it only when they run, so the streaming
commands work on a runtime-only install.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from rnnstream.errors import ParityError, RnnStreamError

CELL_CHOICES = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


class _Group(click.Group):
    """Turns library errors into one clear line and exit code 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RnnStreamError as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from e


@click.group(cls=_Group)
@click.version_option(package_name="rnnstream")
@click.option("-q", "--quiet", is_flag=True, help="Only print results, no progress messages.")
def main(quiet: bool) -> None:
    """Export stateful LSTM/GRU/RNN models from PyTorch to ONNX and stream them with parity.

    \b
    Typical flow:
      rnnstream init --cell lstm --vocab printable -o model.safetensors
      rnnstream export model.safetensors -o model.onnx
      rnnstream info model.onnx
      echo "hello" | rnnstream stream model.onnx -
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[rnnstream] %(message)s"))
    logger = logging.getLogger("rnnstream")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


@main.command()
@click.option("--cell", type=click.Choice(CELL_CHOICES), default="lstm", show_default=True)
@click.option("--layers", "num_layers", type=click.IntRange(1), default=1, show_default=True)
@click.option("--hidden", "hidden_size", type=click.IntRange(1), default=128, show_default=True)
@click.option(
    "--input-size",
    type=click.IntRange(1),
    default=16,
    show_default=True,
    help="Frame size (ignored with --vocab).",
)
@click.option(
    "--vocab",
    type=click.Choice(["printable"]),
    default=None,
    help="Make a character model over this vocabulary (token ids in, logits out).",
)
@click.option(
    "--output-size",
    type=click.IntRange(0),
    default=None,
    help="Size of the linear head (0: none). Default: vocabulary size, or no head.",
)
@click.option("--proj-size", type=click.IntRange(0), default=0, help="LSTM projection size.")
@click.option("--bidirectional", is_flag=True, help="Bidirectional (exports, does not stream).")
@click.option("--no-bias", is_flag=True, help="Recurrent layers without bias.")
@click.option("--time-major", is_flag=True, help="Input laid out [time, batch, ...].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random init.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def init(
    output: Path, seed: int, vocab: str | None, no_bias: bool, time_major: bool, **arch: Any
) -> None:
    """Create an untrained model checkpoint (safetensors) with the given architecture."""
    import torch

    from rnnstream.models import (
        VOCABULARIES,
        RecurrentNet,
        RecurrentNetConfig,
        count_parameters,
        save_checkpoint,
    )

    torch.manual_seed(seed)
    try:
        config = RecurrentNetConfig(
            vocab=VOCABULARIES[vocab] if vocab else None,
            bias=not no_bias,
            batch_first=not time_major,
            **arch,
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    model = RecurrentNet(config)
    save_checkpoint(model, output)
    click.echo(
        f"wrote {output}: {config.cell} x{config.num_layers}, hidden {config.hidden_size}, "
        f"{count_parameters(model):,} parameters"
    )


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="ONNX file to write. Default: the checkpoint's name with .onnx.",
)
@click.option(
    "--steps",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Length of the random stream parity is measured on.",
)
@click.option(
    "--batch",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="Sequences in the parity stream.",
)
@click.option(
    "--chunk",
    type=click.IntRange(1),
    default=16,
    show_default=True,
    help="Chunk size of the chunked parity run.",
)
@click.option(
    "--atol",
    type=float,
    default=1e-5,
    show_default=True,
    help="Largest absolute error accepted; beyond it the export fails.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the parity input.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def export(
    checkpoint: Path,
    output: Path | None,
    steps: int,
    batch: int,
    chunk: int,
    atol: float,
    seed: int,
    as_json: bool,
) -> None:
    """Export CHECKPOINT to a streamable ONNX file and prove parity with PyTorch.

    The recurrent state becomes explicit graph inputs and outputs (h0, c0 -> hn, cn), batch and
    time are dynamic (one file serves single steps and chunks), and the signature with the parity
    record is stored inside the file. Parity steps the ONNX model through onnxruntime over a random
    stream, step by step and in chunks, against one PyTorch forward; if the largest absolute error
    exceeds --atol nothing is written and the command fails with the numbers.
    """
    from rnnstream.export import export as export_model
    from rnnstream.models import load_checkpoint

    model = load_checkpoint(checkpoint)
    config = model.config
    output = output or checkpoint.with_suffix(".onnx")
    try:
        report = export_model(
            model,
            output,
            kind=config.kind,
            vocab=config.vocab,
            parity_steps=steps,
            parity_batch=batch,
            parity_chunk=chunk,
            atol=atol,
            seed=seed,
        )
    except ParityError as e:
        _print_parity(e.report, as_json)
        raise
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(f"wrote {report.path} ({report.size_bytes / 1e6:.2f} MB) in {report.seconds:.1f} s")
    _print_parity(report.parity, as_json=False)


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--against",
    "checkpoint",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The PyTorch checkpoint the model was exported from.",
)
@click.option("--steps", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=2, show_default=True)
@click.option("--chunk", type=click.IntRange(1), default=16, show_default=True)
@click.option(
    "--atol", type=float, default=None, help="Tolerance. Default: the one recorded at export."
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(
    model_path: str,
    checkpoint: Path,
    steps: int,
    batch: int,
    chunk: int,
    atol: float | None,
    seed: int,
    as_json: bool,
) -> None:
    """Re-measure the parity of an exported MODEL against its PyTorch checkpoint.

    Exits with status 1 (and the numbers) when they disagree beyond the tolerance.
    """
    from rnnstream.export import verify as verify_model
    from rnnstream.models import load_checkpoint

    try:
        report = verify_model(
            model_path,
            load_checkpoint(checkpoint),
            steps=steps,
            batch=batch,
            chunk=chunk,
            atol=atol,
            seed=seed,
        )
    except ParityError as e:
        _print_parity(e.report, as_json)
        raise
    _print_parity(report, as_json)


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the signature as JSON.")
def info(model_path: str, as_json: bool) -> None:
    """Show MODEL's input, outputs, state pairs and recorded parity."""
    import rnnstream

    model = rnnstream.load(model_path)
    sig = model.signature
    if as_json:
        click.echo(json.dumps(sig.to_dict(), indent=2))
        return
    click.echo(
        f"{model_path}: kind {sig.kind}, precision {sig.precision}, "
        f"{'streamable' if sig.streamable else 'NOT streamable (whole sequences only)'}"
    )
    click.echo(f"  input   {sig.input.name}: {sig.input.dtype} {list(sig.input.shape)}")
    for out in sig.outputs:
        click.echo(f"  output  {out.name}: {out.dtype} {list(out.shape)}")
    for s in sig.states:
        click.echo(f"  state   {s.input} -> {s.output}: {s.dtype} {list(s.shape)}")
    if sig.vocab:
        click.echo(f"  vocab   {len(sig.vocab)} characters")
    if sig.parity:
        _print_parity(sig.parity, as_json=False)


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False))
@click.argument("source", type=click.File("r"), default="-")
@click.option(
    "--top",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Most likely next tokens shown per step (models with a vocabulary).",
)
@click.option(
    "--max-lines", type=click.IntRange(1), default=None, help="Stop after this many steps."
)
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
def stream(model_path: str, source: Any, top: int, max_lines: int | None, threads: int) -> None:
    """Stream SOURCE (a file, or - for stdin) through MODEL, one JSON line per step.

    A model with a vocabulary reads text and steps one character at a time, printing the most
    likely next characters; other models read one frame per line (a JSON list or comma-separated
    numbers) and print the output.
    """
    import rnnstream
    from rnnstream.runtime import Vocabulary

    model = rnnstream.load(model_path, threads=threads)
    s = model.stream()
    vocab = Vocabulary(model.signature.vocab) if model.signature.vocab else None
    items = _characters(source) if vocab else (_frame(line) for line in source if line.strip())
    for t, item in enumerate(items):
        if max_lines is not None and t >= max_lines:
            break
        if vocab is not None:
            logits = s.step(vocab.encode(item)[0])
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            best = np.argsort(-probs)[:top]
            record = {
                "t": t,
                "token": item,
                "next": [[vocab.chars[i], round(float(probs[i]), 4)] for i in best],
            }
        else:
            record = {"t": t, "y": np.round(s.step(item), 6).tolist()}
        click.echo(json.dumps(record))
        sys.stdout.flush()


def _characters(source: Any):
    while char := source.read(1):
        yield char


def _frame(line: str) -> np.ndarray:
    text = line.strip()
    try:
        values = json.loads(text) if text.startswith("[") else [float(v) for v in text.split(",")]
    except ValueError as e:
        raise click.ClickException(f"cannot read a frame from line {text[:60]!r}: {e}") from e
    return np.asarray(values, dtype=np.float32)


def _print_parity(parity: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(parity, indent=2))
        return
    verdict = "PASSED" if parity["passed"] else "FAILED"
    click.echo(
        f"parity {verdict}: max abs err {parity['max_abs_err']:.3g} (atol {parity['atol']:g}), "
        f"max rel err {parity['max_rel_err']:.3g}; {parity['steps']} steps x batch "
        f"{parity['batch']}; torch {parity['torch']}, onnxruntime {parity['onnxruntime']}"
    )
    for mode in ("step", "chunk", "sequence"):
        for tensor, err in parity.get(mode, {}).items():
            label = f"chunk (T={parity['chunk_size']})" if mode == "chunk" else mode
            click.echo(
                f"  {label:<14} {tensor:<10} max abs {err['max_abs_err']:.3g}  "
                f"max rel {err['max_rel_err']:.3g}"
            )
