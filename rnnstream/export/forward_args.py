"""State passed as forward arguments: ``forward(x, hidden)``, ``forward(x, (h, c))``, ``forward(x,
h, c)``, ``forward(obs, state)`` with one entry per recurrent layer.

The exporter supplies such arguments itself, to recurrent layers (``nn.LSTM``/``GRU``/``RNN``)
and to a cell loop's cells (``nn.LSTMCell``/``GRUCell``/``RNNCell``) alike. It builds a zero
state of the structure the model wants (``model.init_hidden(batch)`` when there is one taking a
batch size, else the states as one tensor per argument, one layer or cell per argument, or one
tuple/list of them), runs the model once with a forward-pre-hook on every layer or cell, and finds
by identity which argument tensor reached which one's ``h`` or ``c`` (through indexing,
``.detach()``, ``.contiguous()``, a ``repackage_hidden`` helper: anything that keeps the tensor's
memory). While tracing, each such argument is the graph's state input of its layer, so the file
has the usual state inputs and outputs and the stream starts from zeros; PyTorch's reference is
called with zeros of that same structure. Arguments with a default are left to it (``forward(x,
hidden=None)``). A required argument that turns out to be the lengths the model packs its input
with is refused with its fix (:mod:`rnnstream.export.packed`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from rnnstream.errors import ExportError
from rnnstream.export.layers import RecurrentSpec
from rnnstream.export.messages import first_line
from rnnstream.export.packed import packing_argument_refusal
from rnnstream.export.trace import find_recurrent
from rnnstream.export.trace_cell_loop import find_cells

__all__ = ["NO_ARGUMENTS", "StateArguments", "state_arguments"]

Path = tuple[object, ...]  # where a tensor sits in the arguments: argument index, then keys
Shape = tuple[int | None, ...]  # a state tensor's shape, None at its batch axis


@dataclass(frozen=True)
class StateArguments:
    """The extra forward arguments of a model, as a template and where each tensor goes.

    ``targets`` maps each tensor's place in ``template`` to its index in the model's flat state
    list (:func:`find_recurrent` or :func:`find_cells` order, ``h`` before ``c``), whose shapes
    are ``shapes``; the batch size is the input's axis ``batch_axis``.
    """

    template: tuple[object, ...]
    targets: dict[Path, int]
    shapes: tuple[Shape, ...]
    batch_axis: int = 0

    def from_states(self, states: list[torch.Tensor]) -> tuple[object, ...]:
        """The arguments with every state tensor replaced by ``states[target]``."""
        return _rebuild(self.template, lambda path, _t: states[self.targets[path]], ())

    def zeros(self, batch: int) -> tuple[object, ...]:
        """The arguments holding the zero state for ``batch`` sequences."""
        return self.from_states(_zero_states(self.shapes, batch))

    def call(self, model: nn.Module, x: torch.Tensor) -> object:
        """``model(x, *arguments)`` from the zero state."""
        if not self.template:
            return model(x)
        return model(x, *self.zeros(x.shape[self.batch_axis]))


NO_ARGUMENTS = StateArguments((), {}, ())


def state_arguments(model: nn.Module, example: torch.Tensor) -> StateArguments:
    """Work out the state arguments ``model``'s forward requires (see the module docstring)."""
    required = _required_parameters(model)
    if not required:
        return NO_ARGUMENTS
    _refuse_scalar_parameters(model, required)
    modules = find_recurrent(model) or find_cells(model)
    if not modules:
        raise ExportError(
            f"{type(model).__name__}.forward requires {_quoted(required)} besides the input; "
            "the exporter supplies state arguments only to recurrent layers and cells"
        )
    groups = [_state_shapes(m) for _, m in modules]
    # the layer's layout first, then the other (the forward may transpose its input, and a cell
    # loop's layout is its own): the batch is the axis that makes the state fit
    first = 0 if not find_recurrent(model) or RecurrentSpec.of(modules[0][1]).batch_first else 1
    batch_axes = [first, 1 - first] if example.shape[0] != example.shape[1] else [first]
    failures = []
    for batch_axis in batch_axes:
        batch = example.shape[batch_axis]
        for template in _candidates(model, required, groups, batch):
            try:
                received = _run_with_hooks(model, example, template, modules)
            except Exception as e:  # a user's forward can raise anything: try the next structure
                failures.append(first_line(e))
                continue
            targets = _map(template, received, required, model)
            shapes = tuple(shape for group in groups for shape in group)
            return StateArguments(template, targets, shapes, batch_axis)
    if len(required) == 1 and find_recurrent(model):
        packing = packing_argument_refusal(model, example, required[0], modules, batch_axes[0] == 0)
        if packing is not None:
            raise packing
    name, arguments = type(model).__name__, _quoted(required)
    subject = arguments if len(required) == 1 else f"one of {arguments}"
    failures = failures or [f"its layers have no state structure of {len(required)} arguments"]
    if _runs_on_one_step_of_one_sequence(model, example, required, groups):
        raise ExportError(
            f"{name}.forward runs only on one step of one sequence, not on a random input of "
            f"shape {list(example.shape)} ({failures[0]}): its code pins the batch and time axes "
            "to 1 (e.g. view(1, 1, -1)).\nA streamed model takes any number of both: reshape "
            "with x.size(0) and x.size(1), or leave the input's shape to the layer."
        )
    raise ExportError(
        f"{name}.forward requires {arguments} besides the input; the exporter passes recurrent "
        f"state there, and the model fails on its layers' zero state ({failures[0]}).\nIf "
        f"{subject} is not recurrent state, fix its value in a wrapper module whose forward "
        "takes only the input; if it is, give the model an init_hidden(batch_size) method "
        "returning the zero state."
    )


