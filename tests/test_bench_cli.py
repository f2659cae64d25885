"""`fastlstm bench` end to end on tiny cases, the pieces whose mistakes would skew every number
(interleaving order, round counts) or hide a wrong engine (mismatch reporting), and what ships: the
installed package holds the command, not the benchmark lab or its C++."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

pytest.importorskip("fastlstm._core", reason="fastlstm's C++ extension is not built")

import fastlstm  # noqa: E402
from fastlstm import cli  # noqa: E402
from fastlstm.bench import engines, report  # noqa: E402
from fastlstm.bench.comparison import plot_speedups, results_table  # noqa: E402
from fastlstm.bench.configs import CONFIGS_BY_NAME, STANDARD_CONFIGS, select_configs  # noqa: E402
from fastlstm.bench.suite import CaseResult, EngineResult  # noqa: E402
from fastlstm.bench.timing import MAX_ROUNDS, MIN_ROUNDS, TimingSummary, choose_round_count, time_interleaved  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = "small"  # I32 H64 T100 B1: well under a millisecond per call for every engine
QUICK = ["--repeats", "3"]


def table_header(markdown: str, first_column: str) -> List[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {first_column} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def git_status() -> Set[str]:
    return set(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=all"],
                              capture_output=True, text=True, check=True).stdout.splitlines())


# ------------------------------------------------------------------------------ the command line
def test_help_lists_bench_and_its_options(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0 and "bench" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--configs", "--model", "--seq-len", "--batch", "--threads", "--engines", "--repeats", "--seconds",
                   "--out", "--no-chart"):
        assert option in out
    assert all(name in out for name in CONFIGS_BY_NAME)


def test_console_script_answers_help() -> None:
    script = shutil.which("fastlstm", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the fastlstm console script is not installed next to this Python")
    for argv in ([script, "--help"], [script, "bench", "--help"]):
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0, completed.stderr
    assert "--out DIR" in completed.stdout


@pytest.mark.parametrize("argv", [
    ["--configs", "no-such-config"],
    ["--seq-len", "5"],  # applies to --model only
    ["--model", "x.pt", "--configs", "small"],
    ["--engines", "fastlstm,tensorflow"],
    ["--repeats", "3", "--seconds", "1"],
])
def test_bad_arguments_are_usage_errors(argv: List[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", *argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2


def test_run_writes_only_into_out_and_leaves_the_checkout_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("matplotlib")
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout")
    before, default_out_existed = git_status(), (REPO / "fastlstm-bench").exists()
    monkeypatch.chdir(REPO)  # where a developer would type it
    out = tmp_path / "out"
    status = cli.main(["bench", "--configs", TINY_CONFIG, *QUICK, "--engines", "fastlstm,torch", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    # Nothing the bench writes shows up in the checkout (other edits to a working tree may, meanwhile).
    changed = git_status() ^ before
    outputs = ("results.md", "results.json", "speedup.png")
    assert not [line for line in changed if line.endswith(outputs) or "bench/results/" in line]
    assert (REPO / "fastlstm-bench").exists() == default_out_existed
    assert sorted(path.name for path in out.iterdir()) == ["results.json", "results.md", "speedup.png"]
    assert f"into {out.resolve()}" in captured.err
    assert f"[1/1] {TINY_CONFIG} ... done" in captured.err


def test_default_out_is_fastlstm_bench_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    status = cli.main(["bench", "--configs", TINY_CONFIG, *QUICK, "--no-chart"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    out = tmp_path / "fastlstm-bench"
    assert sorted(path.name for path in out.iterdir()) == ["results.json", "results.md"]
    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert table_header(markdown, "config") in (
        ["config", "shape", "fastlstm us (median / p90)", "torch us (median / p90)", "ORT us (median / p90)",
         "fastlstm/torch", "fastlstm/ORT"],
        ["config", "shape", "fastlstm us (median / p90)", "torch us (median / p90)", "fastlstm/torch"],  # no ORT
    )
    assert markdown.splitlines()[0] in captured.out  # the report is printed too
    assert f"command: `fastlstm bench --configs {TINY_CONFIG}" in markdown
    machine_line = next(line for line in markdown.splitlines() if line.startswith("- machine: "))
    cpu = fastlstm.cpu_info()
    assert cpu["cpu"] in machine_line and f"fastlstm kernels {cpu['isa']}" in machine_line

    document = json.loads((out / "results.json").read_text(encoding="utf-8"))
    (case,) = document["cases"]
    assert case["config"]["name"] == TINY_CONFIG
    fastlstm_result = case["engines"]["fastlstm"]
    assert fastlstm_result["calls"] == 3 and fastlstm_result["median_us"] > 0
    assert fastlstm_result["matches_reference"] is True
    assert case["fastlstm_time_over_torch"] == pytest.approx(
        fastlstm_result["median_us"] / case["engines"]["torch"]["median_us"])
    assert document["machine"]["fastlstm_isa"] == cpu["isa"] and document["timer_floor_ns"] > 0


def test_own_model_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    path = tmp_path / "my_lstm.pt"
    torch.save(torch.nn.LSTM(6, 10, num_layers=2, bidirectional=True).state_dict(), path)
    status = cli.main(["bench", "--model", str(path), "--seq-len", "5", "--batch", "2", *QUICK,
                       "--engines", "fastlstm,torch", "--no-chart", "--out", str(tmp_path)])
    assert status == 0, capsys.readouterr().err
    (case,) = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["cases"]
    assert case["config"]["name"] == "my_lstm" and case["shape"] == "I6 H10 L2 bi T5 B2"
    assert all(result["matches_reference"] for result in case["engines"].values())


def test_unreadable_model_file_fails_before_timing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"not a weights file")
    assert cli.main(["bench", "--model", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "cannot load" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_wrong_engine_is_reported_and_fails_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("torch")
    lstm = CONFIGS_BY_NAME[TINY_CONFIG].lstm
    wrong = fastlstm.LSTM(lstm.input_size, lstm.hidden_size, seed=123)  # the right shape, other weights
    monkeypatch.setattr(engines, "fastlstm_model", lambda source: wrong)
    status = cli.main(["bench", "--configs", TINY_CONFIG, *QUICK, "--engines", "fastlstm,torch", "--no-chart",
                       "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 1
    assert "MISMATCH: fastlstm" in captured.err and "output mismatch against torch in small" in captured.err
    markdown = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert " MISMATCH |" in markdown and "MISMATCH: fastlstm differs from torch on small" in markdown


def test_missing_onnxruntime_is_skipped_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    status = cli.main(["bench", "--configs", "stream-step-h128", "--repeats", "2", "--no-chart", "--out", str(tmp_path)])
    capsys.readouterr()
    assert status == 0
    assert "ORT skipped: onnxruntime is not installed" in (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "ort" not in json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["cases"][0]["engines"]


# ------------------------------------------------------------------------------ timing
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
    assert choose_round_count(3.0, 0.6) == MIN_ROUNDS >= 15  # a long config still gets MIN_ROUNDS samples
    assert choose_round_count(3.0, 1e-12) == choose_round_count(3.0, 0.0) == MAX_ROUNDS


def test_priming_calls_are_not_timed() -> None:
    calls = {"a": 0, "b": 0}

    def make(name: str):
        def run() -> None:
            calls[name] += 1

        return run

    timing = time_interleaved({name: make(name) for name in calls}, rounds=4, seconds=0.001, priming_seconds=1e-4)
    assert all(summary.calls == 4 for summary in timing.summaries.values())
    assert all(count > 2 * 4 for count in calls.values())  # warmup + priming + timed calls


def test_config_selection() -> None:
    assert select_configs("all") == list(STANDARD_CONFIGS)
    assert [c.name for c in select_configs("medium, small,medium")] == ["medium", "small"]
    with pytest.raises(ValueError, match="choose from"):
        select_configs("smal")


# ------------------------------------------------------------------------------ the report
def one_case(config_name: str, medians_us: Dict[str, float]) -> CaseResult:
    """A case whose engines took these median microseconds."""
    def result(engine: str, median_us: float) -> EngineResult:
        timing = TimingSummary(median_us, median_us, median_us, median_us, 1)
        return EngineResult(engine, engines.ENGINE_LABELS[engine], "", timing, 0.0)

    engines_run = {engine: result(engine, median) for engine, median in medians_us.items()}
    return CaseResult(CONFIGS_BY_NAME[config_name], engines_run, 1, 1, [])


def test_table_ratios_and_chart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    cases = [one_case(TINY_CONFIG, {"fastlstm": 10.0, "torch": 40.0, "ort": 20.0})]
    assert "0.25 (4.0x faster)" in results_table(cases, ["fastlstm", "torch", "ort"])
    assert plot_speedups(cases, "test", tmp_path / "speedup.png") is None
    assert (tmp_path / "speedup.png").stat().st_size > 0
    assert plot_speedups([one_case(TINY_CONFIG, {"fastlstm": 10.0})], "test", tmp_path / "none.png") is not None


def test_one_writer_gives_markdown_and_json_of_the_same_report(tmp_path: Path) -> None:
    document = report.Report("title", ["a header line"], [("Section", "| x |\n|---|\n| 1 |")], ["a note"],
                             {"value": 1})
    paths = report.write_report(document, tmp_path / "new", "name")
    assert [path.name for path in paths] == ["name.md", "name.json"]
    markdown = paths[0].read_text(encoding="utf-8")
    assert re.search(r"# title\n\n- a header line\n\n## Section\n\n\| x \|.*## Notes\n\n- a note\n$", markdown, re.S)
    assert json.loads(paths[1].read_text(encoding="utf-8")) == {"value": 1, "notes": ["a note"]}


# ------------------------------------------------------------------------------ what ships
LAB_MODULES = ("threads", "thread_scaling", "concurrency", "streaming", "core_capacity", "metrics", "lstm_metrics",
               "mixed_calls", "floors", "machine_rates", "options", "read_probe")


def test_the_package_holds_the_command_not_the_lab() -> None:
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = pyproject["tool"]["setuptools"]["packages"]
    assert "fastlstm.bench" in packages and not [name for name in packages if not name.startswith("fastlstm")]
    assert pyproject["project"]["scripts"]["fastlstm"] == "fastlstm.cli:main"
    package = REPO / "fastlstm" / "bench"
    assert not [name for name in LAB_MODULES if (package / f"{name}.py").exists() or (package / name).exists()]
    # It ships to every user: the command, not a lab.
    # 1100 before whole-model benchmarks (whole_models.py, ~215 lines, and --whole-models in cli.py) were added;
    # 1350 before --weights (precision.py, ~75 lines, and the OpenVINO and torch int8 engines);
    # 1480 before --weights on whole models (their OpenVINO and torch int8 peers).
    assert sum(len(path.read_text(encoding="utf-8").splitlines()) for path in package.glob("*.py")) < 1520


def test_the_extension_has_no_benchmark_code() -> None:
    from fastlstm import _core

    assert hasattr(_core, "measure_read_seconds") is False
    assert "read_probe" not in (REPO / "setup.py").read_text(encoding="utf-8")
    assert not list((REPO / "csrc").rglob("read_probe*"))
    assert not [path for path in (REPO / "csrc").rglob("*") if path.is_file() and "sum_stream" in path.read_text()]


def test_the_lab_is_not_importable_from_the_package() -> None:
    for name in LAB_MODULES:
        with pytest.raises(ModuleNotFoundError):
            __import__(f"fastlstm.bench.{name}")


def test_weights_rows_and_their_peers() -> None:
    import argparse

    from fastlstm.bench.precision import precision_table, precision_variants, weights_list

    assert weights_list("int8, fp32,int8") == ["int8", "fp32"]
    with pytest.raises(argparse.ArgumentTypeError, match="fp32,bf16,int8"):
        weights_list("fp16")
    keys = [v.key for v in precision_variants(["bf16", "int8"], ["fastlstm", "torch", "ort"], 1)]
    assert keys == ["torch", "ort", "fastlstm-bf16", "openvino", "fastlstm-int8", "torch-int8"]
    reduced = [v for v in precision_variants(["fp32", "int8"], ["fastlstm"], 1) if v.key != "fastlstm"]
    assert all(v.tolerance is None for v in reduced)  # reported, never a mismatch
    case = one_case(TINY_CONFIG, {"fastlstm": 10.0, "ort": 20.0, "fastlstm-int8": 4.0, "torch-int8": 8.0})
    row = precision_table([case], ["fp32", "int8"]).splitlines()[-1]
    assert row.startswith(f"| {TINY_CONFIG} | 0.40 | 0.20 | 0.50 |")
