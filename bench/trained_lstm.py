"""Small LSTMs trained for a few seconds, for accuracy measurements of reduced-precision weights.

Random-init weights flatter any format: their gates sit near 0.5 and |c| stays near 1. A trained
LSTM has saturated gates, rows with a few large weights and cell states far from zero, which is
where rounding the weights shows. The task here makes that happen quickly: the sign of a running
sum of the first input channel over long sequences, which the network solves by integrating the
input in c (forget gate near 1, |c| growing like the sum, well above 10).
"""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np


# Inputs of standard deviation 3 make the running sums, and so |c|, large (max |c| ~ 40 at H=64).
INPUT_SCALE = 3.0


def train_integrator(input_size: int = 8, hidden_size: int = 64, num_layers: int = 1, seq_len: int = 200,
                     steps: int = 200, seed: int = 0) -> Any:
    """An nn.LSTM (float32, eval mode) trained for `steps` Adam steps on the running-sum-sign task
    (about 3 s at the defaults on one core)."""
    import torch
    from torch import nn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: more threads only contend (10x slower on a busy 2-core host)
    try:
        return _train(input_size, hidden_size, num_layers, seq_len, steps, seed)
    finally:
        torch.set_num_threads(threads)


def _train(input_size: int, hidden_size: int, num_layers: int, seq_len: int, steps: int, seed: int) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    lstm = nn.LSTM(input_size, hidden_size, num_layers)
    head = nn.Linear(hidden_size, 1)
    params = list(lstm.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=2e-2)
    for _ in range(steps):
        x = torch.randn(seq_len, 32, input_size) * INPUT_SCALE
        target = (torch.cumsum(x[..., 0], 0) > 0).float()
        out, _ = lstm(x)
        loss = nn.functional.binary_cross_entropy_with_logits(head(out).squeeze(-1), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return lstm.eval()


def long_inputs(input_size: int, seq_len: int, batch: int, seed: int = 1) -> np.ndarray:
    """Inputs (T, B, I) like the training data."""
    return (np.random.default_rng(seed).standard_normal((seq_len, batch, input_size)) * INPUT_SCALE).astype(np.float32)


def float64_reference(lstm: Any, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(output, h_n, c_n) of the module's own float32 weights, computed in float64."""
    import copy

    import torch

    with torch.no_grad():
        out, (h, c) = copy.deepcopy(lstm).double()(torch.from_numpy(x).double())
    return out.numpy(), h.numpy(), c.numpy()
