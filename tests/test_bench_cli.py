"""The benchmark CLI end to end on a tiny case, plus the pieces whose mistakes would skew every number
(interleaving order, FLOP counts) or hide a wrong engine (mismatch reporting)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List

import pytest

pytest.importorskip("fastlstm._core", reason="fastlstm's C++ extension is not built")

from fastlstm import cli  # noqa: E402
from fastlstm.bench import cli as bench_cli  # noqa: E402
from fastlstm.bench import metrics, report  # noqa: E402
from fastlstm.bench.configs import CONFIGS_BY_NAME, STANDARD_CONFIGS, select_configs  # noqa: E402
from fastlstm.bench.suite import CaseResult, EngineResult, SuiteSettings  # noqa: E402
from fastlstm.bench.timing import TimingSummary, time_interleaved  # noqa: E402

TINY_CONFIG = "small"  # I32 H64 T100 B1: milliseconds per call for every engine


def run_cli(argv: List[str]) -> int:
    return cli.main(argv)


def test_top_level_help_lists_bench(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["--help"])
    assert exit_info.value.code == 0
    assert "bench" in capsys.readouterr().out


def test_bench_help_exits_zero(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench_cli.main(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--configs", "--threads", "--repeats", "--seconds", "--model", "--engines", "--out-dir"):
        assert option in out


def test_unknown_config_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["bench", "--configs", "no-such-config", "--out-dir", str(tmp_path)])
    assert exit_info.value.code == 2


def test_tiny_run_writes_table_with_expected_columns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = run_cli(["bench", "--configs", TINY_CONFIG, "--repeats", "3", "--no-chart", "--out-dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 0, captured.err  # nonzero means an engine's output differed from torch
    assert f"[1/1] {TINY_CONFIG} ... done" in captured.err

    markdown = (tmp_path / "results.md").read_text(encoding="utf-8")
    header = next(line for line in markdown.splitlines() if line.startswith("| config | shape"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    expected = [
        "config",
        "shape",
        "fastlstm us (median / p90)",
        "torch us (median / p90)",
        "ORT us (median / p90)",
        "fastlstm/torch",
        "fastlstm/ORT",
    ]
    assert columns == expected
    assert header in captured.out  # the table is also printed
    assert "command: `fastlstm bench --configs small" in markdown
    assert not (tmp_path / "speedup.png").exists()

    document = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    (case,) = document["cases"]
    assert case["config"]["name"] == TINY_CONFIG
    fastlstm_result = case["engines"]["fastlstm"]
    assert fastlstm_result["calls"] == 3
    assert fastlstm_result["median_us"] > 0
    if "torch" in case["engines"]:
        assert fastlstm_result["matches_reference"] is True


def test_missing_onnxruntime_is_skipped_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    status = run_cli(
        ["bench", "--configs", "stream-step-h128", "--repeats", "2", "--no-chart", "--out-dir", str(tmp_path)]
    )
    capsys.readouterr()
    assert status == 0
    markdown = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "ORT skipped: onnxruntime is not installed" in markdown
    document = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert "ort" not in document["cases"][0]["engines"]


def test_interleaving_rotates_which_engine_goes_first() -> None:
    order: List[str] = []
    runs = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    timing = time_interleaved(runs, rounds=3, seconds=0.001, priming_seconds=0.0)
    timed_rounds = [order[-9:][start : start + 3] for start in (0, 3, 6)]
    assert all(sorted(one_round) == ["a", "b", "c"] for one_round in timed_rounds)  # each engine once a round
    assert sorted(one_round[0] for one_round in timed_rounds) == ["a", "b", "c"]  # each goes first once
    assert all(summary.calls == 3 for summary in timing.summaries.values())


def test_priming_calls_are_not_timed() -> None:
    calls = {"a": 0, "b": 0}

    def make(name: str):
        def run() -> None:
            calls[name] += 1

        return run

    timing = time_interleaved({name: make(name) for name in calls}, rounds=4, seconds=0.001, priming_seconds=1e-4)
    assert all(summary.calls == 4 for summary in timing.summaries.values())
    assert all(count > 2 * 4 for count in calls.values())  # warmup + priming + timed calls


def test_flops_and_recurrent_bytes_follow_the_formula() -> None:
    batch32 = CONFIGS_BY_NAME["batch32"]  # I128 H256 L2 uni T100 B32
    tokens, gates = 100 * 32, 4 * 256
    assert metrics.lstm_forward_flops(batch32) == 2 * tokens * gates * (128 + 256) + 2 * tokens * gates * (256 + 256)
    bidir = CONFIGS_BY_NAME["bidir"]  # H256, one layer, two directions
    assert metrics.recurrent_weight_bytes_per_step(bidir) == 2 * 4 * 256 * 256 * 4


def test_config_selection() -> None:
    assert select_configs("all") == list(STANDARD_CONFIGS)
    assert [c.name for c in select_configs("medium, small,medium")] == ["medium", "small"]
    with pytest.raises(ValueError, match="choose from"):
        select_configs("smal")


def test_speedup_chart_is_drawn(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    config = CONFIGS_BY_NAME[TINY_CONFIG]

    def result(engine: str, median_us: float) -> EngineResult:
        timing = TimingSummary(median_us=median_us, p90_us=median_us, min_us=median_us, mean_us=median_us, calls=1)
        return EngineResult(engine=engine, detail="", timing=timing, max_abs_error=0.0)

    case = CaseResult(
        config=config,
        engines={"fastlstm": result("fastlstm", 10.0), "torch": result("torch", 40.0), "ort": result("ort", 20.0)},
        rounds=1,
        warmup_rounds=1,
        notes=[],
    )
    run = report.BenchRun(
        cases=[case],
        settings=SuiteSettings(engines=("fastlstm", "torch", "ort")),
        machine={"cpu": "test CPU", "isa": "test", "logical_cpus": 1, "versions": {}},
        command="fastlstm bench",
        date="today",
        timer_floor_ns=0.0,
    )
    assert report.plot_speedups(run, tmp_path / "speedup.png") is None
    assert (tmp_path / "speedup.png").stat().st_size > 0
    assert "0.25 (4.0x faster)" in report.results_table(run)
