"""Refuse a model that does not start from the zero state, or that keeps its state between calls.

A stream starts every sequence from zeros and carries the state itself. Two ways of writing a
model break that, and both would only show as a failed parity check:

- a recurrent layer or cell given a non-zero initial state the forward makes (a learned
  ``nn.Parameter`` h0, one computed from a conditioning input, or a decoder started from an
  encoder's final state);
- the state stored on the module between calls (``out, self.hidden = self.lstm(x, self.hidden)``),
  so that PyTorch's second call does not start where the first did: an attribute set during the
  forward to a state a recurrent layer returned (weights recomputed by a hook, as the legacy
  ``weight_norm`` does, are not state).

Each is refused naming the layer or the attribute, and what to do instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from rnnstream.errors import ExportError
from rnnstream.export.forward_args import StateArguments
from rnnstream.export.trace import find_recurrent
from rnnstream.export.trace_cell_loop import find_cells

__all__ = ["refuse_carried_state"]


def refuse_carried_state(
    model: nn.Module, example: torch.Tensor, arguments: StateArguments
) -> None:
    """Raise :class:`ExportError` if ``model``, called from the zero state, starts a recurrent
    layer from another state or stores tensors on itself (see the module docstring)."""
    before = _stored_tensors(model)
    first_states: dict[str, tuple] = {}

    def recorder(name: str) -> Callable:
        def record(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            hx = args[1] if len(args) > 1 else kwargs.get("hx")
            first_states.setdefault(name, hx if isinstance(hx, tuple) else (hx,))

        return record

    returned: set[int] = set()

    def keep_returned(module: nn.Module, _args: object, out: object) -> None:
        state = out if isinstance(module, nn.RNNCellBase) else out[1]
        state = state if isinstance(state, tuple) else (state,)
        returned.update(t.untyped_storage().data_ptr() for t in state)

    modules = find_recurrent(model) or find_cells(model)
    hooks = [m.register_forward_pre_hook(recorder(n), with_kwargs=True) for n, m in modules]
    hooks += [m.register_forward_hook(keep_returned) for _, m in modules]
    try:
        with torch.no_grad():
            arguments.call(model, example)
    except Exception:  # a user's forward can raise anything: find_heads names the failure
        return
    finally:
        for hook in hooks:
            hook.remove()
    after = _stored_tensors(model)
    for where, value in after.items():
        items = value if isinstance(value, (tuple, list)) else (value,)
        memory = {t.untyped_storage().data_ptr() for t in items if isinstance(t, torch.Tensor)}
        if before.get(where) is not value and memory & returned:
            raise ExportError(
                f"{type(model).__name__} stores {where} during forward, keeping state between "
                "calls; a stream carries the state itself.\nReturn the state instead "
                "(forward(x, hidden=None) -> (y, hidden)) and export that model."
            )
    for name, states in first_states.items():
        if any(isinstance(s, torch.Tensor) and bool(s.ne(0).any()) for s in states):
            raise ExportError(
                f"{name!r} starts from a non-zero state the forward makes (a learned h0, or one "
                "computed from an input or another layer); a stream starts every sequence from "
                "zeros.\n"
                "Make the initial state an argument (forward(x, hidden)) and set each new "
                "stream's state to it (Stream.state), or train from zeros."
            )


def _stored_tensors(model: nn.Module) -> dict[str, object]:
    """Every public module attribute holding a tensor (or a tuple/list of them) that is not a
    parameter or buffer, by ``self.<path>.<name>``."""
    stored: dict[str, object] = {}
    for path, module in model.named_modules():
        for key, value in vars(module).items():
            if key.startswith("_"):
                continue
            items = value if isinstance(value, (tuple, list)) else (value,)
            if any(isinstance(item, torch.Tensor) for item in items):
                stored[".".join(["self", *filter(None, [path]), key])] = value
    return stored
