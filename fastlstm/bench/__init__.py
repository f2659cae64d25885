"""fastlstm's benchmark suite: fastlstm vs torch.nn.LSTM vs ONNX Runtime, same weights, one process.

Run it as `fastlstm bench` (see `fastlstm bench --help`). The pieces, one purpose each:
configs (what is measured), weights (where every engine's weights come from), engines (one adapter
per engine), timing (interleaved per-call timing), suite (check outputs, then time), metrics
(FLOPs and W_hh bytes), machine (what the numbers ran on), report (markdown, JSON, chart), cli.
Heavy imports (torch, onnxruntime, matplotlib) happen only when a benchmark runs.
"""

from fastlstm.bench.configs import CONFIGS_BY_NAME, STANDARD_CONFIGS, BenchConfig

__all__ = ["BenchConfig", "CONFIGS_BY_NAME", "STANDARD_CONFIGS"]
