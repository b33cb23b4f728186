"""Fixtures every test shares."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def seeded_global_rngs() -> None:
    """Seed the global RNGs (torch, numpy's legacy one, random) before every test.

    A test that draws from a global RNG then gets the same data whichever tests ran before it;
    tests that need their own draws still make a seeded generator of their own.
    """
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