def _runs_on_one_step_of_one_sequence(
    model: nn.Module, example: torch.Tensor, required: list[str], groups: list[list[Shape]]
) -> bool:
    """Whether the forward, failing on ``example``, runs on one step of one sequence but on
    neither two steps of one sequence nor one step of two."""

    def runs(x: torch.Tensor) -> bool:
        for template in _candidates(model, required, groups, batch=1):
            try:
                with torch.no_grad():
                    model(x, *template)
            except Exception:  # a user's forward can raise anything: not with this structure
                continue
            return True
        return False

    return runs(example[:1, :1]) and not runs(example[:1, :2]) and not runs(example[:2, :1])


def _required_parameters(model: nn.Module) -> list[str]:
    """Names of ``forward``'s positional parameters after the input that have no default."""
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]


def _refuse_scalar_parameters(model: nn.Module, required: list[str]) -> None:
    """Refuse a required argument annotated as a number, flag or string (``temperature:
    float``): it is no recurrent state, and a stream feeds the model only its input and state."""
    parameters = inspect.signature(model.forward).parameters
    for name in required:
        annotation = parameters[name].annotation
        kind = getattr(annotation, "__name__", annotation)
        if kind in ("float", "int", "bool", "str"):
            raise ExportError(
                f"{type(model).__name__}.forward requires {name!r} ({kind}) besides the input: "
                "not recurrent state, and a stream feeds the model only its input and state.\n"
                f"Fix {name!r} in a wrapper module whose forward(x, ...) calls the model with it "
                f"(one export per value), or give {name!r} a default."
            )


def _state_shapes(module: nn.Module) -> list[Shape]:
    """The shapes of a recurrent layer's or cell's state tensors (``h``, then ``c``)."""
    if isinstance(module, nn.RNNCellBase):
        count = 2 if isinstance(module, nn.LSTMCell) else 1
        return [(None, module.hidden_size)] * count
    spec = RecurrentSpec.of(module)
    rows = spec.num_layers * spec.dirs
    shapes: list[Shape] = [(rows, None, spec.out_size)]
    if spec.has_cell_state:
        shapes.append((rows, None, spec.hidden_size))
    return shapes


def _zero_states(shapes: tuple[Shape, ...] | list[Shape], batch: int) -> list[torch.Tensor]:
    return [torch.zeros([batch if d is None else d for d in shape]) for shape in shapes]


