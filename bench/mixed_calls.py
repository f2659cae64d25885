"""A mixed workload of small calls covering every path a service takes, for memory checks.

Used by `bench/memory_check.py` (100k calls, RSS as it goes) and `tests/test_memory.py` (20k calls,
asserted): each call picks a model (fp32 1 layer; fp32 2-layer bidirectional with projection; fp64
3-layer batch_first), a batch of 1..4, a length of 1..8 and one path: numpy, numpy with hx and
lengths, torch tensors, PackedSequence, unbatched, a stream of step() calls, step() into caller
buffers, or calls the extension rejects. torch is optional: without it the torch paths are skipped.
"""

from __future__ import annotations

import gc
import os
from typing import Any, List, Optional

import numpy as np

import fastlstm

INPUT, HIDDEN = 6, 12
KINDS = 8  # the paths one_call can take
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _torch() -> Optional[Any]:
    try:
        import torch
    except ModuleNotFoundError:
        return None
    return torch


def resident_bytes() -> int:
    """This process's resident memory after a garbage collection (Linux /proc)."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def make_models() -> List[fastlstm.LSTM]:
    return [
        fastlstm.LSTM(INPUT, HIDDEN, seed=0),
        fastlstm.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, proj_size=5, seed=1),
        fastlstm.LSTM(INPUT, HIDDEN, num_layers=3, batch_first=True, dtype=np.float64, seed=2),
    ]


def one_call(model: fastlstm.LSTM, rng: np.random.Generator, kind: int) -> None:
    """One call of the workload: `kind` (0..KINDS-1) picks the path, rng the shapes."""
    torch = _torch()
    batch, steps = int(rng.integers(1, 5)), int(rng.integers(1, 9))
    dtype = model.dtype
    x = rng.standard_normal((batch, steps, INPUT) if model.batch_first else (steps, batch, INPUT)).astype(dtype)
    first = x[:, 0] if model.batch_first else x[0]
    h0, c0 = (a + 0.1 for a in model.initial_state(batch))
    if kind == 0:
        model(x)
    elif kind == 1:
        model(x, (h0, c0), lengths=rng.integers(1, steps + 1, size=batch))
    elif kind == 2 and torch is not None:
        out, _ = model(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
        assert isinstance(out, torch.Tensor)
    elif kind == 3 and torch is not None:
        from torch.nn.utils.rnn import pack_padded_sequence

        lengths = torch.from_numpy(rng.integers(1, steps + 1, size=batch))
        model(pack_padded_sequence(torch.from_numpy(x), lengths, batch_first=model.batch_first, enforce_sorted=False))
    elif kind == 4:
        model(rng.standard_normal((steps, INPUT)).astype(dtype), model.initial_state(None))  # unbatched
    elif kind == 5:
        state = model.initial_state(batch)
        for t in range(steps):
            _, state = model.step(x[:, t] if model.batch_first else x[t], state)
    elif kind == 6:
        width = model.config.num_directions * model.config.output_hidden_size
        output, h_n, c_n = np.empty((batch, width), dtype), h0.copy(), c0.copy()
        model.step(first, (h_n, c_n), out=(output, h_n, c_n))  # in place
    elif kind == 7:
        # Errors raised inside the extension, after it has taken references to the arrays.
        bad_out = np.empty((batch + 1, 3), dtype)
        for bad in (lambda: model.step(first, (h0, c0), out=(bad_out, h0.copy(), c0.copy())),
                    lambda: model(x, (h0, c0[..., :-1]))):
            try:
                bad()
            except (ValueError, TypeError):
                pass
            else:
                raise AssertionError("an invalid call was accepted")


def warm_up(models: List[fastlstm.LSTM], rng: np.random.Generator, mixed_calls: int) -> None:
    """Every path at the largest shapes (so the per-thread scratch reaches its high-water mark), then
    mixed calls for allocator pools (pymalloc arenas, torch's caches) to settle."""
    for model in models:
        for kind in range(KINDS):
            for _ in range(30):
                one_call(model, rng, kind)
    run_mixed(models, rng, mixed_calls)


def run_mixed(models: List[fastlstm.LSTM], rng: np.random.Generator, calls: int) -> None:
    for i in range(calls):
        one_call(models[i % len(models)], rng, int(rng.integers(KINDS)))
