"""`make test-triton`, step 1 (this project's .venv, with torch): the models and the repository.

Exports a frame model (a time-first 2-layer LSTM over 16-feature frames) and writes one Triton
repository holding it and the shipped demo model, through the `rnnstream triton` command.

    python -m tests.triton.prepare WORK_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from click.testing import CliRunner

from rnnstream.assets import DEMO_ONNX
from rnnstream.cli import main as cli
from rnnstream.export import ParitySettings, export

FRAME_MODEL = "frames"
DEMO_MODEL = "charlm"


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    frames = work / f"{FRAME_MODEL}.onnx"
    export(
        torch.nn.LSTM(16, 64, num_layers=2, batch_first=False),
        frames,
        parity=ParitySettings(steps=200),
    )
    repo = work / "repo"
    for name, path in ((DEMO_MODEL, DEMO_ONNX), (FRAME_MODEL, frames)):
        args = ["triton", str(path), "-o", str(repo), "--name", name, "--idle-seconds", "30"]
        result = CliRunner().invoke(cli, args)
        print(result.output, end="")
        if result.exit_code != 0:
            sys.exit(f"rnnstream triton failed for {name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
