"""Shared setup for the export tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def torch_single_thread() -> Iterator[None]:
    """Run the PyTorch reference on one thread.

    The models here are tiny and run 1000 sequential steps: with several intra-op threads on a
    small, shared CPU, torch's thread pool contends with onnxruntime and any other process and a
    one-second export can take twenty. One thread is as fast when idle and stable when busy.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
