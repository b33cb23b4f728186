"""``rnnstream train KIND``: the training recipes of :mod:`rnnstream.train.recipes` as commands,
with a progress bar (they need the export extra: torch, imported when they run)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from rnnstream.cli.options import (
    CELL_CHOICES,
    SEED,
    FiniteFloat,
    bundle,
    count_option,
    threads_option,
)


@click.group("train")
def train_group() -> None:
    """Train a model from scratch (needs the export extra: torch). See `train KIND --help`."""


def _optimizer_options(batch: int, steps: int, lr: float) -> Any:
    """The options every `train` command beyond charlm shares: optimisation, seed, output."""
    options = [
        count_option("--steps", default=steps, help="Optimizer steps."),
        count_option("--batch", default=batch),
        click.option("--lr", type=FiniteFloat(0, min_open=True), default=lr, show_default=True),
        click.option(
            "--min-lr",
            type=FiniteFloat(0, 1, min_open=True),
            default=0.1,
            show_default=True,
            help="Cosine decay to lr x this by the last step (1: constant).",
        ),
        click.option(
            "--clip",
            type=FiniteFloat(0, min_open=True),
            default=1.0,
            show_default=True,
            help="Gradient-norm clipping.",
        ),
        count_option(
            "--accumulate", default=1, help="Batches whose gradients add up to one optimizer step."
        ),
        count_option(
            "--eval-every",
            default=0,
            minimum=0,
            help="Validate every N steps (always at epoch ends and after the last step).",
        ),
        count_option(
            "--save-every",
            default=500,
            minimum=0,
            help="Checkpoint every N steps (always after the last step).",
        ),
        click.option(
            "--seed", type=SEED, default=0, show_default=True, help="Seeds init, data and dropout."
        ),
        threads_option(help=None),
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

    return bundle(*options)


def _model_options(hidden: int, layers: int) -> Any:
    """Architecture options shared by the classifier, tagger and forecaster."""
    options = [
        click.option("--cell", type=click.Choice(CELL_CHOICES), default="lstm", show_default=True),
        count_option("--layers", "num_layers", default=layers),
        count_option("--hidden", "hidden_size", default=hidden),
        click.option("--dropout", type=FiniteFloat(0, 1), default=0.0, show_default=True),
    ]

    return bundle(*options)


ARCHITECTURE = ("cell", "num_layers", "hidden_size", "dropout")


def _architecture(opts: dict[str, Any]) -> Any:
    """The recurrent core's options, taken out of ``opts``."""
    from rnnstream.train import Architecture

    return Architecture(**{name: opts.pop(name) for name in ARCHITECTURE})


