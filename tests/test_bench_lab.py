"""The benchmark lab in bench/ (`python bench/lab.py floors|threads|streaming|concurrency`): each command on
a tiny case, the formulas its floors rest on, and that it only writes bench/results/ when asked to."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import threading
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

pytest.importorskip("fastlstm._core", reason="fastlstm's C++ extension is not built")
pytest.importorskip("torch")  # the oracle every lab command checks against

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))  # the lab's modules import each other by name, as lab.py runs them

import concurrency  # noqa: E402
import core_capacity  # noqa: E402
import floors  # noqa: E402
import lab  # noqa: E402
import lab_options  # noqa: E402
import lstm_metrics  # noqa: E402
import machine_rates  # noqa: E402
import streaming  # noqa: E402
import thread_scaling  # noqa: E402
from fastlstm.bench.configs import CONFIGS_BY_NAME  # noqa: E402
from fastlstm.bench.machine import available_cpus  # noqa: E402
from fastlstm.bench.suite import CaseResult, EngineResult  # noqa: E402
from fastlstm.bench.timing import TimingSummary  # noqa: E402
from fastlstm.bench.weights import make_input, random_weights  # noqa: E402

HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None
# floors and threads measure cache read rates with bench/read_probe, which compiles itself on first use.
needs_read_probe = pytest.mark.skipif(shutil.which("g++") is None or importlib.util.find_spec("pybind11") is None,
                                      reason="the read probe needs g++ and pybind11")
ENGINES = "fastlstm,torch,ort" if HAVE_ORT else "fastlstm,torch"  # ORT's export is the slow part


def table_header(markdown: str, first_column: str) -> List[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {first_column} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def case_with_medians(medians: Dict[str, float], config: str = "small") -> CaseResult:
    def result(key: str, median_us: float) -> EngineResult:
        return EngineResult(key.split("_")[0], key, "", TimingSummary(median_us, median_us, median_us, median_us, 1), 0.0)

    return CaseResult(CONFIGS_BY_NAME[config], {key: result(key, m) for key, m in medians.items()}, 1, 1, [])


# ------------------------------------------------------------------------------ the command line
def test_lab_help_lists_its_commands(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        lab.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("floors", "threads", "streaming", "concurrency", "batching", "http"))
    for command in ("floors", "threads", "streaming", "concurrency"):
        with pytest.raises(SystemExit) as exit_info:
            lab.main([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "--out DIR" in out and "--reference" in out


def test_reference_results_are_written_only_when_asked(capsys: pytest.CaptureFixture) -> None:
    parser = lab.build_parser()
    assert lab_options.output_dir(parser.parse_args(["threads"])) == Path("fastlstm-bench")
    assert lab_options.output_dir(parser.parse_args(["threads", "--reference"])) == REPO / "bench" / "results"
    with pytest.raises(SystemExit):
        parser.parse_args(["threads", "--reference", "--out", "x"])
    capsys.readouterr()


# ------------------------------------------------------------------------------ floors
@needs_read_probe
def test_floors_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = lab.main(["floors", "--configs", "stream-step-h128", "--repeats", "3", "--engines", "fastlstm,torch",
                       "--no-chart", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    markdown = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "## Batch 1: against the floor" in markdown and "floor + empty call (us)" in markdown
    assert "GFLOP/s (measured after the config; each the best of 7 calls)" in markdown
    document = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    fastlstm_us = document["cases"][0]["engines"]["fastlstm"]["median_us"]
    assert 0 < document["batch1_floor_us"]["stream-step-h128"] < fastlstm_us
    assert 0 < document["empty_call_us"] < fastlstm_us
    assert document["sgemm_peak_samples"] == 1 and document["sgemm_peak_gflops"] > 0


@needs_read_probe
def test_floors_whole_models_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = lab.main(["floors", "--whole-models", "forecaster", "--repeats", "3", "--engines", "fastlstm,torch",
                       "--no-chart", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert not (tmp_path / "results.json").exists()  # the standard configs' reference files are left alone
    document = json.loads((tmp_path / "whole_models.json").read_text(encoding="utf-8"))
    assert [case["config"]["name"] for case in document["cases"]] == ["forecaster-b1", "forecaster-b32"]
    # The floor of the LSTM inside (T=12 reads of a 400x100 W_hh) is below the whole model's time.
    fastlstm_us = document["cases"][0]["engines"]["fastlstm"]["median_us"]
    assert 0 < document["batch1_floor_us"]["forecaster-b1"] < fastlstm_us
    assert "forecaster-b32" not in document["batch1_floor_us"]


def test_floors_refuses_configs_with_whole_models(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        lab.main(["floors", "--whole-models", "tagger", "--configs", "medium"])
    assert "alternatives" in capsys.readouterr().err


def test_sgemm_peak_keeps_the_best_sample_and_skips_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    rates = iter([None, 41.6, 85.6, 60.0])  # None: a measurement that could not run
    monkeypatch.setattr(machine_rates, "measure_sgemm_peak_gflops", lambda: next(rates))
    peak = machine_rates.SgemmPeak()
    peak.sample()
    assert (peak.best, peak.samples) == (None, 0)
    for _ in range(3):
        peak.sample()
    assert (peak.best, peak.samples) == (85.6, 3)


def test_flops_and_recurrent_bytes_follow_the_formula() -> None:
    batch32 = CONFIGS_BY_NAME["batch32"]  # I128 H256 L2 uni T100 B32
    tokens, gates = 100 * 32, 4 * 256
    assert lstm_metrics.lstm_forward_flops(batch32) == 2 * tokens * gates * (128 + 256) + 2 * tokens * gates * (256 + 256)
    assert lstm_metrics.recurrent_weight_bytes_per_step(CONFIGS_BY_NAME["bidir"]) == 2 * 4 * 256 * 256 * 4


def test_batch1_floor_follows_the_formula() -> None:
    medium = CONFIGS_BY_NAME["medium"]  # I128 H256 L2 uni T100 B1
    read_rates = {1 << 20: 10e-6, 1 << 19: 4e-6}  # by bytes: W_hh and W_ih of layer 1 are 1 MiB

    def read_seconds(nbytes: int) -> float:
        return read_rates.get(nbytes, 1e-6)

    projection_flops = 2 * 100 * 4 * 256 * (128 + 256)
    assert lstm_metrics.input_projection_flops(medium) == projection_flops
    one_thread = lstm_metrics.batch1_floor_microseconds(medium, read_seconds, sgemm_peak_gflops=100.0)
    assert one_thread == pytest.approx(200 * 10.0 + projection_flops / 100e9 * 1e6)
    two_threads = lstm_metrics.batch1_floor_microseconds(medium, read_seconds, sgemm_peak_gflops=100.0, threads=2)
    assert two_threads == pytest.approx(200 * 4.0 + projection_flops / 200e9 * 1e6)
    # A single step is bound by reading W_ih once, not by its few FLOPs.
    step = CONFIGS_BY_NAME["stream-step-h128"]
    assert lstm_metrics.batch1_floor_microseconds(step, lambda nbytes: 1e-6, sgemm_peak_gflops=100.0) == pytest.approx(2.0)


def test_floor_table_adds_the_empty_call_to_the_floor() -> None:
    name = "stream-step-h128"
    case = case_with_medians({"fastlstm": 8.0, "torch": 200.0, "ort": 30.0}, name)
    table = floors.floor_table([case], {name: 4.0}, {name: 2.5}, empty_call_us=2.0)
    assert table is not None
    header, _rule, row = table.splitlines()
    cells = {key.strip(): value.strip() for key, value in zip(header.strip("|").split("|"), row.strip("|").split("|"))}
    assert cells["floor/ORT (best fastlstm/ORT)"] == "0.13"  # 4 / 30
    assert cells["floor + empty call (us)"] == "6.00"
    assert cells["(floor + empty call)/ORT"] == "0.20"  # (4 + 2) / 30


# ------------------------------------------------------------------------------ threads
@needs_read_probe
def test_threads_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import fastlstm

    threads_before = fastlstm.get_num_threads()
    status = lab.main(["threads", "--configs", "stream-step-h128", "--repeats", "3", "--prime-ms", "1",
                       "--engines", ENGINES, "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "[1/1] stream-step-h128 ... done" in captured.err
    assert fastlstm.get_num_threads() == threads_before  # the run restores the process's setting
    markdown = (tmp_path / "threads.md").read_text(encoding="utf-8")
    columns = table_header(markdown, "config")
    assert columns[2:5] == ["fastlstm 1T", "fastlstm 2T", f"fastlstm default ({available_cpus()}T)"]
    assert "fastlstm 2T/1T speedup" in columns and "default/1T (<= 1.05)" in columns
    assert "torch 2T" in columns and "fastlstm/torch (2T)" in columns
    assert "Default policy never more than 5% slower than 1 thread:" in markdown
    document = json.loads((tmp_path / "threads.json").read_text(encoding="utf-8"))
    (case,) = document["cases"]
    assert {"fastlstm_1t", "fastlstm_2t", "fastlstm_default", "torch_2t"} <= set(case["engines"])
    assert all(variant["calls"] == 3 for variant in case["engines"].values())
    assert case["default_policy_ok"] in (True, False)
    assert document["settings"]["fastlstm_default_threads"] == available_cpus()
    if core_capacity.capacity_cpus(2) is not None:  # sampled after the config, shown beside its speedup
        assert "2 CPUs' capacity" in columns and 0 < case["cpu_capacity_after"] < 4


def test_default_thread_policy_check_flags_more_than_5_percent() -> None:
    within = case_with_medians({"fastlstm_1t": 100.0, "fastlstm_2t": 60.0, "fastlstm_default": 104.0})
    slower = case_with_medians({"fastlstm_1t": 100.0, "fastlstm_2t": 60.0, "fastlstm_default": 106.0})
    assert thread_scaling.default_policy_ok(within) is True
    assert thread_scaling.default_policy_ok(slower) is False
    assert thread_scaling.speedup_nt_over_1t(within, 2) == pytest.approx(100 / 60)
    variants = thread_scaling.thread_variants(2, 2, ["fastlstm"])
    assert "SLOWER (+6%)" in thread_scaling.threads_table([slower], 2, variants, {}, {})


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


# ------------------------------------------------------------------------------ streaming
def test_streaming_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = lab.main(["streaming", "--configs", "stream-step-h128", "--repeats", "3", "--engines", ENGINES,
                       "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 0, captured.err  # nonzero: some variant's step differed from torch's
    columns = table_header((tmp_path / "stream.md").read_text(encoding="utf-8"), "config")
    assert columns[2:5] == ["fastlstm step(out=) us", "fastlstm model(x[None], state) us", "torch nn.LSTM(x, hx) us"]
    assert "step(out=)/torch" in columns
    document = json.loads((tmp_path / "stream.json").read_text(encoding="utf-8"))
    (case,) = document["cases"]
    assert case["config"]["seq_len"] == 1 and case["config"]["batch"] == 1
    assert case["engines"]["fastlstm_step_out"]["calls"] == 3
    assert document["target"]["met"] in (True, False)
    assert all(variant["matches_reference"] for variant in case["engines"].values())


def test_stream_variants_continue_the_stream() -> None:
    # Each timed call must start from the state the previous call left, as a service's stream does.
    torch = pytest.importorskip("torch")
    config = streaming.step_config(CONFIGS_BY_NAME["stream-step-h128"])
    source, x = random_weights(config, 0), make_input(config, 0)
    h0, c0 = streaming.initial_state(config, 0)
    h, c = torch.from_numpy(h0), torch.from_numpy(c0)
    with torch.inference_mode():
        for _ in range(3):
            _, (h, c) = source.torch_lstm(torch.from_numpy(x), (h, c))
    for variant in streaming.stream_variants(h0, c0, ENGINES.split(","), threads=1):
        engine = variant.build(source, x)
        for _ in range(3):
            engine.run()
        got_h, got_c = engine.current_state()
        assert np.abs(got_h - h.numpy()).max() < 1e-5, variant.label
        assert np.abs(got_c - c.numpy()).max() < 1e-5, variant.label


# ------------------------------------------------------------------------------ concurrency
def test_concurrency_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = lab.main(["concurrency", "--clients", "1,2", "--workloads", "step", "--seconds", "0.05",
                       "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "[2/2] step clients=2 ... done" in captured.err
    assert table_header((tmp_path / "concurrency.md").read_text(encoding="utf-8"), "clients") == [
        "clients", "fastlstm req/s", "torch req/s", "fastlstm/torch throughput", "fastlstm latency us (p50 / p99)",
        "torch latency us (p50 / p99)",
    ]
    step = json.loads((tmp_path / "concurrency.json").read_text(encoding="utf-8"))["workloads"]["step"]
    assert [row["clients"] for row in step["by_clients"]] == [1, 2]
    for row in step["by_clients"]:
        load = row["engines"]["fastlstm"]
        assert load["requests"] > 0 and load["p99_us"] >= load["p50_us"] > 0
    assert step["matches_reference"] is True


def test_client_threads_start_together_and_each_runs_its_setup() -> None:
    requesters, setups = set(), set()
    clients = concurrency.Clients(lambda: (lambda: requesters.add(threading.get_ident())),
                                  lambda: setups.add(threading.get_ident()))
    run = concurrency.run_clients(clients, 3, 0.02)
    assert len(requesters) == 3 and setups == requesters  # one thread per client, setup in each
    assert len(run.latencies_ns) >= 3 and run.wall_ns > 0


# ------------------------------------------------------------------------------ batching
def test_batching_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = lab.main(["batching", "--clients", "1,4", "--seconds", "0.1", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "clients=4 ... done" in captured.err
    assert table_header((tmp_path / "batching.md").read_text(encoding="utf-8"), "clients") == [
        "clients", "way", "req/s", "vs direct", "p50 ms", "p99 ms", "CPU ms/req", "req per CPU-s vs direct",
        "mean batch"]
    result = json.loads((tmp_path / "batching.json").read_text(encoding="utf-8"))
    assert result["bitwise_equal_to_lone_calls"] is True
    for row in result["by_clients"]:
        assert set(row["ways"]) == {"direct", "direct-1t", "batcher", "batcher-1w"}
        assert all(way["requests"] > 0 and way["cpu_seconds_per_request"] > 0 for way in row["ways"].values())


def test_quantized_threads_prints_each_format_at_both_thread_counts(capsys: pytest.CaptureFixture) -> None:
    import quantized_threads

    assert quantized_threads.main(["--configs", "stream-step-h128", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| stream-step-h128 |"))
    cells = row.strip("|").split("|")[1:]
    assert len(cells) == 3 and all(" / " in cell and cell.strip().endswith("x)") for cell in cells)
