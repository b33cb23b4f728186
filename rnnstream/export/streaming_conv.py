"""Causal convolutions over time, exported to stream: each one's left context is a state pair.

A ``nn.Conv1d`` sliding over the time axis, or a ``nn.Conv2d`` one of whose two axes is time
(``[batch, ch, time, freq]`` or ``[batch, ch, freq, time]``), needs the ``(k-1)·dilation`` input
frames before the ones it is given. In a stream they are a state: ``<module path>_ctx0`` in,
``<module path>_ctxn`` out, zeros at the start (what causal zero padding feeds the whole-sequence
forward). While tracing, each such convolution is swapped for a :class:`StreamingConv` that
concatenates the context with the new frames, convolves without time padding (a Conv2d keeps its
padding and stride over frequency) and writes the last frames back as the new context.

Which convolutions slide over time, and whether they are causal, is decided by probing the model
in PyTorch (:func:`find_time_convs`): two forwards with inputs one step apart tell each module's
time length, and a perturbed input step tells whether any output before it moves. A convolution
that looks ahead, strides, or sits after a pooling over time is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rnnstream.errors import ExportError
from rnnstream.runtime import StateSpec

__all__ = ["StreamingConv", "TimeConv", "find_time_convs", "install_streaming_convs"]

_ADAPTIVE_POOLS = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_POOLS = (
    nn.MaxPool1d,
    nn.AvgPool1d,
    nn.LPPool1d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.LPPool2d,
    *_ADAPTIVE_POOLS,
)
_ALTERNATIVE = (
    "pad it causally (padding=(k-1)*dilation and trim the output to the input's length, or "
    "F.pad(x, ((k-1)*dilation, 0)) before an unpadded convolution), or export it for "
    "whole-sequence use"
)


@dataclass(frozen=True)
class TimeConv:
    """One causal ``nn.Conv1d``/``nn.Conv2d`` over time and how it sits in the model.

    ``context`` is the number of past input frames it reads ((k-1)·dilation along time); ``lead``
    the leading frames of its input that are explicit zero padding (``F.pad``), which the context
    replaces; ``trail`` the frames its input has past the last step (an untrimmed tail of an
    earlier convolution); ``tail`` the frames it outputs past the last step. The model trims the
    tails. ``time_dim`` is the time axis of its input (2 for ``[batch, ch, time, ...]``) and
    ``frame`` the sizes of its other axes after the channels (a Conv2d's frequency bins).
    """

    key: str
    channels: int
    context: int
    lead: int
    trail: int
    tail: int
    time_dim: int = 2
    frame: tuple[int, ...] = ()

    def steps_of(self, conv_input: torch.Tensor) -> torch.Tensor:
        """The frames of ``conv_input`` that are input steps (without lead and trail)."""
        end = conv_input.shape[self.time_dim] - self.trail
        return _along(conv_input, self.time_dim, self.lead, end)

    @property
    def state_names(self) -> tuple[str, str]:
        prefix = self.key.replace(".", "_")
        return f"{prefix}_ctx0", f"{prefix}_ctxn"

    @property
    def context_shape(self) -> tuple[int, ...]:
        """The context's shape without the batch axis: channels, then the time and frame axes."""
        axes = list(self.frame)
        axes.insert(self.time_dim - 2, self.context)
        return (self.channels, *axes)

    def state_spec(self) -> StateSpec:
        name_in, name_out = self.state_names
        return StateSpec(name_in, name_out, "float32", ("batch", *self.context_shape), batch_axis=0)

    def final_context(self, conv_input: torch.Tensor) -> torch.Tensor:
        """The context after a whole-sequence forward gave the convolution ``conv_input``."""
        frames = self.steps_of(conv_input)
        zeros = frames.new_zeros(frames.shape[0], *self.context_shape)
        full = torch.cat([zeros, frames], dim=self.time_dim)
        return self.last_frames(full)

    def last_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """The last ``context`` frames of ``frames`` along the time axis: the next context."""
        end = frames.shape[self.time_dim]
        return _along(frames, self.time_dim, end - self.context, end)


def _along(t: torch.Tensor, dim: int, start: object, stop: object) -> torch.Tensor:
    """``t[..., start:stop, ...]`` with the slice on axis ``dim``."""
    return t[(slice(None),) * dim + (slice(start, stop),)]


class StreamingConv(nn.Module):
    """Stands in for a causal ``nn.Conv1d``/``nn.Conv2d`` while tracing: its context comes from
    graph inputs."""

    state_count = 1

    def __init__(self, conv: nn.Conv1d | nn.Conv2d, time_conv: TimeConv) -> None:
        super().__init__()
        self.conv = conv
        self.time_conv = time_conv
        self.state_in: tuple[torch.Tensor, ...] = ()
        self.state_out: tuple[torch.Tensor, ...] = ()

    def __getattr__(self, name: str) -> object:
        """The convolution's own attributes (``dilation``, ``padding``…), which models read."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["conv"], name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tc = self.time_conv
        full = torch.cat([self.state_in[0], tc.steps_of(x)], dim=tc.time_dim)
        self.state_out = (tc.last_frames(full),)
        y = _convolve_unpadded_in_time(self.conv, full, tc.time_dim)
        if not tc.tail:
            return y
        after = y.dim() - 1 - tc.time_dim  # F.pad lists the axes from the last one
        return F.pad(y, (0, 0) * after + (0, tc.tail))


def _convolve_unpadded_in_time(
    conv: nn.Conv1d | nn.Conv2d, x: torch.Tensor, time_dim: int
) -> torch.Tensor:
    """``conv`` on ``x`` with no padding and stride 1 along time; a Conv2d keeps its padding
    (any mode) and stride along the other axis."""
    if isinstance(conv, nn.Conv1d):
        return F.conv1d(x, conv.weight, conv.bias, 1, 0, conv.dilation, conv.groups)
    freq = 1 - (time_dim - 2)  # the other spatial axis, 0 or 1
    left, right = _padding(conv, freq)
    if left or right:
        pad = (left, right, 0, 0) if freq == 1 else (0, 0, left, right)
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, pad, mode=mode)
    stride = (1, conv.stride[1]) if freq == 1 else (conv.stride[0], 1)
    return F.conv2d(x, conv.weight, conv.bias, stride, 0, conv.dilation, conv.groups)


def _padding(conv: nn.Conv1d | nn.Conv2d, axis: int) -> tuple[int, int]:
    """The left and right padding of ``conv`` along its spatial ``axis``."""
    if conv.padding == "valid":
        return 0, 0
    if conv.padding == "same":
        total = conv.dilation[axis] * (conv.kernel_size[axis] - 1)
        return total // 2, total - total // 2
    return conv.padding[axis], conv.padding[axis]


def install_streaming_convs(model: nn.Module, convs: list[TimeConv]) -> list[StreamingConv]:
    """Swap (in place) each convolution of ``convs`` in ``model`` for a :class:`StreamingConv`."""
    installed = []
    for tc in convs:
        parent_name, _, attr = tc.key.rpartition(".")
        parent = model.get_submodule(parent_name)
        streaming = StreamingConv(getattr(parent, attr), tc)
        setattr(parent, attr, streaming)
        installed.append(streaming)
    return installed


@dataclass
class _Seen:
    """A module's input and output in one probing forward."""

    input: torch.Tensor
    output: torch.Tensor


def _forward_seeing(
    model: nn.Module, x: torch.Tensor, modules: dict[str, nn.Module]
) -> tuple[torch.Tensor, dict[str, _Seen]]:
    seen: dict[str, _Seen] = {}

    def keeper(name: str):
        def keep(_module: nn.Module, args: tuple, out: object) -> None:
            if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                seen.setdefault(name, _Seen(args[0].detach(), out.detach()))

        return keep

    hooks = [m.register_forward_hook(keeper(name)) for name, m in modules.items()]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    return out, seen


def _one_more_step(x: torch.Tensor, time_axis: int) -> torch.Tensor:
    return torch.cat([x, x.narrow(time_axis, 0, 1)], dim=time_axis)


def _perturbed(x: torch.Tensor, time_axis: int, step: int) -> torch.Tensor:
    """``x`` with input step ``step`` changed (a large shift, or the next token id)."""
    changed = x.clone()
    frame = changed.narrow(time_axis, step, 1)
    if x.is_floating_point():
        frame.add_(10.0)
    else:
        frame.copy_((frame + 1) % (int(x.max()) + 1))
    return changed


def find_time_convs(model: nn.Module, x: torch.Tensor, time_axis: int) -> list[TimeConv]:
    """The causal ``nn.Conv1d``/``nn.Conv2d`` layers of ``model`` that slide over the time axis
    of ``x``.

    Probes ``model`` (in eval mode) on ``x`` and on ``x`` one step longer. Raises
    :class:`ExportError` naming the module for a convolution that looks ahead, strides over time
    or pads time with anything but zeros, for a pooling over time or a ``Conv3d`` over time, and
    for a model whose output loses steps or changes before an input step that changed.
    """
    watched = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, *_POOLS))
    }
    if not watched:
        return []
    steps = x.shape[time_axis]
    y_a, seen_a = _forward_seeing(model, x, watched)
    y_b, seen_b = _forward_seeing(model, _one_more_step(x, time_axis), watched)
    _, seen_last = _forward_seeing(model, _perturbed(x, time_axis, steps - 1), watched)
    convs = []
    for name, module in watched.items():
        if name not in seen_a or name not in seen_b:
            continue
        a, b = seen_a[name], seen_b[name]
        if a.input.shape[2:] == b.input.shape[2:]:
            continue  # slides over features only: every step is independent
        found = _time_conv(name, module, a, b, seen_last.get(name), steps)
        if found is not None:
            convs.append(found)
    if convs:
        _check_output_steps(y_a, y_b, steps, time_axis, convs)
        _check_causal(model, x, y_a, time_axis, convs)
    return convs


