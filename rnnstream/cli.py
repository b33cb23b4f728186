"""The ``rnnstream`` command line: thin commands over the Python API.

Commands that need torch (init, export, verify) import it only when they run, so the streaming
commands work on a runtime-only install.
"""

from __future__ import annotations

import json
import logging
import sys
from itertools import islice
from pathlib import Path
from typing import Any

import click
import numpy as np

from rnnstream.errors import ParityError, RnnStreamError
from rnnstream.readers import FORMATS, batched, read_characters, read_frames, read_npy

CELL_CHOICES = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
PRECISION_NAMES = {"int8": "int8", "fp16": "float16"}


class _Group(click.Group):
    """Turns library errors into one clear line and exit code 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RnnStreamError as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from e


class _CliHandler(logging.StreamHandler):
    """Progress messages of the command line (kept apart from handlers the caller installs)."""


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
    logger = logging.getLogger("rnnstream")
    for old in [h for h in logger.handlers if isinstance(h, _CliHandler)]:
        logger.removeHandler(old)  # one handler, on this invocation's stderr
    handler = _CliHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[rnnstream] %(message)s"))
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


def _eval_options(command: Any) -> Any:
    """--eval-data and --eval-tokens: where a quantised model's task metric is scored."""
    command = click.option(
        "--eval-tokens",
        type=click.IntRange(2),
        default=100_000,
        show_default=True,
        help="Validation tokens scored for the task metric.",
    )(command)
    return click.option(
        "--eval-data",
        default="stdlib",
        show_default=True,
        help="Validation text of a character LM's bits-per-character score: 'stdlib' (the "
        "standard library's validation files) or a UTF-8 text file (its last 5%).",
    )(command)


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
    default=None,
    help="Largest absolute error accepted; beyond it the export fails. Default: the "
    "precision's (1e-5 for float32).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the parity input.")
@click.option(
    "--quantize",
    "quantize_to",
    type=click.Choice(sorted(PRECISION_NAMES)),
    default=None,
    help="Write an int8 (dynamic quantisation) or fp16 model instead of float32.",
)
@click.option("--fp16", is_flag=True, help="Same as --quantize fp16.")
@_eval_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def export(
    checkpoint: Path,
    output: Path | None,
    steps: int,
    batch: int,
    chunk: int,
    atol: float | None,
    seed: int,
    quantize_to: str | None,
    fp16: bool,
    eval_data: str,
    eval_tokens: int,
    as_json: bool,
) -> None:
    """Export CHECKPOINT to a streamable ONNX file and prove parity with PyTorch.

    The recurrent state becomes explicit graph inputs and outputs (h0, c0 -> hn, cn), batch and
    time are dynamic (one file serves single steps and chunks), and the signature with the parity
    record is stored inside the file. Parity steps the ONNX model through onnxruntime over a random
    stream, step by step and in chunks, against one PyTorch forward; if the errors exceed the
    tolerance nothing is written and the command fails with the numbers.

    With --quantize int8 or --fp16 the file is a smaller model whose tolerance is that precision's
    (see `rnnstream quantize --help`); a character LM's parity record also holds its bits per
    character next to PyTorch's.
    """
    from rnnstream.export import export as export_model
    from rnnstream.models import load_checkpoint

    if fp16 and quantize_to not in (None, "fp16"):
        raise click.UsageError("--fp16 and --quantize int8 exclude each other")
    name = "fp16" if fp16 else quantize_to
    precision = PRECISION_NAMES[name] if name else "float32"
    model = load_checkpoint(checkpoint)
    config = model.config
    output = output or checkpoint.with_suffix(f".{name}.onnx" if name else ".onnx")
    try:
        report = export_model(
            model,
            output,
            kind=config.kind,
            vocab=config.vocab,
            bos=getattr(config, "bos", None),
            eos=getattr(config, "eos", None),
            labels=getattr(config, "labels", None),
            parity_steps=steps,
            parity_batch=batch,
            parity_chunk=chunk,
            atol=atol,
            seed=seed,
            precision=precision,
            eval_data=eval_data,
            eval_tokens=eval_tokens,
        )
    except ParityError as e:
        _print_parity(e.report, as_json)
        raise
    _print_report(report, as_json)


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(f"wrote {report.path} ({report.size_bytes / 1e6:.2f} MB) in {report.seconds:.1f} s")
    _print_parity(report.parity, as_json=False)


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False))
@click.option("--int8", "precision", flag_value="int8", help="Dynamic int8 quantisation.")
@click.option("--fp16", "precision", flag_value="float16", help="float16 weights.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="ONNX file to write. Default: MODEL's name with .int8.onnx or .fp16.onnx.",
)
@click.option(
    "--against",
    "checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Measure parity against this PyTorch checkpoint instead of the float32 MODEL.",
)
@click.option("--steps", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=2, show_default=True)
@click.option("--chunk", type=click.IntRange(1), default=16, show_default=True)
@click.option("--atol", type=float, default=None, help="Override the precision's absolute limit.")
@click.option("--seed", type=int, default=0, show_default=True)
@_eval_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def quantize(
    model_path: str,
    precision: str | None,
    output: Path | None,
    checkpoint: Path | None,
    steps: int,
    batch: int,
    chunk: int,
    atol: float | None,
    seed: int,
    eval_data: str,
    eval_tokens: int,
    as_json: bool,
) -> None:
    """Write a float32 MODEL exported by rnnstream as an int8 or fp16 model, with parity.

    \b
    --int8  onnxruntime's dynamic quantisation: int8 weights (LSTM as DynamicQuantizeLSTM; GRU
            and RNN rewritten as a Scan over MatMuls so that their weights quantise too),
            activations quantised at each run. About 4x smaller.
    --fp16  float16 weights, computed in float32 (onnxruntime's CPU provider has no float16
            kernels for these operators). 2x smaller, nearly exact.

    Inputs, outputs and states stay float32, so streams use the file as before. Parity is
    measured over a random stream against the float32 MODEL (or --against the checkpoint), within
    the precision's tolerance; a character LM's bits per character are scored next to the
    reference's. Beyond the tolerance nothing is written and the command fails with the numbers.
    """
    from rnnstream.export import quantize_file

    if precision is None:
        raise click.UsageError("choose --int8 or --fp16")
    torch_model = None
    if checkpoint is not None:
        from rnnstream.models import load_checkpoint

        torch_model = load_checkpoint(checkpoint)
    tag = "int8" if precision == "int8" else "fp16"
    output = output or Path(model_path).with_suffix(f".{tag}.onnx")
    try:
        report = quantize_file(
            model_path,
            output,
            precision,
            against=torch_model,
            steps=steps,
            batch=batch,
            chunk=chunk,
            atol=atol,
            seed=seed,
            eval_data=eval_data,
            eval_tokens=eval_tokens,
        )
    except ParityError as e:
        _print_parity(e.report, as_json)
        raise
    _print_report(report, as_json)


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

    The tolerance is the one recorded for MODEL's precision (float32, float16 or int8); an int8 or
    fp16 character LM's bits per character are re-measured too. Exits with status 1 (and the
    numbers) when they disagree beyond the tolerance.
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


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, other = value.partition("=")
        if not sep or not name or not other:
            raise click.BadParameter(f"expected NAME=VALUE, got {value!r}", param_hint=what)
        pairs[name] = other
    return pairs


