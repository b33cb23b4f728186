"""Option bundles several commands share, and parameter types that refuse bad values early.

Parity settings (export, quantize, verify), the task-metric data (export, quantize), threads,
``--state``/``--const``/``--axes`` and ``--json`` are declared once here so that a flag means the
same thing in every command; their values are checked while parsing (bad values are usage errors).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from rnnstream.cells import CELLS

CELL_CHOICES = list(CELLS)

Decorator = Callable[[Any], Any]


class FiniteFloat(click.FloatRange):
    """A float in a range that is also finite (click's ranges let NaN through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def bundle(*options: Decorator) -> Decorator:
    """One decorator applying ``options`` in the order written (the order ``--help`` shows)."""

    def apply(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def count_option(*names: str, default: int, minimum: int = 1, help: str | None = None) -> Decorator:
    """An integer option of at least ``minimum``, its default shown in --help."""
    return click.option(
        *names, type=click.IntRange(minimum), default=default, show_default=True, help=help
    )


def json_flag(help: str) -> Decorator:
    return click.option("--json", "as_json", is_flag=True, help=help)


MAX_THREADS = 256  # more is a typo, and would start that many threads before failing


def threads_option(help: str | None = "onnxruntime intra-op threads.") -> Decorator:
    return click.option(
        "--threads", type=click.IntRange(1, MAX_THREADS), default=1, show_default=True, help=help
    )


EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
SEED = click.IntRange(0, 2**32 - 1)  # what every random generator used here accepts


def seed_option(default: int | None, help: str | None = None) -> Decorator:
    return click.option(
        "--seed", type=SEED, default=default, show_default=default is not None, help=help
    )


def parity_options(seed: int, atol_help: str) -> Decorator:
    """--steps, --batch, --chunk, --atol and --seed: how parity with PyTorch is measured."""
    return bundle(
        count_option(
            "--steps", default=1000, help="Length of the random stream parity is measured on."
        ),
        count_option("--batch", default=2, help="Sequences in the parity stream."),
        count_option("--chunk", default=16, help="Chunk size of the chunked parity run."),
        click.option("--atol", type=FiniteFloat(0), default=None, help=atol_help),
        seed_option(seed, "Seed of the parity input."),
    )


eval_options = bundle(
    click.option(
        "--eval-data",
        default="stdlib",
        show_default=True,
        help="Validation text of a character LM's bits-per-character score: 'stdlib' (the "
        "standard library's validation files) or a UTF-8 text file (its last 5%).",
    ),
    count_option(
        "--eval-tokens",
        default=100_000,
        minimum=2,
        help="Validation tokens scored for the task metric.",
    ),
)


def existing_folder(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Refuse an output file whose folder does not exist, before any work is done."""
    if value is not None and not Path(value).parent.is_dir():
        raise click.BadParameter(f"folder {str(Path(value).parent)!r} does not exist", ctx, param)
    return value


def output_option(help: str) -> Decorator:
    """-o/--output: a file to write, in a folder that exists."""
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        callback=existing_folder,
        help=help,
    )


def _pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict:
    pairs = {}
    for value in values:
        name, sep, other = value.partition("=")
        if not sep or not name or not other:
            raise click.BadParameter(f"expected {param.metavar}, got {value!r}", ctx, param)
        pairs[name] = other
    return pairs


def _constants(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict:
    constants = {}
    for name, text in _pairs(ctx, param, values).items():
        try:
            value: float | None = float(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            raise click.BadParameter(f"{name}={text}: expected a finite number", ctx, param)
        constants[name] = value
    return constants


def _axes(ctx: click.Context, param: click.Parameter, value: str | None) -> dict:
    """``batch=0,time=none,frame=1`` as ``{"batch": 0, "time": None, "frame": [1]}``."""
    axes: dict = {}
    for part in (value or "").split(","):
        if not part:
            continue
        role, sep, text = part.partition("=")
        if not sep or not role or not (text.isdigit() or text.lower() == "none"):
            raise click.BadParameter(
                f"expected ROLE=AXIS[,ROLE=AXIS...] with AXIS a number or none, got {part!r}",
                ctx,
                param,
            )
        axis = None if text.lower() == "none" else int(text)
        if role == "frame":
            axes.setdefault("frame", []).append(axis)
        else:
            axes[role] = axis
    return axes


state_options = bundle(
    click.option(
        "--state",
        "states",
        multiple=True,
        metavar="IN=OUT",
        callback=_pairs,
        help="Pair a state input with its output (models without rnnstream metadata). Repeatable.",
    ),
    click.option(
        "--const",
        "consts",
        multiple=True,
        metavar="NAME=VALUE",
        callback=_constants,
        help="Pin an extra model input to a constant, e.g. --const sr=16000. Repeatable.",
    ),
    click.option(
        "--axes",
        metavar="ROLE=AXIS,...",
        callback=_axes,
        help="The input's batch, time and frame axes when probing gets them wrong, e.g. "
        "--axes batch=none,time=0 (sets rnnstream metadata aside).",
    ),
)