def _time_conv(
    name: str, module: nn.Module, a: _Seen, b: _Seen, last: _Seen | None, steps: int
) -> TimeConv | None:
    """``module`` as a streaming convolution (None if pointwise in time), seen in the forwards on
    ``x`` (``a``), on ``x`` one step longer (``b``) and on ``x`` with its last step changed
    (``last``).
    """
    label = f"{type(module).__name__} {name!r}"
    moving = [d for d in range(2, a.input.dim()) if a.input.shape[d] != b.input.shape[d]]
    if isinstance(module, _POOLS):
        if len(moving) == 1 and _pools_pointwise_in_time(module, a, b, moving[0]):
            return None  # pools over frequency or channels only
        raise ExportError(
            f"{label} pools over time: its output step does not match one input step, so it "
            "cannot stream one frame at a time; pool over features, or export for "
            "whole-sequence use"
        )
    spatial = 1 if isinstance(module, nn.Conv1d) else 2 if isinstance(module, nn.Conv2d) else 0
    if not spatial or a.input.dim() != 2 + spatial or len(moving) != 1:
        raise ExportError(
            f"{label} slides over time with a {a.input.dim()}-D input; only batched nn.Conv1d "
            "over time and nn.Conv2d with one time axis stream so far; export it for "
            "whole-sequence use"
        )
    time_dim = moving[0]
    axis = time_dim - 2  # the time axis among the convolution's spatial axes
    extra = a.input.shape[time_dim] - steps
    if b.input.shape[time_dim] - (steps + 1) != extra or extra < 0:
        raise ExportError(
            f"{label} gets {a.input.shape[time_dim]} frames for {steps} input steps: something "
            "before it strides, pools or crops over time, so it cannot stream one frame at a "
            "time; export it for whole-sequence use"
        )
    stride, kernel, dilation = module.stride[axis], module.kernel_size[axis], module.dilation[axis]
    if stride != 1:
        raise ExportError(
            f"{label} strides over time (stride {stride}): an output every {stride} steps cannot "
            "stream one frame at a time; use stride 1 along time, or export for whole-sequence "
            "use"
        )
    context = (kernel - 1) * dilation
    declared = _padding(module, axis)[0]
    changed = _first_changed_frame(a.input, last, time_dim)
    lead = changed - (steps - 1)
    if lead < 0:
        raise ExportError(
            f"the input of {label} changes {-lead} frame(s) before the input step that changed: "
            "something before it looks ahead, so it cannot stream one frame at a time; export "
            "it for whole-sequence use"
        )
    left = _left_padding_seen(a, last, time_dim, changed, context)
    left = declared if left is None else left
    if context == 0 and left == 0 and lead == 0:
        return None  # pointwise in time: every step is independent
    if declared and module.padding_mode != "zeros":
        raise ExportError(
            f"{label} pads with {module.padding_mode!r}; a stream starts from a zero context, so "
            f"only zero padding streams; {_ALTERNATIVE}"
        )
    if lead and _along(a.input, time_dim, 0, lead).abs().max() != 0:
        raise ExportError(
            f"{label} gets {lead} extra leading frames that are not zero padding; only zero "
            f"left padding streams; {_ALTERNATIVE}"
        )
    if left + lead < context:
        raise ExportError(
            f"{label} looks {context - left - lead} step(s) ahead (kernel {kernel}, dilation "
            f"{dilation}, left padding {left + lead} along time): its output at step t reads "
            "inputs after t, which a stream does not have yet; " + _ALTERNATIVE
        )
    if left + lead > context:
        raise ExportError(
            f"{label} pads {left + lead} frames on the left for a context of {context}: its "
            f"output lags its input; {_ALTERNATIVE}"
        )
    tail = a.output.shape[time_dim] - steps
    frame = tuple(a.input.shape[d] for d in range(2, a.input.dim()) if d != time_dim)
    found = TimeConv(name, module.in_channels, context, lead, extra - lead, tail, time_dim, frame)
    _check_plain_convolution(label, module, a, found, steps)
    return found