def _load(model_path: str, threads: int, states: tuple[str, ...], consts: tuple[str, ...]):
    import rnnstream

    constants = {k: float(v) for k, v in _pairs(consts, "--const").items()}
    return rnnstream.load(
        model_path,
        threads=threads,
        state_map=_pairs(states, "--state") or None,
        constants=constants or None,
    )


_state_option = click.option(
    "--state",
    "states",
    multiple=True,
    metavar="IN=OUT",
    help="Pair a state input with its output (models without rnnstream metadata). Repeatable.",
)
_const_option = click.option(
    "--const",
    "consts",
    multiple=True,
    metavar="NAME=VALUE",
    help="Pin an extra model input to a constant, e.g. --const sr=16000. Repeatable.",
)


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@_state_option
@_const_option
def info(model_path: str, as_json: bool, states: tuple[str, ...], consts: tuple[str, ...]) -> None:
    """Show MODEL's inputs, outputs, state pairs, size, compute per step and recorded parity.

    Works on any stateful ONNX model: without rnnstream metadata the state pairs are found from
    names and shapes (or given with --state).
    """
    model = _load(model_path, 1, states, consts)
    sig = model.signature
    cost = sig.cost or _graph_cost(model_path)
    session = model.session
    if as_json:
        click.echo(
            json.dumps(
                {
                    "signature": sig.to_dict(),
                    "cost": cost,
                    "inputs": [_arg(a) for a in session.get_inputs()],
                    "outputs": [_arg(a) for a in session.get_outputs()],
                },
                indent=2,
            )
        )
        return
    origin = "rnnstream signature" if sig.kind != "discovered" else "discovered from names/shapes"
    click.echo(
        f"{model_path}: kind {sig.kind} ({origin}), precision {sig.precision}, "
        f"{'streamable' if sig.streamable else 'NOT streamable (whole sequences only)'}"
    )
    for a in session.get_inputs():
        click.echo(f"  input   {a.name}: {a.type} {a.shape}")
    for a in session.get_outputs():
        click.echo(f"  output  {a.name}: {a.type} {a.shape}")
    click.echo(
        f"  stream input {sig.input.name}: batch axis {sig.input.batch_axis}, "
        f"time axis {sig.input.time_axis}"
    )
    for s in sig.states:
        click.echo(
            f"  state   {s.input} -> {s.output}: {s.dtype} {list(s.shape)}, "
            f"batch axis {s.batch_axis}"
        )
    for name, value in model.constants.items():
        click.echo(f"  const   {name} = {value.tolist()}")
    if sig.vocab:
        click.echo(f"  vocab   {len(sig.vocab)} characters")
    if sig.labels:
        click.echo(f"  labels  {', '.join(sig.labels)}")
    if cost:
        click.echo(
            f"  size    {cost['parameters']:,} parameters, "
            f"{cost['macs_per_step']:,} multiply-adds per step (batch 1)"
        )
    if sig.parity:
        _print_parity(sig.parity, as_json=False)


