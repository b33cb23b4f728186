"""Commands that run a model on the torch-free runtime: stream, generate and bench."""

from __future__ import annotations

import json
import logging
import sys
from itertools import islice
from pathlib import Path
from typing import Any

import click

from rnnstream.cli.loading import load_model, load_torch_checkpoint
from rnnstream.cli.options import (
    FiniteFloat,
    count_option,
    existing_folder,
    json_flag,
    seed_option,
    state_options,
    threads_option,
)
from rnnstream.cli.readers import FORMATS, batched, read_source, stack
from rnnstream.cli.render import echo_json, print_generation_summary, step_record

MODEL_FILE = click.Path(exists=True, dir_okay=False)


@click.command()
@click.argument("model_path", metavar="MODEL", type=MODEL_FILE)
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
@count_option(
    "--chunk",
    default=1,
    help="Steps per onnxruntime run (feed); output is still one line per step.",
)
@count_option(
    "--top",
    default=3,
    help="Most likely next tokens (or labels) shown per step (models with a vocabulary or labels).",
)
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Stop after N steps.")
@threads_option()
@state_options
def stream(
    model_path: str,
    source: str,
    fmt: str,
    chunk: int,
    top: int,
    max_steps: int | None,
    threads: int,
    states: dict,
    consts: dict,
    axes: dict,
) -> None:
    """Stream SOURCE (a file, or - for stdin) through MODEL: one JSON line per step, flushed.

    A model with a vocabulary reads text, one character per step, and prints the most likely
    next characters (a classifier or tagger: its most likely labels); other models read frames
    (a JSON list or comma-separated numbers per line, or an .npy file of [T, ...] frames) and
    print the output. Ends at end of input or Ctrl-C.
    """
    from rnnstream.runtime import Vocabulary
    from rnnstream.runtime.generate import bos_prefix

    model = load_model(model_path, threads, states, consts, axes)
    sig = model.signature
    s = model.stream()
    for token in bos_prefix(sig):  # a language model starts from its begin-of-sequence token
        s.step(token)
    items = islice(
        read_source(source, fmt, Vocabulary(sig.vocab) if sig.vocab else None), max_steps
    )
    t = 0
    try:
        for group in batched(items, chunk):
            ys = s.feed(stack(group, t)) if chunk > 1 else [s.step(group[0])]
            for x, y in zip(group, ys):
                click.echo(json.dumps(step_record(t, x, y, sig, top)))
                t += 1
            sys.stdout.flush()
    except KeyboardInterrupt:
        click.echo(f"interrupted after {t} steps", err=True)
        sys.exit(130)