def _check_plain_convolution(
    label: str, module: nn.Conv1d | nn.Conv2d, a: _Seen, tc: TimeConv, steps: int
) -> None:
    """Refuse a convolution whose output is not what its streaming stand-in computes from the
    same input (a subclass whose ``forward`` does more than pad and trim)."""
    streaming = StreamingConv(module, tc)
    streaming.state_in = (a.input.new_zeros(a.input.shape[0], *tc.context_shape),)
    with torch.no_grad():
        got = _along(streaming(a.input), tc.time_dim, 0, steps)
    want = _along(a.output, tc.time_dim, 0, steps)
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
        raise ExportError(
            f"{label} computes more in its forward than a convolution with causal padding (an "
            "activation or a scaling in a subclass?): the stream could not reproduce it; move "
            "that work after the convolution, or export for whole-sequence use"
        )


def _pools_pointwise_in_time(module: nn.Module, a: _Seen, b: _Seen, time_dim: int) -> bool:
    """Whether the pooling ``module`` keeps every time step apart (a kernel and stride of 1
    along time, as a pooling over frequency has)."""
    if isinstance(module, _ADAPTIVE_POOLS):
        return all(s.output.shape[time_dim] == s.input.shape[time_dim] for s in (a, b))
    axes = a.input.dim() - 2

    def along_time(value: object) -> object:
        if isinstance(value, (tuple, list)) and len(value) == axes:
            return value[time_dim - 2]
        return value

    kernel = along_time(module.kernel_size)
    stride = along_time(module.stride or module.kernel_size)
    padding = along_time(getattr(module, "padding", 0))
    return kernel == 1 and stride == 1 and padding == 0