def _arg(a: Any) -> dict:
    return {"name": a.name, "type": a.type, "shape": a.shape}


def _graph_cost(model_path: str) -> dict | None:
    """Parameters and multiply-adds from the graph itself, when onnx is installed."""
    try:
        import onnx

        from rnnstream.graphcost import graph_cost
    except ImportError:
        return None
    return graph_cost(onnx.load(model_path, load_external_data=False))


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False))
@click.argument("source", default="-")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="auto",
    show_default=True,
    help="Input format. auto: text for models with a vocabulary, .npy by extension, "
    "else JSON lists or CSV rows per line.",
)
@click.option(
    "--chunk",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Steps per onnxruntime run (feed); output is still one line per step.",
)
@click.option(
    "--top",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Most likely next tokens (or labels) shown per step (models with a vocabulary or labels).",
)
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Stop after N steps.")
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="onnxruntime intra-op threads.",
)
@_state_option
@_const_option
def stream(
    model_path: str,
    source: str,
    fmt: str,
    chunk: int,
    top: int,
    max_steps: int | None,
    threads: int,
    states: tuple[str, ...],
    consts: tuple[str, ...],
) -> None:
    """Stream SOURCE (a file, or - for stdin) through MODEL: one JSON line per step, flushed.

    A model with a vocabulary reads text, one character per step, and prints the most likely
    next characters (a classifier or tagger: its most likely labels); other models read frames
    (a JSON list or comma-separated numbers per line, or an .npy file of [T, ...] frames) and
    print the output. Ends at end of input or Ctrl-C.
    """
    from rnnstream.runtime import Vocabulary

    model = _load(model_path, threads, states, consts)
    s = model.stream()
    if model.signature.bos is not None:
        s.step(model.signature.bos)  # a language model starts from its begin-of-sequence token
    sig = model.signature
    vocab = Vocabulary(sig.vocab) if sig.vocab else None
    if fmt == "npy" or (fmt == "auto" and source.endswith(".npy")):
        items: Any = iter(read_npy(source))
    else:
        text = click.open_file(source, "r")
        if vocab is not None and fmt in ("auto", "text"):
            items = (int(vocab.encode(c)[0]) for c in read_characters(text))
        else:
            items = read_frames(text, fmt)
    if max_steps is not None:
        items = islice(items, max_steps)
    t = 0
    try:
        for group in batched(items, chunk):
            ys = s.feed(np.asarray(group)) if chunk > 1 else [s.step(group[0])]
            for x, y in zip(group, ys):
                click.echo(json.dumps(_step_record(t, x, y, vocab, top, sig.labels)))
                t += 1
            sys.stdout.flush()
    except KeyboardInterrupt:
        click.echo(f"interrupted after {t} steps", err=True)
        sys.exit(130)


def _step_record(
    t: int, x: Any, y: Any, vocab: Any, top: int, labels: tuple[str, ...] | None
) -> dict:
    if isinstance(y, dict):
        return {"t": t, **{k: np.round(v, 6).tolist() for k, v in y.items()}}
    if vocab is None and labels is None:
        return {"t": t, "y": np.round(y, 6).tolist()}
    probs = np.exp(y - y.max())
    probs /= probs.sum()
    best = np.argsort(-probs)[:top]
    record: dict[str, Any] = {"t": t}
    if vocab is not None:
        record["token"] = vocab.decode([x])
    if labels is not None:  # a classifier or tagger: the most likely classes
        record["labels"] = [[labels[i], round(float(probs[i]), 4)] for i in best]
    else:
        record["next"] = [[vocab.decode([i]), round(float(probs[i]), 4)] for i in best]
    return record


