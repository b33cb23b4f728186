"""Loading what commands work on: a runtime model with the --threads/--state/--const/--axes
options, and a PyTorch checkpoint (torch imported only then), checked to be the model a file was
exported from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnstream.errors import CheckpointError


def load_model(model_path: str | Path, threads: int, states: dict, consts: dict, axes: dict) -> Any:
    """The runtime model at ``model_path`` with the --threads, --state, --const and --axes
    options."""
    import rnnstream

    return rnnstream.load(
        model_path,
        threads=threads,
        state_map=states or None,
        constants=consts or None,
        axes=axes or None,
    )


def load_torch_checkpoint(path: str | Path, exported_as: str | Path | None = None) -> Any:
    """The PyTorch model saved at ``path``; with ``exported_as`` (an ONNX file), refused unless
    it is the model that file was exported from."""
    from rnnstream.models import load_checkpoint

    module = load_checkpoint(path)
    if exported_as is not None:
        check_same_model(module, path, exported_as)
    return module


def check_same_model(module: Any, checkpoint: str | Path, model_path: str | Path) -> None:
    """Refuse the checkpoint of another model before parity runs
    (:func:`rnnstream.export.same_model.refuse_other_model`), naming the checkpoint."""
    import rnnstream
    from rnnstream.errors import ModelMismatchError
    from rnnstream.export.same_model import refuse_other_model

    try:
        refuse_other_model(module, rnnstream.load(model_path), str(model_path))
    except ModelMismatchError as e:
        raise CheckpointError(
            f"{checkpoint} is not the model exported as {model_path}: {e.reason}"
        ) from e
