"""How close a model of each precision must stay to its float32 PyTorch original.

A tensor (the output, or a final state) passes when its largest absolute error is within ``atol``
or its largest error relative to the tensor's largest magnitude (``max_rel_err``) is within
``rtol``; a lower-precision model must also not lose more than ``max_bpc_increase`` bits per
character on its validation text (models with a task metric).

Float32 is held to rounding: 1e-5 absolute, or, for a tensor whose values are so large that 1e-5
is below float32's resolution, 1e-6 of its largest magnitude (about 8 units in the last place).
A trained LSTM's cell state reaches hundreds, where one float32 step is already 3e-5; its
measured error there is 2e-7 relative (the demo model, seeds 0-5), while its outputs stay within
1e-5 absolute.
"""

from __future__ import annotations

from dataclasses import dataclass

from rnnstream.errors import ExportError
from rnnstream.runtime.parity_record import ParityRecord

__all__ = ["TOLERANCES", "Tolerance", "tolerance_for"]


@dataclass(frozen=True)
class Tolerance:
    """Parity limits of one precision (see the module docstring for how they combine)."""

    atol: float
    rtol: float = 0.0
    max_bpc_increase: float = 0.0


# From measurement (README, "Smaller models: int8 and float16"): over 1000-step random streams the
# largest relative errors were 0.075 (int8) and 0.0014 (float16), on trained 2x256 character LMs
# (random-weight models: 0.017 and 0.00055); the bits per character rose by at most 0.0004 and
# 0.00001. The limits leave 2-4x headroom on the errors; the bpc limits are what a user would
# still call the same model (0.6% and 0.06% of the demo model's 1.59 validation bpc).
#
# int4 (weight-only 4-bit, blocks of 32; rnnstream.export.int4), measured before choosing: the demo
# model's validation bpc rose from 1.4917 (PyTorch) to 1.5212 (+0.0296, 100,000 characters), and
# its file is 6.2x smaller. Element by element, a trained LM's int4 state drifts from PyTorch's over
# a 1000-step random stream: logits within 0.16-0.18 of their largest magnitude, but single units
# of h, which saturate at +-1, 0.56-0.81 apart (seeds 0-2); random-weight 2x256 LSTM/GRU/RNN
# models stayed within 0.05-0.15. So for int4 the relative bound (1.0) only catches a broken graph
# (a unit of h can differ by up to 2), and the task metric is the real limit: +0.05 bpc (3% of the
# demo's bpc, 1.7x the measured rise).
TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(atol=1e-5, rtol=1e-6),
    "float16": Tolerance(atol=1e-5, rtol=5e-3, max_bpc_increase=0.001),
    "int8": Tolerance(atol=1e-5, rtol=0.15, max_bpc_increase=0.01),
    "int4": Tolerance(atol=1e-5, rtol=1.0, max_bpc_increase=0.05),
}


def tolerance_for(precision: str, record: ParityRecord | None = None) -> Tolerance:
    """The tolerance recorded in a parity ``record`` of this precision, else the table's."""
    if precision not in TOLERANCES:
        raise ExportError(f"unknown precision {precision!r}; known: {sorted(TOLERANCES)}")
    table = TOLERANCES[precision]
    if record is None or record.precision != precision:
        return table
    return Tolerance(
        atol=record.atol,
        rtol=record.rtol,
        max_bpc_increase=record.task.max_increase if record.task else table.max_bpc_increase,
    )
