"""Roofline-style numbers derived from a config: arithmetic done and recurrent weight bytes streamed.

They turn a time into an efficiency: GFLOP/s against the machine's single-core sgemm peak (meaningful
at large batch, where the work is GEMM) and W_hh GB/s per step (meaningful at batch 1, where each
step is a matrix-vector product bound by how fast W_hh streams from cache).
"""

from __future__ import annotations

from fastlstm.bench.configs import BenchConfig

FLOAT32_BYTES = 4


def lstm_forward_flops(config: BenchConfig) -> int:
    """Multiply-adds (counted as 2 FLOPs) of one forward pass; elementwise gate math is ignored.

    Per layer and direction: 2*T*B*4H*(I_l + H_out) for the input and recurrent products, plus
    2*T*B*H*P for the projection when proj_size P > 0.
    """
    lstm = config.lstm
    tokens = config.seq_len * config.batch
    gates = 4 * lstm.hidden_size
    flops = 0
    for layer, _direction in lstm.layers_and_directions():
        flops += 2 * tokens * gates * (lstm.layer_input_size(layer) + lstm.output_hidden_size)
        if lstm.proj_size:
            flops += 2 * tokens * lstm.hidden_size * lstm.proj_size
    return flops


def recurrent_weight_bytes_per_step(config: BenchConfig) -> int:
    """Bytes of W_hh (fp32) over all layers and directions: what one time step must stream."""
    lstm = config.lstm
    per_matrix = 4 * lstm.hidden_size * lstm.output_hidden_size * FLOAT32_BYTES
    return per_matrix * lstm.num_layers * lstm.num_directions


def gflops_per_second(config: BenchConfig, seconds_per_call: float) -> float:
    return lstm_forward_flops(config) / seconds_per_call / 1e9


def per_step_microseconds(config: BenchConfig, microseconds_per_call: float) -> float:
    return microseconds_per_call / config.seq_len


def recurrent_weight_gbytes_per_second(config: BenchConfig, seconds_per_call: float) -> float:
    """W_hh bytes per step over the time of one step (whole call / T).

    The call also includes the input projection and per-call overhead, so this is a lower bound on
    the rate at which the recurrence itself streams W_hh.
    """
    seconds_per_step = seconds_per_call / config.seq_len
    return recurrent_weight_bytes_per_step(config) / seconds_per_step / 1e9
