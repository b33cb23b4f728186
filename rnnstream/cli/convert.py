"""Commands between PyTorch and ONNX: init, export, quantize and verify (they import torch only
when they run)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from rnnstream.cli.loading import load_torch_checkpoint
from rnnstream.cli.options import (
    CELL_CHOICES,
    EXISTING_FILE,
    count_option,
    eval_options,
    json_flag,
    output_option,
    parity_options,
    seed_option,
)
from rnnstream.cli.render import print_parity, print_report
from rnnstream.errors import ParityError

PRECISION_NAMES = {"int8": "int8", "int4": "int4", "fp16": "float16"}
BLOCK_SIZE_HELP = "int4 only: weights per 4-bit scale (16, 32, 64, 128 or 256). Default: 32."


@click.command()
@click.option("--cell", type=click.Choice(CELL_CHOICES), default="lstm", show_default=True)
@count_option("--layers", "num_layers", default=1)
@count_option("--hidden", "hidden_size", default=128)
@count_option("--input-size", default=16, help="Frame size (ignored with --vocab).")
@click.option(
    "--vocab",
    type=click.Choice(["printable"]),
    help="Make a character model over this vocabulary (token ids in, logits out).",
)
@click.option(
    "--output-size",
    type=click.IntRange(0),
    help="Size of the linear head (0: none). Default: vocabulary size, or no head.",
)
@click.option("--proj-size", type=click.IntRange(0), default=0, help="LSTM projection size.")
@click.option("--bidirectional", is_flag=True, help="Bidirectional (exports, does not stream).")
@click.option("--no-bias", is_flag=True, help="Recurrent layers without bias.")
@click.option("--time-major", is_flag=True, help="Input laid out [time, batch, ...].")
@seed_option(0, "Seed of the random init.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def init(
    output: Path, seed: int, vocab: str | None, no_bias: bool, time_major: bool, **arch: Any
) -> None:
    """Create an untrained model checkpoint (safetensors) with the given architecture."""
    import torch

    from rnnstream.models import VOCABULARIES, RecurrentNet, RecurrentNetConfig, save_checkpoint
    from rnnstream.models import count_parameters as count

    vocabulary = VOCABULARIES[vocab] if vocab else None
    try:
        config = RecurrentNetConfig(
            vocab=vocabulary, bias=not no_bias, batch_first=not time_major, **arch
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    torch.manual_seed(seed)
    model = RecurrentNet(config)
    save_checkpoint(model, output)
    description = f"{config.cell} x{config.num_layers}, hidden {config.hidden_size}"
    click.echo(f"wrote {output}: {description}, {count(model):,} parameters")


@click.command()
@click.argument("checkpoint", type=EXISTING_FILE)
@output_option("ONNX file to write. Default: the checkpoint's name with .onnx.")
@parity_options(
    seed=0,
    atol_help="Largest absolute error accepted; beyond it the export fails. Default: the "
    "precision's (1e-5 for float32).",
)
@click.option(
    "--quantize",
    "quantize_to",
    type=click.Choice(sorted(PRECISION_NAMES)),
    help="Write an int8 (dynamic quantisation), int4 (4-bit weights) or fp16 model instead of "
    "float32.",
)
@click.option("--fp16", is_flag=True, help="Same as --quantize fp16.")
@click.option("--block-size", type=int, help=BLOCK_SIZE_HELP)
@eval_options
@json_flag("Print the report as JSON.")
def export(
    checkpoint: Path,
    output: Path | None,
    quantize_to: str | None,
    fp16: bool,
    block_size: int | None,
    as_json: bool,
    **settings: Any,
) -> None:
    """Export CHECKPOINT to a streamable ONNX file and prove parity with PyTorch.

    The recurrent state becomes explicit graph inputs and outputs (h0, c0 -> hn, cn), batch and
    time are dynamic (one file serves single steps and chunks), and the signature with the parity
    record is stored inside the file. Parity steps the ONNX model through onnxruntime over a random
    stream, step by step and in chunks, against one PyTorch forward; if the errors exceed the
    tolerance nothing is written and the command fails with the numbers.

    With --quantize int8, int4 or --fp16 the file is a smaller model whose tolerance is that
    precision's (see `rnnstream quantize --help`); a character LM's parity record also holds its
    bits per character next to PyTorch's.
    """
    if fp16 and quantize_to not in (None, "fp16"):
        raise click.UsageError(f"--fp16 and --quantize {quantize_to} exclude each other")
    name = "fp16" if fp16 else quantize_to
    model = load_torch_checkpoint(checkpoint)
    output = output or checkpoint.with_suffix(f".{name}.onnx" if name else ".onnx")
    precision = PRECISION_NAMES[name] if name else "float32"
    with _parity_shown(as_json):
        report = _export(model, output, precision, block_size, **settings)
    print_report(report, as_json)


def _export(
    model: Any, output: Path, precision: str, block_size: int | None, **settings: Any
) -> Any:
    """``rnnstream.export.export``: the checkpoint's model describes itself."""
    from rnnstream.export import ParitySettings
    from rnnstream.export import export as export_model

    parity = ParitySettings(**settings)
    return export_model(model, output, parity=parity, precision=precision, block_size=block_size)


