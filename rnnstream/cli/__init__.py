"""The ``rnnstream`` command line: thin commands over the Python API.

Every failure is one line on stderr and a non-zero exit: library errors exit with 1
(``Error: InputError: ...``), bad arguments with 2, and an unexpected exception (a bug) is one
line too, with its traceback when the environment sets ``RNNSTREAM_DEBUG``. Commands that need
torch (init, export, quantize --against, verify, train, bench without MODEL) import it only when
they run, so the streaming commands work on a runtime-only install.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from rnnstream.cli.convert import export, init, quantize, verify
from rnnstream.cli.inspect import info
from rnnstream.cli.run import bench, generate, stream
from rnnstream.cli.serve import triton
from rnnstream.cli.train import train_group
from rnnstream.errors import RnnStreamError

__all__ = ["main"]


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


class _OneLineUsageError(click.ClickException):
    """A usage error shown as one line (the usage text and help hint folded into it)."""

    exit_code = 2

    @classmethod
    def wrap(cls, e: click.UsageError) -> _OneLineUsageError:
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        return cls(_one_line(e.format_message()) + hint)


class _Group(click.Group):
    """Turns library errors and usage errors into one clear line, never a traceback."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:
            raise _OneLineUsageError.wrap(e) from e

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RnnStreamError as e:
            raise click.ClickException(_one_line(f"{type(e).__name__}: {e}")) from e
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:
            raise _OneLineUsageError.wrap(e) from e
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise
        except OSError as e:  # the file system refused: a file that cannot be written or read
            where = f": {e.filename}" if e.filename else ""
            raise click.ClickException(_one_line(f"{e.strerror or e}{where}")) from e
        except Exception as e:
            if os.environ.get("RNNSTREAM_DEBUG"):
                raise
            raise click.ClickException(
                _one_line(f"internal error, please report it: {type(e).__name__}: {e}")
                + " (RNNSTREAM_DEBUG=1 shows the traceback)"
            ) from e


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


for _command in (
    init,
    export,
    quantize,
    verify,
    info,
    stream,
    generate,
    bench,
    triton,
    train_group,
):
    main.add_command(_command)
