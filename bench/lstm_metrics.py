"""Roofline-style numbers derived from a config: arithmetic done and recurrent weight bytes streamed.

They turn a time into an efficiency: GFLOP/s against the machine's single-core sgemm peak (meaningful
at large batch, where the work is GEMM) and W_hh GB/s per step (meaningful at batch 1, where each
step is a matrix-vector product bound by how fast W_hh streams from cache).
"""

from __future__ import annotations

from typing import Callable

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


def input_projection_flops(config: BenchConfig) -> int:
    """The part of lstm_forward_flops that does not depend on the previous step: x W_ih^T for every
    layer and direction, one GEMM over all time steps."""
    lstm = config.lstm
    tokens = config.seq_len * config.batch
    return sum(2 * tokens * 4 * lstm.hidden_size * lstm.layer_input_size(layer) for layer, _ in lstm.layers_and_directions())


def input_matrix_bytes(config: BenchConfig, layer: int) -> int:
    """Bytes of one W_ih (fp32) of `layer`."""
    lstm = config.lstm
    return 4 * lstm.hidden_size * lstm.layer_input_size(layer) * FLOAT32_BYTES


def recurrent_matrix_bytes(config: BenchConfig) -> int:
    """Bytes of one W_hh (fp32): what one layer and direction streams per time step at batch 1."""
    lstm = config.lstm
    return 4 * lstm.hidden_size * lstm.output_hidden_size * FLOAT32_BYTES


def recurrent_weight_bytes_per_step(config: BenchConfig) -> int:
    """Bytes of W_hh (fp32) over all layers and directions: what one time step must stream."""
    lstm = config.lstm
    return recurrent_matrix_bytes(config) * lstm.num_layers * lstm.num_directions


def batch1_floor_microseconds(
    config: BenchConfig, read_seconds: Callable[[int], float], sgemm_peak_gflops: float, threads: int = 1
) -> float:
    """A lower bound on one batch-1 call: every step reads each W_hh once (its 1/threads share per
    core, at the measured rate of reading that many cached bytes) and the input projection runs at
    the sgemm peak on every thread (or, if slower, reads each W_ih once). Assumes the two never
    overlap, and ignores the recurrent FLOPs, gate math and overhead; anything exact in fp32 must
    still read W_hh once per step.
    """
    lstm = config.lstm
    steps = config.seq_len * lstm.num_layers * lstm.num_directions
    read = steps * read_seconds(recurrent_matrix_bytes(config) // threads)
    # The projection is bound by its FLOPs, or at short sequences by reading each W_ih once.
    projection = max(
        input_projection_flops(config) / (sgemm_peak_gflops * 1e9 * threads),
        sum(read_seconds(input_matrix_bytes(config, layer) // threads) for layer, _ in lstm.layers_and_directions()),
    )
    return (read + projection) * 1e6


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