def _first_changed_frame(conv_input: torch.Tensor, last: _Seen | None, time_dim: int) -> int:
    """The first frame of ``conv_input`` that changed when the last input step did."""
    first = None if last is None else _first_difference(conv_input, last.input, time_dim)
    return conv_input.shape[time_dim] - 1 if first is None else first


def _left_padding_seen(
    a: _Seen, last: _Seen | None, time_dim: int, changed: int, context: int
) -> int | None:
    """The left padding along time the convolution applies itself, as its output shows it: its
    ``padding``, or an ``F.pad`` in the ``forward`` of a subclass. Input frame ``changed`` first
    moves output frame ``changed + left - context``. None when the output does not tell."""
    if last is None or last.output.shape != a.output.shape:
        return None
    first = _first_difference(a.output, last.output, time_dim)
    return None if not first else first - changed + context


def _first_difference(x: torch.Tensor, y: torch.Tensor, time_dim: int) -> int | None:
    """The first frame along ``time_dim`` where ``x`` and ``y`` differ (None if none does)."""
    differs = (x != y).movedim(time_dim, -1).flatten(0, -2).any(dim=0).nonzero()
    return int(differs[0]) if len(differs) else None


def _check_output_steps(
    y_a: torch.Tensor, y_b: torch.Tensor, steps: int, time_axis: int, convs: list[TimeConv]
) -> None:
    if y_a.dim() <= time_axis or y_a.shape[time_axis] == y_b.shape[time_axis]:
        return  # no time axis in the output
    if y_a.shape[time_axis] != steps:
        padded = [tc.key for tc in convs if tc.tail] or [tc.key for tc in convs]
        raise ExportError(
            f"the model outputs {y_a.shape[time_axis]} steps for {steps} input steps; a stream "
            f"needs one output per step: trim the output of {padded} to its input's length "
            "(y[..., :T])"
        )


def _check_causal(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, time_axis: int, convs: list[TimeConv]
) -> None:
    steps = x.shape[time_axis]
    if steps < 2 or y.dim() <= time_axis or y.shape[time_axis] != steps:
        return
    changed_step = steps // 2
    with torch.no_grad():
        y_perturbed = model(_perturbed(x, time_axis, changed_step))
    if isinstance(y_perturbed, (tuple, list)):
        y_perturbed = y_perturbed[0]
    before = y.narrow(time_axis, 0, changed_step)
    after = y_perturbed.narrow(time_axis, 0, changed_step)
    if not torch.allclose(before, after, rtol=1e-5, atol=1e-6):
        raise ExportError(
            f"the model's output before step {changed_step} changes when input step "
            f"{changed_step} changes: it looks ahead, so it cannot stream one frame at a time "
            f"(its time convolutions {[tc.key for tc in convs]} pad causally; something else, "
            "such as a trim from the left or attention over time, reads the future); export it "
            "for whole-sequence use"
        )
