"""Count a forward's output heads apart from its recurrent state, so no head is dropped silently.

Export writes one output tensor. A model whose ``forward`` returns two or more heads (besides the
state: in a tuple, a list or a dict, nested or not) would lose all but the first, and parity,
measured on that first one, would pass. Until multi-output export exists, such a model is refused.
A returned tensor is the recurrent state when it is (or views the memory of) a state that a
recurrent layer or cell of the model returned during the same forward.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from rnnstream.errors import ExportError
from rnnstream.export.trace import find_recurrent
from rnnstream.export.trace_cell_loop import find_cells

__all__ = ["check_single_head", "output_heads"]


def output_heads(model: nn.Module, example: torch.Tensor) -> list[str] | None:
    """Where in ``model(example)``'s result each output tensor that is not state sits.

    None when the forward fails on ``example``: tracing, which runs next, explains why.
    """
    state_memory: set[int] = set()

    def keep_state(module: nn.Module, _args: object, out: object) -> None:
        state = out if isinstance(module, nn.RNNCellBase) else out[1]
        state_memory.update(t.untyped_storage().data_ptr() for _, t in _tensors(state, ""))

    hooks = [
        m.register_forward_hook(keep_state) for _, m in find_recurrent(model) or find_cells(model)
    ]
    try:
        with torch.no_grad():
            out = model(example)
    except Exception:  # a user's forward can raise anything; the trace names the cause
        return None
    finally:
        for hook in hooks:
            hook.remove()
    return [
        where
        for where, t in _tensors(out, "output")
        if t.untyped_storage().data_ptr() not in state_memory
    ]


def check_single_head(model: nn.Module, example: torch.Tensor) -> None:
    """Raise :class:`ExportError` if ``model`` returns more than one output besides its state."""
    heads = output_heads(model, example)
    if heads is not None and len(heads) > 1:
        raise ExportError(
            f"{type(model).__name__}.forward returns {len(heads)} output tensors besides the "
            f"recurrent state ({', '.join(heads)}); export writes one output and would drop the "
            "others, and multi-output export does not exist yet. Return one tensor (e.g. the "
            "heads concatenated) or export one head at a time through a wrapper module; if one "
            "of them is recurrent state, return it as the recurrent layer gave it"
        )


def _tensors(value: object, where: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a nest of tuples, lists and dicts, with its place (``output[1]['a']``)."""
    if isinstance(value, torch.Tensor):
        yield where, value
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{where}[{key!r}]")