@click.command()
@click.argument("model_path", metavar="[MODEL]", required=False, type=MODEL_FILE)
@click.option("--prompt", default="", help="Text to start from (fed in one run after BOS).")
@count_option("--max-tokens", default=300)
@click.option(
    "--temperature",
    type=FiniteFloat(0),
    help="Sampling temperature (default 0.8); 0 is greedy.",
)
@click.option(
    "--top-k", type=click.IntRange(1), default=None, help="Sample from the K most likely tokens."
)
@click.option(
    "--top-p",
    type=FiniteFloat(0, 1, min_open=True),
    help="Sample from the fewest most likely tokens whose probability reaches P (nucleus).",
)
@click.option(
    "--beams",
    type=click.IntRange(1),
    help="Beam search with B beams (the rows of one batched stream) instead of sampling.",
)
@click.option(
    "--length-penalty",
    type=FiniteFloat(),
    help="Beam search ranks by log-probability / length**A (default 1; 0: no normalisation).",
)
@seed_option(None, "Makes the sampling reproducible.")
@json_flag("Print the text, token ids, per-token log-probabilities and timing as JSON.")
@threads_option(help=None)
def generate(
    model_path: str | None,
    prompt: str,
    max_tokens: int,
    temperature: float | None,
    as_json: bool,
    threads: int,
    **settings: Any,
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

    model = rnnstream.load(model_path or DEMO_ONNX, threads=threads)
    if temperature is None and settings["beams"] is None:
        temperature = 0.8
    if not as_json:
        click.echo(prompt, nl=False)
    on_token = None if as_json else _echo_token
    result = rnnstream.generate(
        model, prompt, max_tokens, temperature=temperature, on_token=on_token, **settings
    )
    if as_json:
        echo_json({"model": model.name, **result.to_dict()})
        return
    click.echo()
    print_generation_summary(result, prompt, settings["beams"], model.signature.parity)


def _echo_token(token: Any) -> None:
    click.echo(token.text, nl=False)  # click.echo flushes


@click.command()
@click.argument("model_path", metavar="MODEL", required=False, type=MODEL_FILE)
@click.option(
    "--against",
    "checkpoint",
    type=MODEL_FILE,
    help="PyTorch checkpoint of MODEL, to time PyTorch eager stepping as well.",
)
@count_option("--steps", default=300, minimum=10, help="Timed calls per method per round.")
@count_option(
    "--rounds", default=5, help="Interleaved rounds (methods take turns, so noise hits all alike)."
)
@threads_option(help=None)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    callback=existing_folder,
    help="Also write the results as JSON to this file ('-' for stdout only).",
)
@state_options
def bench(
    model_path: str | None,
    checkpoint: str | None,
    steps: int,
    rounds: int,
    threads: int,
    json_path: str | None,
    states: dict,
    consts: dict,
    axes: dict,
) -> None:
    """Time per-step latency of MODEL: bare onnxruntime, Stream, StreamPool and PyTorch.

    Reports medians and p99 per stream-step and their ratios, all measured in one run. Without
    MODEL, builds and exports the reference model (2-layer LSTM 64->256, head 256->64; needs the
    export extra) and times PyTorch eager on it too, and the same model with a causal Conv1d
    front-end (a CRNN, whose convolution contexts stream as state) next to it.
    """
    from rnnstream.bench import run_benchmark

    torch_module, companions = None, {}
    if model_path is None:
        model_path, torch_module = _reference_model()
        companions["crnn"] = load_model(_reference_crnn(), threads, {}, {}, {})
    elif checkpoint:
        torch_module = load_torch_checkpoint(checkpoint, exported_as=model_path)
    model = load_model(model_path, threads, states, consts, axes)
    logging.getLogger(__name__).info("timing %s: %d rounds x %d steps", model_path, rounds, steps)
    result = run_benchmark(model, torch_module, steps=steps, rounds=rounds, companions=companions)
    if json_path == "-":
        echo_json(result.to_dict())
        return
    click.echo(result.table())
    if json_path:
        Path(json_path).write_text(json.dumps(result.to_dict(), indent=2))


def _reference_model() -> tuple[str, Any]:
    """The reference model ``bench`` times without MODEL, exported to a temporary file."""
    import tempfile

    import torch

    from rnnstream.export import ParitySettings
    from rnnstream.export import export as export_model
    from rnnstream.models import RecurrentNet, RecurrentNetConfig

    torch.manual_seed(0)
    config = RecurrentNetConfig(
        cell="lstm", num_layers=2, input_size=64, hidden_size=256, output_size=64
    )
    module = RecurrentNet(config).eval()
    path = str(Path(tempfile.mkdtemp(prefix="rnnstream-bench-")) / "reference.onnx")
    export_model(module, path, parity=ParitySettings(steps=200))
    return path, module


def _reference_crnn() -> str:
    """The reference model with a causal convolutional front-end, exported to a temporary file."""
    import tempfile

    import torch

    from rnnstream.export import ParitySettings
    from rnnstream.export import export as export_model
    from rnnstream.models import CRNN, CRNNConfig

    torch.manual_seed(0)
    config = CRNNConfig(features=64, conv_channels=64, num_layers=2, hidden_size=256)
    path = str(Path(tempfile.mkdtemp(prefix="rnnstream-bench-")) / "reference-crnn.onnx")
    export_model(CRNN(config).eval(), path, parity=ParitySettings(steps=200))
    return path
