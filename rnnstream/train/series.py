"""Built-in time series: Mackey-Glass generated in code, or the columns of a CSV file.

A series is ``[T, F]`` float32; its first part is for training and its tail for validation
(split in time, so validation is the future of training).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Series", "load_csv", "load_series", "mackey_glass", "standardisation"]


@dataclass(frozen=True)
class Series:
    """Training and validation parts of one time series (``[T, F]`` float32)."""

    train: np.ndarray
    validation: np.ndarray
    source: str

    def describe(self) -> str:
        return (
            f"{self.source}: {self.train.shape[1]} feature(s), {len(self.train):,} training and "
            f"{len(self.validation):,} validation steps"
        )


def mackey_glass(
    length: int = 10000,
    tau: int = 17,
    beta: float = 0.2,
    gamma: float = 0.1,
    n: float = 10.0,
    dt: float = 0.1,
    sample_every: int = 10,
    x0: float = 1.2,
) -> np.ndarray:
    """The Mackey-Glass series ``dx/dt = beta x(t-tau) / (1 + x(t-tau)^n) - gamma x(t)``.

    Euler integration with step ``dt`` from a constant history ``x0``, sampled every
    ``sample_every`` steps (``dt * sample_every`` time units); returns ``[length, 1]`` float32.
    """
    lag = round(tau / dt)
    total = length * sample_every + lag
    x = np.empty(total)
    x[: lag + 1] = x0
    for t in range(lag, total - 1):
        delayed = x[t - lag]
        x[t + 1] = x[t] + dt * (beta * delayed / (1 + delayed**n) - gamma * x[t])
    return x[lag::sample_every][:length, None].astype(np.float32)


def load_csv(path: str | Path) -> np.ndarray:
    """The numeric columns of a CSV file as ``[T, F]`` float32 (a header line is skipped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines if line.strip()]
    try:
        [float(v) for v in rows[0].split(",")]
    except ValueError:
        rows = rows[1:]
    except IndexError:
        raise ValueError(f"{path} is empty") from None
    try:
        data = np.array([[float(v) for v in row.split(",")] for row in rows], dtype=np.float32)
    except ValueError as e:
        raise ValueError(f"{path}: not a CSV of numbers with equal-length rows ({e})") from e
    if data.ndim != 2 or len(data) < 2:
        raise ValueError(f"{path} needs at least two rows of numbers")
    return data


def load_series(data: str | Path, val_fraction: float = 0.2) -> Series:
    """``"mackey-glass"`` (10,000 steps) or the path of a CSV file, split in time."""
    if str(data) == "mackey-glass":
        values, source = mackey_glass(), "Mackey-Glass (tau 17)"
    else:
        values, source = load_csv(data), str(data)
    cut = len(values) - max(1, round(len(values) * val_fraction))
    if cut < 2 or len(values) - cut < 2:
        raise ValueError(f"{source}: {len(values)} steps are too few to split")
    return Series(values[:cut], values[cut:], source)


def standardisation(values: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature mean and spread of ``values`` (``[T, F]``), the spread floored at 1e-6 so that
    a constant feature scales by a finite number: what a forecaster standardises with."""
    scale = np.maximum(values.std(0), 1e-6)
    return tuple(values.mean(0).tolist()), tuple(scale.tolist())
