"""A forward's output heads apart from its recurrent state, with their names.

A model may return several heads besides its state (an RL policy's ``mu, log_std, value,
hidden``; a tagger's logits and an auxiliary score), in a tuple, a list, a dict, a namedtuple or a
dataclass (``ModelOutput(logits=..., hidden=...)``), nested or not. Every one is exported. A
returned tensor is the recurrent state, not a head, when it is (or views the memory of) a state
that a recurrent layer or cell of the model returned during the same forward. Heads are named by
``output_names`` when given, else by their dict keys or namedtuple/dataclass fields, else ``y``
(one head) or ``y0``, ``y1``, ... (several). A head that flattens time and batch into one axis
(``view(-1, V)``) has its order recorded, and the traced graph splits it back
(:mod:`rnnstream.export.flattened`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rnnstream.errors import ExportError
from rnnstream.export.flattened import flattened_orders, unflatten
from rnnstream.export.forward_args import NO_ARGUMENTS, StateArguments
from rnnstream.export.messages import first_line
from rnnstream.export.trace import find_recurrent
from rnnstream.export.trace_cell_loop import find_cells

__all__ = ["Heads", "find_heads", "output_heads", "output_tensors", "run_heads"]


@dataclass(frozen=True)
class Heads:
    """Where each head sits in the forward's result (``output[0]``), its graph name, and for a
    head that flattens time and batch, its order (:mod:`rnnstream.export.flattened`)."""

    places: tuple[str, ...]
    names: tuple[str, ...]
    orders: tuple[str | None, ...] = ()

    def select(self, out: object) -> list[torch.Tensor]:
        """The head tensors of a forward's result ``out``, in ``places`` order."""
        found = dict(output_tensors(out, "output"))
        return [found[place] for place in self.places]

    def select_unflattened(
        self, out: object, x: torch.Tensor, batch_first: bool
    ) -> list[torch.Tensor]:
        """Like :meth:`select`, each flattened head split back into batch and time axes."""
        batch, steps = (x.shape[0], x.shape[1]) if batch_first else (x.shape[1], x.shape[0])
        orders = self.orders or (None,) * len(self.places)
        return [unflatten(y, order, batch, steps) for y, order in zip(self.select(out), orders)]


def output_heads(
    model: nn.Module,
    example: torch.Tensor,
    arguments: StateArguments = NO_ARGUMENTS,
    with_state: bool = False,
) -> list[str]:
    """Where in ``model(example)``'s result each output tensor that is not state sits (with
    ``with_state``, every output tensor)."""
    return run_heads(model, example, arguments, with_state)[0]


def run_heads(
    model: nn.Module,
    example: torch.Tensor,
    arguments: StateArguments = NO_ARGUMENTS,
    with_state: bool = False,
) -> tuple[list[str], object]:
    """One forward from the zero state: the places of its heads (see :func:`output_heads`) and
    its result."""
    state_memory: set[int] = set()

    def keep_state(module: nn.Module, _args: object, out: object) -> None:
        state = out if isinstance(module, nn.RNNCellBase) else out[1]
        state_memory.update(t.untyped_storage().data_ptr() for _, t in output_tensors(state, ""))

    hooks = [
        m.register_forward_hook(keep_state) for _, m in find_recurrent(model) or find_cells(model)
    ]
    try:
        with torch.no_grad():
            out = arguments.call(model, example)
    finally:
        for hook in hooks:
            hook.remove()
    places = [
        where
        for where, t in output_tensors(out, "output")
        if with_state or t.untyped_storage().data_ptr() not in state_memory
    ]
    return places, out


def find_heads(
    model: nn.Module,
    example: torch.Tensor,
    arguments: StateArguments,
    output_names: Sequence[str] | None,
    batch_first: bool,
) -> Heads:
    """The heads of ``model``, their names and flattened orders (see the module docstring)."""
    try:
        places = output_heads(model, example, arguments)
    except ExportError:
        raise
    except Exception as e:  # a user's forward can raise anything: name the call that failed
        raise ExportError(
            f"{type(model).__name__}.forward fails on a random input of shape "
            f"{list(example.shape)} ({first_line(e)}).\nPass example= shaped like the model's "
            "real input; if the code fixes the number of steps or sequences (a reshape to a "
            "constant), make that axis dynamic."
        ) from e
    if not places:  # the output is the state itself (an encoder returning h_n): the first one
        places = output_heads(model, example, arguments, with_state=True)[:1]
    if not places:
        raise ExportError(f"{type(model).__name__}.forward returns no tensor")
    if output_names is not None:
        names = tuple(output_names)
        if len(names) != len(places):
            raise ExportError(
                f"output_names has {len(names)} names but {type(model).__name__}.forward returns "
                f"{len(places)} output tensors besides the recurrent state ({', '.join(places)})"
            )
    elif len(places) == 1:
        names = ("y",)
    else:
        keys = [re.fullmatch(r"output(?:\['(\w+)'\]|\.(\w+))", p) for p in places]
        names = (
            tuple(k.group(1) or k.group(2) for k in keys)
            if all(keys)
            else tuple(f"y{i}" for i in range(len(places)))
        )
    for name in names:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w.]*", name):
            raise ExportError(f"output name {name!r} must be an identifier-like string")
    if len(set(names)) != len(names) or "x" in names:
        raise ExportError(f"output names {list(names)} must be distinct and not 'x'")
    heads = Heads(tuple(places), names)
    try:
        orders = flattened_orders(
            lambda x: heads.select(arguments.call(model, x)), example, batch_first, heads.places
        )
    except ExportError:
        raise
    except Exception as e:  # the forward ran on example: the other sizes broke it
        raise ExportError(
            f"{type(model).__name__}.forward runs on a random input of shape "
            f"{list(example.shape)} but fails on one more step ({first_line(e)}).\nA streamed "
            "model takes any number of steps: size the time axis from the input in the code."
        ) from e
    return Heads(heads.places, names, orders)


def output_tensors(value: object, where: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a nest of tuples, lists, dicts and dataclasses, with its place
    (``output[1]['a']``, ``output.logits``)."""
    if isinstance(value, torch.Tensor):
        yield where, value
    elif isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        for field, item in zip(value._fields, value):
            yield from output_tensors(item, f"{where}.{field}")
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from output_tensors(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from output_tensors(item, f"{where}[{key!r}]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from output_tensors(getattr(value, field.name), f"{where}.{field.name}")
