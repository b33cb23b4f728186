"""Causal convolutions over time, exported to stream: each one's left context is a state pair.

A ``nn.Conv1d`` sliding over the time axis needs the ``(k-1)·dilation`` input frames before the
ones it is given. In a stream they are a state: ``<module path>_ctx0`` in, ``<module path>_ctxn``
out, zeros at the start (what causal zero padding feeds the whole-sequence forward). While tracing,
each such convolution is swapped for a :class:`StreamingConv1d` that concatenates the context with
the new frames, convolves without time padding and writes the last frames back as the new context.

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

__all__ = ["StreamingConv1d", "TimeConv", "find_time_convs", "install_streaming_convs"]

_POOLS = (
    nn.MaxPool1d,
    nn.AvgPool1d,
    nn.LPPool1d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
)
_ALTERNATIVE = (
    "pad it causally (padding=(k-1)*dilation and trim the output to the input's length, or "
    "F.pad(x, ((k-1)*dilation, 0)) before an unpadded convolution), or export it for "
    "whole-sequence use"
)


@dataclass(frozen=True)
class TimeConv:
    """One causal ``nn.Conv1d`` over time and how it sits in the model.

    ``context`` is the number of past input frames it reads ((k-1)·dilation); ``lead`` the leading
    frames of its input that are explicit zero padding (``F.pad``), which the context replaces;
    ``trail`` the frames its input has past the last step (an untrimmed tail of an earlier
    convolution); ``tail`` the frames it outputs past the last step. The model trims the tails.
    """

    key: str
    channels: int
    context: int
    lead: int
    trail: int
    tail: int

    def steps_of(self, conv_input: torch.Tensor) -> torch.Tensor:
        """The frames of ``conv_input`` that are input steps (without lead and trail)."""
        return conv_input[..., self.lead : conv_input.shape[-1] - self.trail]

    @property
    def state_names(self) -> tuple[str, str]:
        prefix = self.key.replace(".", "_")
        return f"{prefix}_ctx0", f"{prefix}_ctxn"

    def state_spec(self) -> StateSpec:
        name_in, name_out = self.state_names
        return StateSpec(
            name_in, name_out, "float32", ("batch", self.channels, self.context), batch_axis=0
        )

    def final_context(self, conv_input: torch.Tensor) -> torch.Tensor:
        """The context after a whole-sequence forward gave the convolution ``conv_input``."""
        frames = self.steps_of(conv_input)
        zeros = frames.new_zeros(frames.shape[0], self.channels, self.context)
        return torch.cat([zeros, frames], dim=-1)[..., -self.context :]


class StreamingConv1d(nn.Module):
    """Stands in for a causal ``nn.Conv1d`` while tracing: its context comes from graph inputs."""

    state_count = 1

    def __init__(self, conv: nn.Conv1d, time_conv: TimeConv) -> None:
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
        tc, conv = self.time_conv, self.conv
        full = torch.cat([self.state_in[0], tc.steps_of(x)], dim=-1)
        y = F.conv1d(full, conv.weight, conv.bias, 1, 0, conv.dilation, conv.groups)
        self.state_out = (full[..., full.shape[-1] - tc.context :],)
        return F.pad(y, (0, tc.tail)) if tc.tail else y


def install_streaming_convs(model: nn.Module, convs: list[TimeConv]) -> list[StreamingConv1d]:
    """Swap (in place) each convolution of ``convs`` in ``model`` for a :class:`StreamingConv1d`."""
    installed = []
    for tc in convs:
        parent_name, _, attr = tc.key.rpartition(".")
        parent = model.get_submodule(parent_name)
        streaming = StreamingConv1d(getattr(parent, attr), tc)
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
    """The causal ``nn.Conv1d`` layers of ``model`` that slide over the time axis of ``x``.

    Probes ``model`` (in eval mode) on ``x`` and on ``x`` one step longer. Raises
    :class:`ExportError` naming the module for a convolution that looks ahead, strides or pads
    with anything but zeros, for a pooling or a ``Conv2d``/``Conv3d`` over time, and for a model
    whose output loses steps or changes before an input step that changed.
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
    """``module`` as a streaming convolution (None if pointwise), seen in the forwards on ``x``
    (``a``), on ``x`` one step longer (``b``) and on ``x`` with its last step changed (``last``).
    """
    label = f"{type(module).__name__} {name!r}"
    if isinstance(module, _POOLS):
        raise ExportError(
            f"{label} pools over time: its output step does not match one input step, so it "
            "cannot stream one frame at a time; pool over features, or export for "
            "whole-sequence use"
        )
    if not isinstance(module, nn.Conv1d) or a.input.dim() != 3:
        raise ExportError(
            f"{label} slides over time with a {a.input.dim()}-D input; only batched nn.Conv1d "
            "over time streams so far; export it for whole-sequence use"
        )
    extra = a.input.shape[-1] - steps
    if b.input.shape[-1] - (steps + 1) != extra or extra < 0:
        raise ExportError(
            f"{label} gets {a.input.shape[-1]} frames for {steps} input steps: something before "
            "it strides, pools or crops over time, so it cannot stream one frame at a time; "
            "export it for whole-sequence use"
        )
    if module.stride[0] != 1:
        raise ExportError(
            f"{label} strides over time (stride {module.stride[0]}): an output every "
            f"{module.stride[0]} steps cannot stream one frame at a time; use stride 1, or "
            "export for whole-sequence use"
        )
    context = (module.kernel_size[0] - 1) * module.dilation[0]
    if isinstance(module.padding, str):
        left = 0 if module.padding == "valid" else context // 2
    else:
        left = module.padding[0]
    lead = _first_changed_frame(a.input, last) - (steps - 1)
    if lead < 0:
        raise ExportError(
            f"the input of {label} changes {-lead} frame(s) before the input step that changed: "
            "something before it looks ahead, so it cannot stream one frame at a time; export "
            "it for whole-sequence use"
        )
    if context == 0 and left == 0 and lead == 0:
        return None  # a pointwise convolution: every step is independent
    if left and module.padding_mode != "zeros":
        raise ExportError(
            f"{label} pads with {module.padding_mode!r}; a stream starts from a zero context, so "
            f"only zero padding streams; {_ALTERNATIVE}"
        )
    if lead and a.input[..., :lead].abs().max() != 0:
        raise ExportError(
            f"{label} gets {lead} extra leading frames that are not zero padding; only zero "
            f"left padding streams; {_ALTERNATIVE}"
        )
    if left + lead < context:
        raise ExportError(
            f"{label} looks {context - left - lead} step(s) ahead (kernel {module.kernel_size[0]}, "
            f"dilation {module.dilation[0]}, left padding {left + lead}): its output at step t "
            "reads inputs after t, which a stream does not have yet; " + _ALTERNATIVE
        )
    if left + lead > context:
        raise ExportError(
            f"{label} pads {left + lead} frames on the left for a context of {context}: its "
            f"output lags its input; {_ALTERNATIVE}"
        )
    tail = a.output.shape[-1] - steps
    return TimeConv(name, module.in_channels, context, lead, extra - lead, tail)


def _first_changed_frame(conv_input: torch.Tensor, last: _Seen | None) -> int:
    """The first frame of ``conv_input`` that changed when the last input step did."""
    if last is None:
        return conv_input.shape[-1] - 1
    changed = (last.input != conv_input).flatten(0, -2).any(dim=0).nonzero()
    return int(changed[0]) if len(changed) else conv_input.shape[-1] - 1


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