@contextmanager
def _parity_shown(as_json: bool) -> Iterator[None]:
    """Prints the parity record of a :class:`ParityError` before it propagates as one line."""
    try:
        yield
    except ParityError as e:
        print_parity(e.report, as_json)
        raise


@click.command()
@click.argument("model_path", metavar="MODEL", type=EXISTING_FILE)
@click.option("--int8", "precision", flag_value="int8", help="Dynamic int8 quantisation.")
@click.option("--int4", "precision", flag_value="int4", help="4-bit weights (MatMulNBits).")
@click.option("--fp16", "precision", flag_value="float16", help="float16 weights.")
@click.option("--block-size", type=int, help=BLOCK_SIZE_HELP)
@output_option(
    "ONNX file to write. Default: MODEL's name with .int8.onnx, .int4.onnx or .fp16.onnx."
)
@click.option(
    "--against",
    "checkpoint",
    type=EXISTING_FILE,
    help="Measure parity against this PyTorch checkpoint instead of the float32 MODEL.",
)
@parity_options(seed=0, atol_help="Override the precision's absolute limit.")
@eval_options
@json_flag("Print the report as JSON.")
def quantize(
    model_path: Path,
    precision: str | None,
    block_size: int | None,
    output: Path | None,
    checkpoint: Path | None,
    as_json: bool,
    **settings: Any,
) -> None:
    """Write a float32 MODEL exported by rnnstream as an int8, int4 or fp16 model, with parity.

    \b
    --int8  onnxruntime's dynamic quantisation: int8 weights (LSTM as DynamicQuantizeLSTM; a
            GRU/RNN model steps through one If whose branch runs int8 MatMul cells and runs
            chunks on the float operators over the same int8 weights), activations quantised at
            each run. About 4x smaller (GRU/RNN about 2x: the step keeps its own int8 copy).
    --int4  4-bit weights in blocks of --block-size (com.microsoft MatMulNBits; every recurrent
            layer rewritten as an explicit cell, the head and embedding 4-bit too). About 6x
            smaller; its tolerance is mostly the bits per character (+0.05).
    --fp16  float16 weights, computed in float32 (onnxruntime's CPU provider has no float16
            kernels for these operators). 2x smaller, nearly exact.

    Inputs, outputs and states stay float32, so streams use the file as before. Parity is
    measured over a random stream against the float32 MODEL (or --against the checkpoint), within
    the precision's tolerance; a character LM's bits per character are scored next to the
    reference's. Beyond the tolerance nothing is written and the command fails with the numbers.
    """
    from rnnstream.export import ParitySettings, quantize_file

    if precision is None:
        raise click.UsageError("choose --int8, --int4 or --fp16")
    against = None
    if checkpoint is not None:
        against = load_torch_checkpoint(checkpoint, exported_as=model_path)
    tag = "fp16" if precision == "float16" else precision
    output = output or model_path.with_suffix(f".{tag}.onnx")
    with _parity_shown(as_json):
        parity = ParitySettings(**settings)
        report = quantize_file(
            str(model_path),
            output,
            precision,
            against=against,
            parity=parity,
            block_size=block_size,
        )
    print_report(report, as_json)


@click.command()
@click.argument("model_path", metavar="MODEL", type=EXISTING_FILE)
@click.option(
    "--against",
    "checkpoint",
    required=True,
    type=EXISTING_FILE,
    help="The PyTorch checkpoint the model was exported from.",
)
@parity_options(seed=1, atol_help="Tolerance. Default: the one recorded at export.")
@json_flag("Print the report as JSON.")
def verify(model_path: Path, checkpoint: Path, as_json: bool, **settings: Any) -> None:
    """Re-measure the parity of an exported MODEL against its PyTorch checkpoint.

    The tolerance is the one recorded for MODEL's precision (float32, float16, int8 or int4); a
    lower-precision character LM's bits per character are re-measured too. Exits with status 1
    (and the numbers) when they disagree beyond the tolerance.
    """
    from rnnstream.export import ParitySettings
    from rnnstream.export import verify as verify_model

    module = load_torch_checkpoint(checkpoint, exported_as=model_path)
    with _parity_shown(as_json):
        report = verify_model(str(model_path), module, ParitySettings(**settings))
    print_parity(report, as_json)
