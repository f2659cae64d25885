"""The benchmark CLI end to end on a tiny case, plus the pieces whose mistakes would skew every number
(interleaving order, FLOP counts) or hide a wrong engine (mismatch reporting)."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

pytest.importorskip("fastlstm._core", reason="fastlstm's C++ extension is not built")

from fastlstm import cli  # noqa: E402
from fastlstm.bench import cli as bench_cli  # noqa: E402
from fastlstm.bench import concurrency, core_capacity, machine, metrics, report, streaming, weights  # noqa: E402
from fastlstm.bench import threads as thread_bench  # noqa: E402
from fastlstm.bench.configs import CONFIGS_BY_NAME, STANDARD_CONFIGS, select_configs  # noqa: E402
from fastlstm.bench.suite import CaseResult, EngineResult, SuiteSettings  # noqa: E402
from fastlstm.bench.timing import (  # noqa: E402
    MAX_ROUNDS,
    MIN_ROUNDS,
    TimingSummary,
    choose_round_count,
    time_interleaved,
)

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
    assert "## Batch 1: against the floor" in markdown

    document = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    (case,) = document["cases"]
    assert case["config"]["name"] == TINY_CONFIG
    fastlstm_result = case["engines"]["fastlstm"]
    assert fastlstm_result["calls"] == 3
    assert fastlstm_result["median_us"] > 0
    assert 0 < document["batch1_floor_us"][TINY_CONFIG] < fastlstm_result["median_us"]
    assert 0 < document["empty_call_us"] < fastlstm_result["median_us"]
    assert "floor + empty call (us)" in table_header(markdown, "config | one W_hh")
    if "torch" in case["engines"]:
        assert fastlstm_result["matches_reference"] is True
    assert document["sgemm_peak_samples"] == 1  # one config, one sample after it
    assert document["sgemm_peak_gflops"] > 0
    assert "GFLOP/s (measured after the config; each the best of 7 calls)" in markdown


def test_sgemm_peak_keeps_the_best_sample_and_skips_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    rates = iter([None, 41.6, 85.6, 60.0])  # None: a measurement that could not run
    monkeypatch.setattr(machine, "measure_sgemm_peak_gflops", lambda: next(rates))
    peak = machine.SgemmPeak()
    peak.sample()
    assert (peak.best, peak.samples) == (None, 0)
    for _ in range(3):
        peak.sample()
    assert (peak.best, peak.samples) == (85.6, 3)


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


def test_round_count_fills_the_budget_but_keeps_enough_samples_for_a_median() -> None:
    assert choose_round_count(3.0, 0.01) == 300
    assert choose_round_count(3.0, 0.6) == MIN_ROUNDS  # a long config still gets MIN_ROUNDS samples
    assert MIN_ROUNDS >= 15
    assert choose_round_count(3.0, 1e-12) == MAX_ROUNDS
    assert choose_round_count(3.0, 0.0) == MAX_ROUNDS


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


def test_batch1_floor_follows_the_formula() -> None:
    medium = CONFIGS_BY_NAME["medium"]  # I128 H256 L2 uni T100 B1
    read_rates = {1 << 20: 10e-6, 1 << 19: 4e-6}  # by bytes: W_hh and W_ih of layer 1 are 1 MiB

    def read_seconds(nbytes: int) -> float:
        return read_rates.get(nbytes, 1e-6)

    projection_flops = 2 * 100 * 4 * 256 * (128 + 256)
    assert metrics.input_projection_flops(medium) == projection_flops
    one_thread = metrics.batch1_floor_microseconds(medium, read_seconds, sgemm_peak_gflops=100.0)
    assert one_thread == pytest.approx(200 * 10.0 + projection_flops / 100e9 * 1e6)
    two_threads = metrics.batch1_floor_microseconds(medium, read_seconds, sgemm_peak_gflops=100.0, threads=2)
    assert two_threads == pytest.approx(200 * 4.0 + projection_flops / 200e9 * 1e6)
    # A single step is bound by reading W_ih once, not by its few FLOPs.
    step = CONFIGS_BY_NAME["stream-step-h128"]
    assert metrics.batch1_floor_microseconds(step, lambda nbytes: 1e-6, sgemm_peak_gflops=100.0) == pytest.approx(2.0)


def test_read_probe_measures_and_refuses_bad_sizes() -> None:
    from fastlstm import _core

    assert 0 < _core.measure_read_seconds(64 * 1024, 3, 2) < 0.01
    with pytest.raises(ValueError, match="bytes must be in"):
        _core.measure_read_seconds(0, 3, 2)
    with pytest.raises(ValueError, match="passes and repeats"):
        _core.measure_read_seconds(1024, 0, 2)


def test_config_selection() -> None:
    assert select_configs("all") == list(STANDARD_CONFIGS)
    assert [c.name for c in select_configs("medium, small,medium")] == ["medium", "small"]
    with pytest.raises(ValueError, match="choose from"):
        select_configs("smal")


def one_case_run(config_name: str, medians_us: Dict[str, float], **run_fields: Any) -> report.BenchRun:
    """A BenchRun of one case whose engines took these median microseconds, for the report's tables."""
    config = CONFIGS_BY_NAME[config_name]

    def result(engine: str, median_us: float) -> EngineResult:
        timing = TimingSummary(median_us=median_us, p90_us=median_us, min_us=median_us, mean_us=median_us, calls=1)
        return EngineResult(engine=engine, detail="", timing=timing, max_abs_error=0.0)

    case = CaseResult(
        config=config,
        engines={engine: result(engine, median) for engine, median in medians_us.items()},
        rounds=1,
        warmup_rounds=1,
        notes=[],
    )
    return report.BenchRun(
        cases=[case],
        settings=SuiteSettings(engines=tuple(medians_us)),
        machine={"cpu": "test CPU", "isa": "test", "logical_cpus": 1, "versions": {}},
        command="fastlstm bench",
        date="today",
        timer_floor_ns=0.0,
        **run_fields,
    )