def _load_data(load: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Training data from ``load``; data that cannot be had is a usage error."""
    try:
        return load(*args, **kwargs)
    except (OSError, ValueError) as e:
        raise click.UsageError(str(e)) from e


def _run_training(recipe: Any, opts: dict[str, Any]) -> None:
    """Build (or resume) the model and task, train with a progress bar, print the metrics."""
    import torch

    from rnnstream.models import count_parameters
    from rnnstream.train import TrainConfig, prepare, train

    torch.set_num_threads(opts["threads"])
    output, resume = opts["output"], opts["resume"]
    try:
        model, task = prepare(
            recipe, output, batch_size=opts["batch"], seed=opts["seed"], resume=resume
        )
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
    click.echo(recipe.describe(), err=True)
    click.echo(
        f"{type(model).__name__} {c.cell} x{c.num_layers}, hidden {c.hidden_size}: "
        f"{count_parameters(model):,} parameters; {task.batches_per_epoch} batches of "
        f"{opts['batch']} per epoch",
        err=True,
    )
    with click.progressbar(
        length=opts["steps"],
        label="training",
        file=sys.stderr,
        item_show_func=lambda info: info and f"loss {info.loss:.4f}",
    ) as bar:

        def on_step(info: Any) -> None:
            bar.update(info.step - bar.pos, info)

        result = train(model, task, config, checkpoint=output, resume=resume, on_step=on_step)
    shown = ", ".join(
        f"{label} {result.metrics['val_' + m]:.4f}" for m, label in recipe.metrics.items()
    )
    click.echo(
        f"wrote {output}: {result.steps} steps in {result.seconds / 60:.1f} min; validation {shown}"
    )


@train_group.command("charlm")
@click.option(
    "--data",
    default="stdlib",
    show_default=True,
    help="'stdlib': this Python's standard library sources, split by file (5% validation); "
    "or the path of a UTF-8 text file (its last lines are the validation text).",
)
@count_option("--embed", "embed_size", default=64)
@click.option(
    "--vocab",
    type=click.Choice(["printable", "data"]),
    default="printable",
    show_default=True,
    help="printable: string.printable; data: the characters of the training text. Other "
    "characters become U+FFFD. Token ids 0 and 1 are BOS and EOS.",
)
@count_option(
    "--seq-len",
    default=128,
    help="Truncated-BPTT length: the state carries over, gradients stop at each chunk.",
)
@_model_options(hidden=256, layers=2)
@_optimizer_options(batch=32, steps=1000, lr=2e-3)
def train_charlm(data: str, embed_size: int, vocab: str, seq_len: int, **opts: Any) -> None:
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
    from rnnstream.train import CharLMRecipe, load_corpus

    corpus = _load_data(load_corpus, data)
    recipe = CharLMRecipe(corpus, _architecture(opts), embed_size, vocab, seq_len)
    _run_training(recipe, opts)


@train_group.command("classifier")
@click.option(
    "--kinds",
    default="",
    help="Comma-separated file kinds to tell apart (default: every kind with enough files "
    "here): python, c_header, shell, perl, text, xml.",
)
@count_option("--max-files", default=300, minimum=2, help="Files per kind.")
@count_option("--min-len", default=16, help="Shortest crop.")
@count_option(
    "--max-len",
    default=256,
    help="Longest crop; validation reads the first MAX_LEN bytes of each file.",
)
@count_option("--embed", "embed_size", default=32)
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
    from rnnstream.train import ClassifierRecipe, load_file_kinds

    names = tuple(k.strip() for k in kinds.split(",")) if kinds else None
    data = _load_data(load_file_kinds, names, max_files=max_files)
    arch = _architecture(opts)
    recipe = ClassifierRecipe(data, arch, embed_size, bidirectional, min_len, max_len)
    _run_training(recipe, opts)


@train_group.command("tagger")
@count_option("--max-files", default=400, minimum=2, help="Standard-library files to read.")
@count_option("--min-len", default=64)
@count_option("--max-len", default=256, help="Longest training crop, and the validation window.")
@count_option("--embed", "embed_size", default=32)
@_model_options(hidden=128, layers=1)
@_optimizer_options(batch=32, steps=1000, lr=3e-3)
def train_tagger(max_files: int, min_len: int, max_len: int, embed_size: int, **opts: Any) -> None:
    """Train a FrameTagger to tag each byte of Python source as code, string or comment.

    The labels come from Python's own tokenize module run over the standard library (split by
    file, 10% validation); training reads random crops (padded batches with masks), validation
    windows of --max-len bytes. The metric is per-byte accuracy.
    """
    from rnnstream.train import TaggerRecipe, load_python_tags

    data = _load_data(load_python_tags, max_files=max_files)
    recipe = TaggerRecipe(data, _architecture(opts), embed_size, min_len, max_len)
    _run_training(recipe, opts)


SERIES_OPTION = click.option(
    "--data",
    default="mackey-glass",
    show_default=True,
    help="'mackey-glass': the Mackey-Glass series (tau 17, 10,000 steps) generated in code; or "
    "the path of a CSV file of numbers (one row per step, one column per feature; a header line "
    "is skipped). The last 20% of the steps are the validation series.",
)


@train_group.command("forecaster")
@SERIES_OPTION
@count_option("--min-len", default=32)
@count_option("--max-len", default=128, help="Longest window.")
@_model_options(hidden=64, layers=1)
@_optimizer_options(batch=32, steps=1000, lr=3e-3)
def train_forecaster(data: str, min_len: int, max_len: int, **opts: Any) -> None:
    """Train a Forecaster to predict the next value of a (multivariate) time series.

    Training reads random windows of --min-len to --max-len steps (padded batches with masks);
    the model standardises with the training part's mean and spread and predicts the change.
    Validation runs over the whole validation series as a stream would and reports the mean
    absolute error next to the naive forecast's (repeat the last value).
    """
    from rnnstream.train import ForecasterRecipe, load_series

    series = _load_data(load_series, data)
    recipe = ForecasterRecipe(series, _architecture(opts), min_len, max_len)
    _run_training(recipe, opts)


@train_group.command("crnn")
@SERIES_OPTION
@count_option("--conv-layers", default=2, help="Causal Conv1d layers (dilations 1, 2, 4, ...).")
@count_option("--conv-channels", default=16)
@count_option("--kernel", "kernel_size", default=3, help="Convolution kernel size over time.")
@count_option("--min-len", default=32)
@count_option("--max-len", default=128, help="Longest window.")
@_model_options(hidden=64, layers=1)
@_optimizer_options(batch=32, steps=1000, lr=3e-3)
def train_crnn(
    data: str,
    conv_layers: int,
    conv_channels: int,
    kernel_size: int,
    min_len: int,
    max_len: int,
    **opts: Any,
) -> None:
    """Train a CRNN (causal convolutions over time, then the recurrent core) as a forecaster.

    The same task and data as `train forecaster`. Exported, each convolution's last
    (kernel-1)*dilation frames are a context state next to the recurrent state, so the model
    streams one frame at a time (`rnnstream info` lists them).
    """
    from rnnstream.train import CRNNRecipe, load_series

    series = _load_data(load_series, data)
    arch = _architecture(opts)
    recipe = CRNNRecipe(series, arch, min_len, max_len, conv_layers, conv_channels, kernel_size)
    _run_training(recipe, opts)