def _candidates(
    model: nn.Module, required: list[str], groups: list[list[Shape]], batch: int
) -> Iterator[tuple[object, ...]]:
    """Zero-state argument structures to try."""
    init_hidden = getattr(model, "init_hidden", None)
    if callable(init_hidden) and len(required) == 1 and _takes_an_argument(init_hidden):
        try:
            yield (init_hidden(batch),)
        except Exception as e:  # the user's helper: say how it failed
            raise ExportError(
                f"{type(model).__name__}.init_hidden({batch}) failed: {first_line(e)}"
            ) from e
    per_layer: list[object] = []
    flat: list[torch.Tensor] = []
    for group in groups:
        zeros = _zero_states(group, batch)
        flat += zeros
        per_layer.append(tuple(zeros) if len(zeros) > 1 else zeros[0])
    if len(required) == len(flat):
        yield tuple(flat)
    if len(required) == len(per_layer):
        yield tuple(per_layer)
    if len(required) == 1 and len(per_layer) > 1:
        yield (tuple(per_layer),)
        yield (list(per_layer),)


def _takes_an_argument(function: Callable) -> bool:
    """Whether ``function`` can be called with one positional argument (a batch size): a
    tutorial's ``init_hidden()`` builds a state of batch 1, so the exporter builds its own."""
    try:
        inspect.signature(function).bind(1)
    except TypeError:
        return False
    return True


def _run_with_hooks(
    model: nn.Module,
    example: torch.Tensor,
    arguments: tuple[object, ...],
    recurrent: list[tuple[str, nn.Module]],
) -> list[tuple[str, torch.Tensor | None]]:
    """Run the model once; each layer's received ``h`` and ``c`` (None when it got none)."""
    received: dict[str, tuple[torch.Tensor, ...]] = {}

    def recorder(name: str) -> Callable:
        def record(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            hx = args[1] if len(args) > 1 else kwargs.get("hx")
            received.setdefault(name, hx if isinstance(hx, tuple) else (hx,))  # a cell: 1st step

        return record

    hooks = [m.register_forward_pre_hook(recorder(n), with_kwargs=True) for n, m in recurrent]
    try:
        with torch.no_grad():
            model(example, *arguments)
    finally:
        for hook in hooks:
            hook.remove()
    flat = []
    for name, module in recurrent:
        kinds = ("h", "c")[: len(_state_shapes(module))]
        got = received.get(name, ())
        for i, kind in enumerate(kinds):
            flat.append((f"{name}'s {kind}", got[i] if i < len(got) else None))
    return flat


def _map(
    template: tuple[object, ...],
    received: list[tuple[str, torch.Tensor | None]],
    required: list[str],
    model: nn.Module,
) -> dict[Path, int]:
    """Each argument tensor's index in the flat state list, found by memory identity."""
    targets: dict[Path, int] = {}

    def place(path: Path, tensor: torch.Tensor) -> torch.Tensor:
        where = _where(path, required)
        memory = tensor.untyped_storage().data_ptr()
        for index, (label, got) in enumerate(received):
            if got is None or got.untyped_storage().data_ptr() != memory:
                continue
            if got.shape != tensor.shape:
                raise ExportError(
                    f"argument {where} reaches {label} only in part (shape "
                    f"{list(tensor.shape)}, the state {list(got.shape)}); pass each recurrent "
                    "layer's state as a tensor of its own"
                )
            targets[path] = index
            return tensor
        raise ExportError(
            f"argument {where} of {type(model).__name__}.forward does not reach any recurrent "
            "layer as its initial state (checked by running the model once); the exporter can "
            "supply only state arguments: fix the others in a wrapper module"
        )

    _rebuild(template, place, ())
    return targets


def _rebuild(value: object, leaf: Callable[[Path, torch.Tensor], object], path: Path) -> object:
    """``value`` with each tensor in its tuples, lists and dicts replaced by ``leaf(path, t)``."""
    if isinstance(value, torch.Tensor):
        return leaf(path, value)
    if isinstance(value, (tuple, list)):
        items = [_rebuild(v, leaf, (*path, i)) for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        return {k: _rebuild(v, leaf, (*path, k)) for k, v in value.items()}
    return value


def _where(path: Path, required: list[str]) -> str:
    index, *keys = path
    name = required[index] if index < len(required) else f"#{index + 1}"
    return repr(name) + "".join(f"[{k!r}]" for k in keys)


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)