def test_speedup_chart_is_drawn(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = one_case_run(TINY_CONFIG, {"fastlstm": 10.0, "torch": 40.0, "ort": 20.0})
    assert report.plot_speedups(run, tmp_path / "speedup.png") is None
    assert (tmp_path / "speedup.png").stat().st_size > 0
    assert "0.25 (4.0x faster)" in report.results_table(run)


def test_floor_table_adds_the_empty_call_to_the_floor() -> None:
    name = "stream-step-h128"
    run = one_case_run(
        name,
        {"fastlstm": 8.0, "torch": 200.0, "ort": 30.0},
        floors_us={name: 4.0},
        whh_read_us={name: 2.5},
        empty_call_us=2.0,
    )
    table = report.floor_table(run)
    assert table is not None
    header, _rule, row = table.splitlines()
    cells = {key.strip(): value.strip() for key, value in zip(header.strip("|").split("|"), row.strip("|").split("|"))}
    assert cells["floor/ORT (best fastlstm/ORT)"] == "0.13"  # 4 / 30
    assert cells["floor + empty call (us)"] == "6.00"
    assert cells["(floor + empty call)/ORT"] == "0.20"  # (4 + 2) / 30
    assert "empty call (LSTM(1, 1)" in report.render_markdown(run)


# ------------------------------------------------------------------ bench threads / concurrency / stream
HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None
HAVE_TORCH = importlib.util.find_spec("torch") is not None
SMOKE_ENGINES = "fastlstm,torch,ort" if HAVE_ORT else "fastlstm,torch"  # ORT's export is the slow part


def table_header(markdown: str, first_column: str) -> List[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {first_column} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_bench_help_lists_subcommands(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for subcommand in ("threads", "concurrency", "stream"):
        assert subcommand in out


@pytest.mark.parametrize("subcommand", ["threads", "concurrency", "stream"])
def test_subcommand_help_exits_zero(subcommand: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["bench", subcommand, "--help"])
    assert exit_info.value.code == 0
    assert "--out-dir" in capsys.readouterr().out


def test_options_before_a_subcommand_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # argparse alone would let the subcommand's defaults silently replace them.
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["bench", "--seconds", "0.01", "stream", "--out-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--seconds given before 'stream'" in capsys.readouterr().err


def test_threads_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import fastlstm

    threads_before = fastlstm.get_num_threads()
    status = run_cli(
        ["bench", "threads", "--configs", "stream-step-h128", "--repeats", "3", "--engines", SMOKE_ENGINES]
        + ["--out-dir", str(tmp_path)]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "[1/1] stream-step-h128 ... done" in captured.err
    assert fastlstm.get_num_threads() == threads_before  # the run restores the process's setting

    markdown = (tmp_path / "threads.md").read_text(encoding="utf-8")
    columns = table_header(markdown, "config")
    assert columns[2:5] == ["fastlstm 1T", "fastlstm 2T", f"fastlstm default ({machine.available_cpus()}T)"]
    assert "fastlstm 2T/1T speedup" in columns and "default/1T (<= 1.05)" in columns
    if HAVE_TORCH:
        assert "torch 2T" in columns and "fastlstm/torch (2T)" in columns
    if HAVE_ORT and HAVE_TORCH:
        assert "ORT 2T" in columns and "fastlstm/ORT (2T)" in columns
    assert "Default policy never more than 5% slower than 1 thread:" in markdown

    document = json.loads((tmp_path / "threads.json").read_text(encoding="utf-8"))
    (case,) = document["cases"]
    assert {"fastlstm_1t", "fastlstm_2t", "fastlstm_default"} <= set(case["variants"])
    assert all(variant["calls"] == 3 for variant in case["variants"].values())
    assert case["default_policy_ok"] in (True, False)
    assert document["settings"]["fastlstm_default_threads"] == machine.available_cpus()
    if core_capacity.capacity_cpus(2) is not None:  # sampled after the config, shown beside its speedup
        assert "2 CPUs' capacity" in columns
        assert 0 < case["cpu_capacity_after"] < 4
        assert "2 CPUs' capacity: " in markdown and "means 2 whole cores" in markdown
    else:
        assert "2 CPUs' capacity: not measured" in markdown


def test_core_capacity_is_all_cpus_together_over_one_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    lone = iter([72.0, 80.0, 80.0, 80.0, 80.0, 80.0])  # before and after each sample; the faster counts
    rates = {2: [70.0, 66.0]}
    monkeypatch.setattr(core_capacity, "capacity_cpus", lambda threads: [0, 1])
    monkeypatch.setattr(core_capacity, "measure_rates", lambda cpus: rates[2] if len(cpus) == 2 else [next(lone)])
    capacity = core_capacity.CoreCapacity(2)
    capacity.sample("medium")
    assert capacity.by_config == {"medium": pytest.approx(1.7)}
    rates[2] = None  # a failed measurement records nothing
    capacity.sample("bidir")
    assert set(capacity.by_config) == {"medium"}
    rates[2] = [40.0, 40.0]
    capacity.sample("large")
    assert capacity.summary_text().startswith("1.00x-1.70x one CPU's rate over 2 sample(s)")


def test_core_capacity_runs_one_pinned_process_per_cpu() -> None:
    cpus = core_capacity.capacity_cpus(1)
    if cpus is None:
        pytest.skip("no CPU affinity to pin with on this platform")
    (rate,) = core_capacity.measure_rates(cpus, window_seconds=0.05)
    assert rate > 0


def _case_with_medians(medians: Dict[str, float]) -> CaseResult:
    def result(key: str, median_us: float) -> EngineResult:
        timing = TimingSummary(median_us=median_us, p90_us=median_us, min_us=median_us, mean_us=median_us, calls=1)
        return EngineResult(engine=key.split("_")[0], detail="", timing=timing, max_abs_error=0.0, label=key)

    engines = {key: result(key, median) for key, median in medians.items()}
    return CaseResult(config=CONFIGS_BY_NAME[TINY_CONFIG], engines=engines, rounds=1, warmup_rounds=1, notes=[])


def test_default_thread_policy_check_flags_more_than_5_percent() -> None:
    within = _case_with_medians({"fastlstm_1t": 100.0, "fastlstm_2t": 60.0, "fastlstm_default": 104.0})
    slower = _case_with_medians({"fastlstm_1t": 100.0, "fastlstm_2t": 60.0, "fastlstm_default": 106.0})
    assert thread_bench.default_policy_ok(within) is True
    assert thread_bench.default_policy_ok(slower) is False
    assert thread_bench.policy_summary([within, slower]) is False
    assert thread_bench.speedup_nt_over_1t(within, 2) == pytest.approx(100 / 60)
    variants = thread_bench.thread_variants(2, 2, ["fastlstm"])
    assert "SLOWER (+6%)" in thread_bench.threads_table([slower], 2, variants)


def test_concurrency_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = run_cli(
        ["bench", "concurrency", "--clients", "1,2", "--workloads", "step", "--seconds", "0.05"]
        + ["--out-dir", str(tmp_path)]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "[2/2] step clients=2 ... done" in captured.err

    markdown = (tmp_path / "concurrency.md").read_text(encoding="utf-8")
    assert table_header(markdown, "clients") == [
        "clients",
        "fastlstm req/s",
        "torch req/s",
        "fastlstm/torch throughput",
        "fastlstm latency us (p50 / p99)",
        "torch latency us (p50 / p99)",
    ]
    document = json.loads((tmp_path / "concurrency.json").read_text(encoding="utf-8"))
    step = document["workloads"]["step"]
    assert [row["clients"] for row in step["by_clients"]] == [1, 2]
    for row in step["by_clients"]:
        fastlstm_load = row["engines"]["fastlstm"]
        assert fastlstm_load["requests"] > 0 and fastlstm_load["p99_us"] >= fastlstm_load["p50_us"] > 0
    if HAVE_TORCH:
        assert step["matches_reference"] is True
        assert all("torch" in row["engines"] for row in step["by_clients"])


def test_client_threads_start_together_and_each_runs_its_setup() -> None:
    requesters, setups = set(), set()

    def make_request():
        return lambda: requesters.add(threading.get_ident())

    run = concurrency.run_clients(concurrency.Clients(make_request, lambda: setups.add(threading.get_ident())), 3, 0.02)
    assert len(requesters) == 3 and setups == requesters  # one thread per client, setup in each
    assert len(run.latencies_ns) >= 3 and run.wall_ns > 0


def test_stream_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = run_cli(
        ["bench", "stream", "--configs", "stream-step-h128", "--repeats", "3", "--engines", SMOKE_ENGINES]
        + ["--out-dir", str(tmp_path)]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err  # nonzero: some variant's step differed from torch's

    markdown = (tmp_path / "stream.md").read_text(encoding="utf-8")
    columns = table_header(markdown, "config")
    assert columns[2:4] == ["fastlstm step(out=) us", "fastlstm model(x[None], state) us"]
    if HAVE_TORCH:
        assert "torch nn.LSTM(x, hx) us" in columns and "step(out=)/torch" in columns
    if HAVE_ORT and HAVE_TORCH:
        assert "ORT run(x, h0, c0) us" in columns and "step(out=)/ORT" in columns
    assert "Target (fastlstm step(out=) at I=64, H=128 in <= 5 us per step): median" in markdown

    document = json.loads((tmp_path / "stream.json").read_text(encoding="utf-8"))
    (case,) = document["cases"]
    assert case["config"]["seq_len"] == 1 and case["config"]["batch"] == 1
    assert case["variants"]["fastlstm_step_out"]["calls"] == 3
    assert document["target"]["met"] in (True, False)
    if HAVE_TORCH:
        assert all(variant["matches_reference"] for variant in case["variants"].values())


def test_stream_variants_continue_the_stream() -> None:
    # Each timed call must start from the state the previous call left, as a service's stream does.
    torch = pytest.importorskip("torch")
    config = streaming.step_config(CONFIGS_BY_NAME["stream-step-h128"])
    source = weights.random_weights(config, 0)
    x = weights.make_input(config, 0)
    h0, c0 = streaming.initial_state(config, 0)
    steps = 3
    h, c = torch.from_numpy(h0), torch.from_numpy(c0)
    with torch.inference_mode():
        for _ in range(steps):
            _, (h, c) = source.torch_lstm(torch.from_numpy(x), (h, c))
    engines = ["fastlstm", "torch", "ort"] if HAVE_ORT else ["fastlstm", "torch"]
    for variant in streaming.stream_variants(h0, c0, engines, threads=1):
        engine = variant.build(source, x)
        for _ in range(steps):
            engine.run()
        got_h, got_c = engine.current_state()
        assert np.abs(got_h - h.numpy()).max() < 1e-5, variant.label
        assert np.abs(got_c - c.numpy()).max() < 1e-5, variant.label
