"""`fastlstm bench --whole-models` and `fastlstm bench --model` on a converted file, on quick runs: the
tables and JSON carry every engine and the overhead pass, outputs are checked against torch, and a
converted file is timed on fastlstm alone with a note saying so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
import pytest

pytest.importorskip("fastlstm._core", reason="fastlstm's C++ extension is not built")
torch = pytest.importorskip("torch")

import fastlstm  # noqa: E402
from fastlstm import cli  # noqa: E402
from fastlstm.bench import whole_models  # noqa: E402

QUICK = ["--repeats", "3"]


def bench(argv: List[str], out: Path) -> int:
    try:
        return cli.main(["bench", *argv, *QUICK, "--out", str(out), "--no-chart"])
    except SystemExit as exit_info:  # argparse errors
        return int(exit_info.code)


def test_whole_models_forecaster_against_torch_and_ort(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert bench(["--whole-models", "forecaster"], tmp_path) == 0
    markdown = capsys.readouterr().out
    assert "| forecaster-b1 |" in markdown and "| forecaster-b32 |" in markdown
    assert "fastlstm/torch" in markdown and "MISMATCH" not in markdown
    document = json.loads((tmp_path / "results.json").read_text())
    cases = {case["config"]["name"]: case for case in document["cases"]}
    assert set(cases) == {"forecaster-b1", "forecaster-b32"}
    for case in cases.values():
        engines = case["engines"]
        assert {"fastlstm", "torch"} <= set(engines)
        assert all(result["matches_reference"] for result in engines.values())
        assert case["fastlstm_time_over_torch"] > 0
    assert [row["case"] for row in document["overhead"]] == ["forecaster-b1", "forecaster-b32"]
    assert all(row["model_us"] > 0 and row["bare_lstm_us"] > 0 for row in document["overhead"])
    assert "LSTM alone" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize("name", ["tagger", "speaker"])
def test_other_whole_models_convert_and_match_torch(name: str) -> None:
    """Every standard model converts, and its converted form agrees with torch (the bench's check, directly)."""
    module = whole_models.build_module(name, seed=0)
    model = fastlstm.convert(module, torch.from_numpy(whole_models.make_model_input(name, 2, 7, 0)))
    x = whole_models.make_model_input(name, 3, 9, 1)
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("engine", ["ort", "openvino"])
def test_peer_engines_run_the_whole_exported_module(engine: str) -> None:
    """ORT and OpenVINO (pinned to fp32) run the whole module's ONNX export and agree with torch."""
    pytest.importorskip({"ort": "onnxruntime", "openvino": "openvino"}[engine])
    module = whole_models.build_module("tagger", seed=0)
    x = whole_models.make_model_input("tagger", 2, 9, 1)
    built = {"ort": whole_models.ort_engine, "openvino": whole_models.openvino_engine}[engine](module, x, 1)
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    outputs = built.outputs()
    assert len(outputs) == 1
    np.testing.assert_allclose(outputs[0], expected, rtol=0, atol=1e-5)
    assert "thread" in built.detail.lower()


def test_openvino_joins_whole_models_only_with_ort(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(whole_models, "openvino_installed", lambda: True)
    keys = lambda *args: [key for key, _ in whole_models.whole_model_engines(*args)]  # noqa: E731
    assert keys(["fastlstm", "torch", "ort"]) == ["fastlstm", "torch", "ort", "openvino-fp32"]
    assert keys(["fastlstm", "torch"]) == ["fastlstm", "torch"]
    # Reduced formats come with their peers, neither held to torch's float32 outputs.
    columns = whole_models.whole_model_engines(["fastlstm", "torch"], ["bf16", "int8"])
    assert columns == [("torch", 1e-4), ("fastlstm-bf16", None), ("openvino", None), ("fastlstm-int8", None),
                       ("torch-int8", None)]
    monkeypatch.setattr(whole_models, "openvino_installed", lambda: False)
    assert keys(["fastlstm", "ort"]) == ["fastlstm", "ort"]


def test_whole_models_with_reduced_precision_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert bench(["--whole-models", "forecaster", "--weights", "fp32,bf16,int8", "--engines", "fastlstm,torch"],
                 tmp_path) == 0
    markdown = capsys.readouterr().out
    assert "Reduced-precision weights" in markdown and "MISMATCH" not in markdown
    document = json.loads((tmp_path / "results.json").read_text())
    for case in document["cases"]:
        engines = case["engines"]
        assert {"fastlstm", "torch", "fastlstm-bf16", "fastlstm-int8", "torch-int8"} <= set(engines)
        assert engines["fastlstm"]["matches_reference"]
        for key in ("fastlstm-bf16", "fastlstm-int8"):  # reported, not held to 1e-4
            assert 0 < engines[key]["max_abs_error"] < 1e-2


def test_model_flag_on_a_converted_file_times_fastlstm_alone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    module = whole_models.build_module("forecaster", seed=0)
    path = tmp_path / "forecaster.safetensors"
    fastlstm.convert(module, torch.zeros(2, 7, 1)).save(str(path))
    out = tmp_path / "out"
    assert bench(["--model", str(path), "--seq-len", "12", "--batch", "2"], out) == 0
    markdown = capsys.readouterr().out
    assert "| forecaster |" in markdown and "T12 B2" in markdown
    document = json.loads((out / "results.json").read_text())
    assert list(document["cases"][0]["engines"]) == ["fastlstm"]
    assert any("fastlstm alone" in note and "(2, 12, 1)" in note for note in document["notes"])


@pytest.mark.parametrize("argv", [
    ["--whole-models", "no-such-model"],
    ["--whole-models", "forecaster", "--configs", "small"],
    ["--whole-models", "forecaster", "--seq-len", "5"],
])
def test_bad_whole_model_arguments_are_usage_errors(argv: List[str], tmp_path: Path) -> None:
    assert bench(argv, tmp_path) == 2