@main.command()
@click.argument(
    "model_path", metavar="MODEL", required=False, type=click.Path(exists=True, dir_okay=False)
)
@click.option(
    "--against",
    "checkpoint",
    type=click.Path(exists=True, dir_okay=False),
    help="PyTorch checkpoint of MODEL, to time PyTorch eager stepping as well.",
)
@click.option(
    "--steps",
    type=click.IntRange(10),
    default=300,
    show_default=True,
    help="Timed calls per method per round.",
)
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Interleaved rounds (methods take turns, so noise hits all alike).",
)
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    help="Also write the results as JSON to this file ('-' for stdout only).",
)
@_state_option
@_const_option
def bench(
    model_path: str | None,
    checkpoint: str | None,
    steps: int,
    rounds: int,
    threads: int,
    json_path: str | None,
    states: tuple[str, ...],
    consts: tuple[str, ...],
) -> None:
    """Time per-step latency of MODEL: bare onnxruntime, Stream, StreamPool and PyTorch.

    Reports medians and p99 per stream-step and their ratios, all measured in one run. Without
    MODEL, builds and exports the reference model (2-layer LSTM 64->256, head 256->64; needs the
    export extra) and times PyTorch eager on it too.
    """
    from rnnstream.bench import run_benchmark

    torch_module = None
    if model_path is None:
        model_path, torch_module = _reference_model()
    elif checkpoint:
        from rnnstream.models import load_checkpoint

        torch_module = load_checkpoint(checkpoint)
    model = _load(model_path, threads, states, consts)
    logging.getLogger(__name__).info("timing %s: %d rounds x %d steps", model_path, rounds, steps)
    result = run_benchmark(model, torch_module, steps=steps, rounds=rounds)
    if json_path == "-":
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(result.table())
    if json_path:
        Path(json_path).write_text(json.dumps(result.to_dict(), indent=2))


def _reference_model() -> tuple[str, Any]:
    import tempfile

    import torch

    from rnnstream.export import export as export_model
    from rnnstream.models import RecurrentNet, RecurrentNetConfig

    torch.manual_seed(0)
    config = RecurrentNetConfig(
        cell="lstm", num_layers=2, input_size=64, hidden_size=256, output_size=64
    )
    module = RecurrentNet(config).eval()
    path = str(Path(tempfile.mkdtemp(prefix="rnnstream-bench-")) / "reference.onnx")
    export_model(module, path, parity_steps=200)
    return path, module


def _print_parity(parity: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(parity, indent=2))
        return
    verdict = "PASSED" if parity["passed"] else "FAILED"
    rtol = parity.get("rtol", 0.0)
    limits = f"atol {parity['atol']:g}" + (f", rtol {rtol:g}" if rtol else "")
    click.echo(
        f"parity {verdict} ({parity.get('precision', 'float32')} vs "
        f"{parity.get('reference', 'pytorch')}): max abs err {parity['max_abs_err']:.3g}, "
        f"max rel err {parity['max_rel_err']:.3g} ({limits}); {parity['steps']} steps x batch "
        f"{parity['batch']}; torch {parity['torch']}, onnxruntime {parity['onnxruntime']}"
    )
    task = parity.get("task")
    if task:
        click.echo(
            f"  {task['metric']} on {task['data']} validation ({task['tokens']} tokens): "
            f"{task['value']:.4f} vs {task['reference']:.4f} float32, "
            f"+{task['increase']:.4f} (max +{task['max_increase']:g})"
        )
    for mode in ("step", "chunk", "sequence"):
        for tensor, err in parity.get(mode, {}).items():
            label = f"chunk (T={parity['chunk_size']})" if mode == "chunk" else mode
            click.echo(
                f"  {label:<14} {tensor:<10} max abs {err['max_abs_err']:.3g}  "
                f"max rel {err['max_rel_err']:.3g}"
            )


@main.group("train")
def train_group() -> None:
    """Train a model from scratch (needs the export extra: torch). See `train KIND --help`."""


