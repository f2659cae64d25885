"""`fastlstm bench --weights fp32,bf16,int8`: fastlstm's reduced-precision models beside the peers a
user would pick for them, OpenVINO at its default precision (bf16 on CPUs with AVX512_BF16 or AMX)
and torch's dynamic int8 LSTM, all on the same weights and inputs, timed interleaved with the rest.

Reduced-precision outputs are not held to the 1e-4 match with torch: their max abs error against
torch's float32 outputs is reported in the table instead (docs/reduced_precision.md measures the
errors against float64, on random and trained weights).
"""

from __future__ import annotations

import argparse
from typing import List, Optional, Sequence

from fastlstm.bench import report
from fastlstm.bench.engines import ENGINE_LABELS, build_engine
from fastlstm.bench.suite import CaseResult, Variant, engine_variant

WEIGHT_KEYS = {"fp32": "fastlstm", "bf16": "fastlstm-bf16", "int8": "fastlstm-int8"}
PEERS = {"bf16": "openvino", "int8": "torch-int8"}  # what each format is held against
BASELINES = ("fastlstm", "ort")


def weights_list(text: str) -> List[str]:
    """An argparse type: comma-separated formats out of fp32, bf16, int8."""
    names = list(dict.fromkeys(name.strip().lower() for name in text.split(",") if name.strip()))
    if not names or any(name not in WEIGHT_KEYS for name in names):
        raise argparse.ArgumentTypeError(f"choose weights from {','.join(WEIGHT_KEYS)}, got {text!r}")
    return names


def precision_variants(weights: Sequence[str], engines: Sequence[str], threads: int) -> List[Variant]:
    """The engines (fastlstm's fp32 row only if fp32 is asked for), each reduced format, and its peer."""
    variants = [engine_variant(name, threads) for name in engines if name != "fastlstm" or "fp32" in weights]
    for fmt in weights:
        if fmt == "fp32":
            continue
        for key in (WEIGHT_KEYS[fmt], PEERS[fmt]):
            variants.append(Variant(key, ENGINE_LABELS[key], key,
                                    lambda source, x, key=key: build_engine(key, source, x, threads), tolerance=None))
    return variants


def precision_table(cases: Sequence[CaseResult], weights: Sequence[str]) -> str:
    """Each reduced format's time over fastlstm fp32's, ORT's and its peer's, and its max abs error
    against torch float32 beside the peer's."""
    formats = [fmt for fmt in weights if fmt != "fp32"]
    header = ["config"]
    for fmt in formats:
        key, peer = WEIGHT_KEYS[fmt], PEERS[fmt]
        header += [f"{ENGINE_LABELS[key]}/{ENGINE_LABELS[other]}" for other in BASELINES + (peer,)]
        header += [f"{ENGINE_LABELS[key]} error", f"{ENGINE_LABELS[peer]} error"]
    rows = []
    for case in cases:
        row = [case.config.name]
        for fmt in formats:
            key, peer = WEIGHT_KEYS[fmt], PEERS[fmt]
            row += [_ratio(report.time_ratio(case, key, other)) for other in BASELINES + (peer,)]
            row += [_error(case, key), _error(case, peer)]
        rows.append(row)
    return report.markdown_table(header, rows)


def _ratio(ratio: Optional[float]) -> str:
    return report.MISSING if ratio is None else f"{ratio:.2f}"


def _error(case: CaseResult, key: str) -> str:
    result = case.engines.get(key)
    error: Optional[float] = None if result is None else result.max_abs_error
    return "-" if error is None else f"{error:.1e}"