def _optimizer_options(batch: int, steps: int, lr: float) -> Any:
    """The options every `train` command beyond charlm shares: optimisation, seed, output."""
    options = [
        click.option(
            "--steps",
            type=click.IntRange(1),
            default=steps,
            show_default=True,
            help="Optimizer steps.",
        ),
        click.option("--batch", type=click.IntRange(1), default=batch, show_default=True),
        click.option(
            "--lr", type=click.FloatRange(0, min_open=True), default=lr, show_default=True
        ),
        click.option(
            "--min-lr",
            type=click.FloatRange(0, 1, min_open=True),
            default=0.1,
            show_default=True,
            help="Cosine decay to lr x this by the last step (1: constant).",
        ),
        click.option(
            "--clip",
            type=click.FloatRange(0, min_open=True),
            default=1.0,
            show_default=True,
            help="Gradient-norm clipping.",
        ),
        click.option(
            "--accumulate",
            type=click.IntRange(1),
            default=1,
            show_default=True,
            help="Batches whose gradients add up to one optimizer step.",
        ),
        click.option(
            "--eval-every",
            type=click.IntRange(0),
            default=0,
            show_default=True,
            help="Validate every N steps (always at epoch ends and after the last step).",
        ),
        click.option(
            "--save-every",
            type=click.IntRange(0),
            default=500,
            show_default=True,
            help="Checkpoint every N steps (always after the last step).",
        ),
        click.option(
            "--seed", type=int, default=0, show_default=True, help="Seeds init, data and dropout."
        ),
        click.option("--threads", type=click.IntRange(1), default=1, show_default=True),
        click.option(
            "--resume",
            is_flag=True,
            help="Continue the run saved in --output up to --steps in total (the architecture "
            "comes from the checkpoint; give the same data options).",
        ),
        click.option(
            "-o",
            "--output",
            type=click.Path(dir_okay=False, path_type=Path),
            required=True,
            help="Checkpoint to write (safetensors); the optimizer state goes next to it as "
            "NAME.train.safetensors.",
        ),
    ]

    def apply(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def _model_options(hidden: int, layers: int) -> Any:
    """Architecture options shared by the classifier, tagger and forecaster."""
    options = [
        click.option("--cell", type=click.Choice(CELL_CHOICES), default="lstm", show_default=True),
        click.option(
            "--layers", "num_layers", type=click.IntRange(1), default=layers, show_default=True
        ),
        click.option(
            "--hidden", "hidden_size", type=click.IntRange(1), default=hidden, show_default=True
        ),
        click.option("--dropout", type=click.FloatRange(0, 1), default=0.0, show_default=True),
    ]

    def apply(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def _run_training(
    build: Any, make_task: Any, describe: str, opts: dict[str, Any], metrics: dict[str, str]
) -> None:
    """Build (or resume) the model and task, train with a progress bar, print the metrics."""
    import torch

    from rnnstream.models import count_parameters, load_checkpoint
    from rnnstream.train import TrainConfig, train

    torch.set_num_threads(opts["threads"])
    output = opts["output"]
    try:
        if opts["resume"]:
            model = load_checkpoint(output)
        else:
            torch.manual_seed(opts["seed"])
            model = build()
        task = make_task(model)
        config = TrainConfig(
            steps=opts["steps"],
            lr=opts["lr"],
            min_lr_fraction=opts["min_lr"],
            clip=opts["clip"],
            accumulate=opts["accumulate"],
            eval_every=opts["eval_every"],
            save_every=opts["save_every"],
            seed=opts["seed"],
        )
    except (OSError, ValueError) as e:
        raise click.UsageError(str(e)) from e
    c = model.config
    click.echo(describe, err=True)
    click.echo(
        f"{type(model).__name__} {c.cell} x{c.num_layers}, hidden {c.hidden_size}: "
        f"{count_parameters(model):,} parameters; {task.batches_per_epoch} batches of "
        f"{opts['batch']} per epoch",
        err=True,
    )

    def show(record: dict) -> str:
        return ", ".join(f"{label} {record['val_' + m]:.4f}" for m, label in metrics.items())

    with click.progressbar(
        length=opts["steps"],
        label="training",
        file=sys.stderr,
        item_show_func=lambda info: info and f"loss {info.loss:.4f}",
    ) as bar:

        def on_step(info: Any) -> None:
            bar.update(info.step - bar.pos, info)

        result = train(
            model, task, config, checkpoint=output, resume=opts["resume"], on_step=on_step
        )
    click.echo(
        f"wrote {output}: {result.steps} steps in {result.seconds / 60:.1f} min; "
        f"validation {show(result.metrics)}"
    )


@train_group.command("charlm")
@click.option(
    "--data",
    default="stdlib",
    show_default=True,
    help="'stdlib': this Python's standard library sources, split by file (5% validation); "
    "or the path of a UTF-8 text file (its last lines are the validation text).",
)
@click.option("--embed", "embed_size", type=click.IntRange(1), default=64, show_default=True)
@click.option(
    "--vocab",
    type=click.Choice(["printable", "data"]),
    default="printable",
    show_default=True,
    help="printable: string.printable; data: the characters of the training text. Other "
    "characters become U+FFFD. Token ids 0 and 1 are BOS and EOS.",
)
@click.option(
    "--seq-len",
    type=click.IntRange(1),
    default=128,
    show_default=True,
    help="Truncated-BPTT length: the state carries over, gradients stop at each chunk.",
)
@_model_options(hidden=256, layers=2)
@_optimizer_options(batch=32, steps=1000, lr=2e-3)
def train_charlm(
    data: str,
    embed_size: int,
    vocab: str,
    seq_len: int,
    cell: str,
    num_layers: int,
    hidden_size: int,
    dropout: float,
    **opts: Any,
) -> None:
    """Train a character language model (CharLM) with teacher forcing.

    Adam with cosine learning-rate decay, gradient-norm clipping and accumulation; truncated BPTT
    over long streams (documents joined as BOS text EOS and cut into --batch parallel lanes).
    Shows a progress bar, and the training loss and validation bits per character at each
    evaluation. The same --seed (and --threads) gives the same weights.

    \b
    The shipped demo model (`make demo-model`):
      rnnstream train charlm --data stdlib --steps 6000 -o charlm.safetensors
      rnnstream export charlm.safetensors
    """
    from rnnstream.models import CharLM, CharLMConfig
    from rnnstream.train import LanguageModelTask, corpus_chars, load_corpus

    try:
        corpus = load_corpus(data)
    except (OSError, ValueError) as e:
        raise click.UsageError(str(e)) from e

    def build() -> Any:
        chars = corpus_chars(corpus.train) if vocab == "data" else CharLMConfig().chars
        config = CharLMConfig(
            cell=cell,
            num_layers=num_layers,
            hidden_size=hidden_size,
            embed_size=embed_size,
            chars=chars,
            dropout=dropout,
        )
        return CharLM(config)

    def make_task(model: Any) -> Any:
        return LanguageModelTask.from_corpus(
            corpus, model.config, opts["batch"], seq_len, opts["seed"]
        )

    metrics = {"loss": "loss", "bpc": "bits per character"}
    _run_training(build, make_task, corpus.describe(), opts, metrics)


@train_group.command("classifier")
@click.option(
    "--kinds",
    default="",
    help="Comma-separated file kinds to tell apart (default: every kind with enough files "
    "here): python, c_header, shell, perl, text, xml.",
)
@click.option(
    "--max-files", type=click.IntRange(2), default=300, show_default=True, help="Files per kind."
)
@click.option(
    "--min-len", type=click.IntRange(1), default=16, show_default=True, help="Shortest crop."
)
@click.option(
    "--max-len",
    type=click.IntRange(1),
    default=256,
    show_default=True,
    help="Longest crop; validation reads the first MAX_LEN bytes of each file.",
)
@click.option("--embed", "embed_size", type=click.IntRange(1), default=32, show_default=True)
@click.option(
    "--bidirectional",
    is_flag=True,
    help="Offline classifier: reads the whole sequence both ways (exports, does not stream).",
)
@_model_options(hidden=128, layers=1)
@_optimizer_options(batch=32, steps=1000, lr=3e-3)
def train_classifier(
    kinds: str,
    max_files: int,
    min_len: int,
    max_len: int,
    embed_size: int,
    bidirectional: bool,
    cell: str,
    num_layers: int,
    hidden_size: int,
    dropout: float,
    **opts: Any,
) -> None:
    """Train a SequenceClassifier to tell which kind of file it reads, as the bytes stream in.

    The data are files every machine has: the Python standard library (python), /usr/include
    (c_header), scripts in /usr/bin told by their shebang (shell, perl), Perl modules, text and
    Markdown docs, XML under /usr/share. Split by file (20% validation, the same on every run);
    training reads random crops of --min-len to --max-len bytes (padded batches with masks),
    validation the first --max-len bytes of each file. The model gives a label estimate after
    every byte (trained on every step's estimate); the metric is the accuracy of the last one.
    """
    from rnnstream.models import SequenceClassifier, SequenceClassifierConfig
    from rnnstream.train import ClassificationTask, load_file_kinds

    try:
        data = load_file_kinds(
            tuple(k.strip() for k in kinds.split(",")) if kinds else None, max_files=max_files
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from e

    def build() -> Any:
        config = SequenceClassifierConfig(
            labels=data.labels,
            cell=cell,
            num_layers=num_layers,
            hidden_size=hidden_size,
            embed_size=embed_size,
            bidirectional=bidirectional,
            dropout=dropout,
        )
        return SequenceClassifier(config)

    def make_task(model: Any) -> Any:
        if model.config.labels != data.labels:
            raise ValueError(f"the checkpoint's labels {model.config.labels} are not {data.labels}")
        return ClassificationTask.from_file_kinds(
            data, opts["batch"], min_len, max_len, opts["seed"]
        )

    _run_training(build, make_task, data.describe(), opts, {"loss": "loss", "accuracy": "accuracy"})


@train_group.command("tagger")
@click.option(
    "--max-files",
    type=click.IntRange(2),
    default=400,
    show_default=True,
    help="Standard-library files to read.",
)
@click.option("--min-len", type=click.IntRange(1), default=64, show_default=True)
@click.option(
    "--max-len",
    type=click.IntRange(1),
    default=256,
    show_default=True,
    help="Longest training crop, and the validation window.",
)
@click.option("--embed", "embed_size", type=click.IntRange(1), default=32, show_default=True)
@_model_options(hidden=128, layers=1)
@_optimizer_options(batch=32, steps=1000, lr=3e-3)
def train_tagger(
    max_files: int,
    min_len: int,
    max_len: int,
    embed_size: int,
    cell: str,
    num_layers: int,
    hidden_size: int,
    dropout: float,
    **opts: Any,
) -> None:
    """Train a FrameTagger to tag each byte of Python source as code, string or comment.

    The labels come from Python's own tokenize module run over the standard library (split by
    file, 10% validation); training reads random crops (padded batches with masks), validation
    windows of --max-len bytes. The metric is per-byte accuracy.
    """
    from rnnstream.models import FrameTagger, FrameTaggerConfig
    from rnnstream.train import TaggingTask, load_python_tags

    data = load_python_tags(max_files=max_files)

    def build() -> Any:
        config = FrameTaggerConfig(
            labels=data.labels,
            cell=cell,
            num_layers=num_layers,
            hidden_size=hidden_size,
            embed_size=embed_size,
            dropout=dropout,
        )
        return FrameTagger(config)

    def make_task(model: Any) -> Any:
        return TaggingTask.from_tagged(data, opts["batch"], min_len, max_len, opts["seed"])

    _run_training(build, make_task, data.describe(), opts, {"loss": "loss", "accuracy": "accuracy"})


@train_group.command("forecaster")
@click.option(
    "--data",
    default="mackey-glass",
    show_default=True,
    help="'mackey-glass': the Mackey-Glass series (tau 17, 10,000 steps) generated in code; or "
    "the path of a CSV file of numbers (one row per step, one column per feature; a header line "
    "is skipped). The last 20% of the steps are the validation series.",
)
@click.option("--min-len", type=click.IntRange(1), default=32, show_default=True)
@click.option(
    "--max-len", type=click.IntRange(1), default=128, show_default=True, help="Longest window."
)
@_model_options(hidden=64, layers=1)
@_optimizer_options(batch=32, steps=1000, lr=3e-3)
def train_forecaster(
    data: str,
    min_len: int,
    max_len: int,
    cell: str,
    num_layers: int,
    hidden_size: int,
    dropout: float,
    **opts: Any,
) -> None:
    """Train a Forecaster to predict the next value of a (multivariate) time series.

    Training reads random windows of --min-len to --max-len steps (padded batches with masks);
    the model standardises with the training part's mean and spread and predicts the change.
    Validation runs over the whole validation series as a stream would and reports the mean
    absolute error next to the naive forecast's (repeat the last value).
    """
    import numpy as np

    from rnnstream.models import Forecaster, ForecasterConfig
    from rnnstream.train import ForecastTask, load_series

    try:
        series = load_series(data)
    except (OSError, ValueError) as e:
        raise click.UsageError(str(e)) from e

    def build() -> Any:
        config = ForecasterConfig(
            features=series.train.shape[1],
            cell=cell,
            num_layers=num_layers,
            hidden_size=hidden_size,
            mean=tuple(series.train.mean(0).tolist()),
            scale=tuple(np.maximum(series.train.std(0), 1e-6).tolist()),
            dropout=dropout,
        )
        return Forecaster(config)

    def make_task(model: Any) -> Any:
        if model.config.features != series.train.shape[1]:
            raise ValueError("the checkpoint's feature count does not match the data")
        return ForecastTask.from_series(series, opts["batch"], min_len, max_len, opts["seed"])

    _run_training(
        build, make_task, series.describe(), opts, {"mae": "MAE", "naive_mae": "repeat-last MAE"}
    )


@main.command()
@click.argument(
    "model_path", metavar="[MODEL]", required=False, type=click.Path(exists=True, dir_okay=False)
)
@click.option("--prompt", default="", help="Text to start from (fed in one run after BOS).")
@click.option("--max-tokens", type=click.IntRange(1), default=300, show_default=True)
@click.option(
    "--temperature",
    type=click.FloatRange(0),
    default=None,
    help="Sampling temperature (default 0.8); 0 is greedy.",
)
@click.option(
    "--top-k", type=click.IntRange(1), default=None, help="Sample from the K most likely tokens."
)
@click.option(
    "--top-p",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Sample from the fewest most likely tokens whose probability reaches P (nucleus).",
)
@click.option(
    "--beams",
    type=click.IntRange(1),
    default=None,
    help="Beam search with B beams (the rows of one batched stream) instead of sampling.",
)
@click.option(
    "--length-penalty",
    type=float,
    default=None,
    help="Beam search ranks by log-probability / length**A (default 1; 0: no normalisation).",
)
@click.option("--seed", type=int, default=None, help="Makes the sampling reproducible.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the text, token ids, per-token log-probabilities and timing as JSON.",
)
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
def generate(
    model_path: str | None,
    prompt: str,
    max_tokens: int,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    beams: int | None,
    length_penalty: float | None,
    seed: int | None,
    as_json: bool,
    threads: int,
) -> None:
    """Generate text from a character language model, printing each token as it comes.

    MODEL defaults to the shipped demo model (a character LSTM trained on the Python standard
    library). Generation runs on the torch-free runtime: the prompt in one run, then one step per
    token with the state carried, stopping at EOS or --max-tokens. Sampling takes --temperature,
    --top-k, --top-p and --seed; --beams B runs beam search instead (deterministic, printed when
    done). Speed and the parity recorded at export go to stderr; --json prints one JSON object
    (text, token ids, per-token log-probabilities, timing) instead.
    """
    import rnnstream
    from rnnstream.assets import DEMO_ONNX
    from rnnstream.runtime.generate import Token

    model = rnnstream.load(model_path or DEMO_ONNX, threads=threads)
    if temperature is None and beams is None:
        temperature = 0.8

    def show(token: Token) -> None:
        click.echo(token.text, nl=False)  # click.echo flushes

    if not as_json:
        click.echo(prompt, nl=False)
    result = rnnstream.generate(
        model,
        prompt,
        max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        beams=beams,
        length_penalty=length_penalty,
        seed=seed,
        on_token=None if as_json else show,
    )
    if as_json:
        click.echo(json.dumps({"model": model.name, **result.to_dict()}, indent=2))
        return
    click.echo()
    timing = result.timing
    unit = "step" if beams else "token"
    speed = "n/a"
    if timing.ms_per_token is not None:
        speed = f"{timing.ms_per_token:.3f} ms/{unit} ({timing.tokens_per_s:.0f} {unit}s/s)"
    click.echo(
        f"{len(result.token_ids)} tokens ({result.strategy}, stopped at {result.finish}, "
        f"log-prob {result.logprob:.2f}): prompt ({len(prompt)} characters, one run) to first "
        f"{unit} {timing.first_token_ms:.2f} ms, then {speed}",
        err=True,
    )
    parity = model.signature.parity
    if parity:
        click.echo(
            f"parity at export: max abs err {parity['max_abs_err']:.3g} (atol {parity['atol']:g})"
            f" over {parity['steps']} steps x batch {parity['batch']}",
            err=True,
        )


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Repository.")
@click.option("--name", default=None, help="Model name (default: MODEL's file stem).")
@click.option(
    "--max-sequences", type=click.IntRange(1), default=1024, show_default=True, help="At once."
)
@click.option("--max-batch", type=click.IntRange(1), default=256, show_default=True)
@click.option("--preferred-batch", type=click.IntRange(1), multiple=True, help="Repeatable.")
@click.option("--queue-delay-us", type=click.IntRange(0), default=1000, show_default=True)
@click.option(
    "--idle-seconds",
    type=click.FloatRange(0, min_open=True),
    default=60.0,
    show_default=True,
    help="A sequence with no request for this long is released.",
)
@click.option(
    "--instances", type=click.IntRange(1), default=1, show_default=True, help="Model instances."
)
@click.option("--no-ort", is_flag=True, help="Skip the <name>_ort model (it needs onnx).")
def triton(
    model_path: str,
    output: str,
    name: str | None,
    max_sequences: int,
    max_batch: int,
    preferred_batch: tuple[int, ...],
    queue_delay_us: int,
    idle_seconds: float,
    instances: int,
    no_ort: bool,
) -> None:
    """Write a Triton Inference Server model repository serving MODEL's streams.

    <name> runs rnnstream's StreamPool in Triton's python backend; <name>_ort runs a batch-first
    copy in the ONNX Runtime backend, its state kept by Triton. Both use the sequence batcher
    (oldest strategy): --max-sequences at once, --max-batch steps per call. Serve with
    `tritonserver --model-repository OUTPUT`.
    """
    from rnnstream.serve import Batching, write_triton_repository

    batching = Batching(
        max_sequences, max_batch, preferred_batch, queue_delay_us, idle_seconds, instances
    )
    repo = write_triton_repository(model_path, output, name, batching, ort=not no_ort)
    for folder in (repo.python, repo.ort):
        if folder is not None:
            click.echo(f"wrote {folder}")
    if repo.ort_parity is not None:
        click.echo(
            f"{repo.ort.name}: batch-first copy max abs err {repo.ort_parity['max_abs_err']:.3g}"
        )


if __name__ == "__main__":
    main()
