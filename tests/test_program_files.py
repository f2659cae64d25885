"""fastlstm.Model as a runtime: files (save/load, the format, corrupt and hostile programs), the
checks on each call's inputs, and what may be done with a model (threads, pickle, immutability).
"""

from __future__ import annotations

import copy
import json
import pickle
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import fastlstm  # noqa: E402
from child_process import run_python  # noqa: E402
from fastlstm._program_format import PROGRAM_METADATA_KEY, PROGRAM_VERSION  # noqa: E402


class Forecaster(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 8, num_layers=2, batch_first=True)
        self.head = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x, state):
        out, state = self.lstm(x, state)
        return self.head(out[:, -1]), state


def example(batch: int = 2, length: int = 7, dtype=torch.float32):
    return (torch.randn(batch, length, 3, dtype=dtype),
            (torch.zeros(2, batch, 8, dtype=dtype), torch.zeros(2, batch, 8, dtype=dtype)))


@pytest.fixture(scope="module")
def converted():
    torch.manual_seed(0)
    module = Forecaster().eval()
    return module, fastlstm.convert(module, example())


def numpy_inputs(batch: int, length: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    state = (rng.standard_normal((2, batch, 8)).astype(np.float32), rng.standard_normal((2, batch, 8)).astype(np.float32))
    return rng.standard_normal((batch, length, 3)).astype(np.float32), state


# ------------------------------------------------------------------------------ files
def test_save_and_load_round_trip(converted, tmp_path):
    _, model = converted
    path = tmp_path / "forecaster.safetensors"
    model.save(path)
    loaded = fastlstm.load(path)
    assert isinstance(loaded, fastlstm.Model)
    x, state = numpy_inputs(4, 9)
    for a, b in zip(_flatten(model(x, state)), _flatten(loaded(x, state))):
        np.testing.assert_array_equal(a, b)
    loaded.save(tmp_path / "again.safetensors")  # a loaded model saves the same program
    assert fastlstm.load(tmp_path / "again.safetensors").program() == model.program()


def _flatten(value):
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in _flatten(item)]
    return [value]


def test_file_layout_weights_as_tensors_program_as_json_metadata(converted, tmp_path):
    from safetensors import safe_open

    module, model = converted
    path = tmp_path / "model.safetensors"
    model.save(path)
    with safe_open(str(path), framework="np") as handle:
        keys = set(handle.keys())
        program = json.loads(handle.metadata()[PROGRAM_METADATA_KEY])
    assert "lstm.weight_ih_l0" in keys and "head.0.weight" in keys and "head.2.bias" in keys
    assert program["format"] == "fastlstm.program" and program["version"] == PROGRAM_VERSION
    assert [step["op"] for step in program["steps"]].count("lstm") == 1
    with safe_open(str(path), framework="np") as handle:
        np.testing.assert_array_equal(handle.get_tensor("head.0.weight"), module.head[0].weight.detach().numpy())


def test_lstm_weight_files_still_load_as_lstm(tmp_path):
    lstm = fastlstm.LSTM(3, 4, seed=0)
    lstm.save(tmp_path / "lstm.safetensors")
    assert isinstance(fastlstm.load(tmp_path / "lstm.safetensors"), fastlstm.LSTM)


def test_load_options_for_lstm_files_are_refused_for_models(converted, tmp_path):
    _, model = converted
    model.save(tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match=r"prefix and batch_first apply only to LSTM weight files"):
        fastlstm.load(tmp_path / "m.safetensors", batch_first=True)


def test_save_refuses_other_suffixes(converted, tmp_path):
    with pytest.raises(ValueError, match=r"saved as .safetensors"):
        converted[1].save(tmp_path / "model.pt")


def test_loading_needs_no_torch_and_importing_fastlstm_does_not_import_it(converted, tmp_path):
    _, model = converted
    path = tmp_path / "m.safetensors"
    model.save(path)
    x, state = numpy_inputs(3, 5)
    np.savez(tmp_path / "inputs.npz", x=x, h=state[0], c=state[1])
    expected = model(x, state)
    report = run_python(f"""
        import sys, json
        import fastlstm
        imported_torch = "torch" in sys.modules
        sys.modules["torch"] = None
        import numpy as np
        inputs = np.load({str(tmp_path / "inputs.npz")!r})
        model = fastlstm.load({str(path)!r})
        prediction, (h, c) = model(inputs["x"], (inputs["h"], inputs["c"]))
        try:
            fastlstm.convert(None, None)
            convert_error = ""
        except ModuleNotFoundError as exc:
            convert_error = str(exc)
        print(json.dumps({{"imported_torch": imported_torch, "prediction": prediction.tolist(),
                           "h": h.tolist(), "convert_error": convert_error}}))
    """, timeout=60)
    assert report["imported_torch"] is False
    np.testing.assert_array_equal(np.array(report["prediction"], np.float32), expected[0])
    np.testing.assert_array_equal(np.array(report["h"], np.float32), expected[1][0])
    assert "fastlstm.convert needs PyTorch" in report["convert_error"]


# ------------------------------------------------------------------------------ corrupt and hostile programs
def _document_and_weights(model):
    return model.program(), model.state_dict()


def _corrupt(model, edit):
    document, weights = _document_and_weights(model)
    edit(document)
    return document, weights


def _step(document, op):
    return next(step for step in document["steps"] if step["op"] == op)


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d.update(version=PROGRAM_VERSION + 1), r"format version .* upgrade fastlstm"),
    (lambda d: d.update(format="something else"), r"not a fastlstm program"),
    (lambda d: d.update(num_slots=-1), r"'num_slots' must be an int"),
    (lambda d: d.update(num_slots=10**12), r"'num_slots' must be an int"),
    (lambda d: d["steps"][0].update(op="os.system"), r"operation 'os.system'.*does not know"),
    (lambda d: d["steps"][-1].update(out=[0]), r"writes slot 0, which already holds a value"),
    (lambda d: d["steps"][0]["args"].update(input={"slot": 10**6}), r"slot must be an int in"),
    (lambda d: d["steps"][1]["args"].update(input={"slot": d["num_slots"] - 1}), r"reads slot .* before any step writes it"),
    (lambda d: _step(d, "linear")["args"].update(weight={"weight": "no.such.weight"}), r"weight 'no.such.weight', which the file does not hold"),
    (lambda d: _step(d, "linear")["args"].update(weight="not a weight"), r"argument 'weight' must be a value or a weight"),
    (lambda d: _step(d, "lstm")["args"].update(hidden_size=-3), r"hidden_size must be positive"),
    (lambda d: _step(d, "lstm")["args"].update(hidden_size=9), r"invalid weights"),
    (lambda d: d["inputs"]["tensors"][0].update(dtype="object"), r"dtype must be one of"),
    (lambda d: d["inputs"]["tensors"][0].update(shape=[{"exec": "x"}]), r"unknown dimension expression"),
    (lambda d: d["inputs"]["tensors"][0].update(shape=[{"add": [{"add": [1]}] * 1}] * 1 + [_deep(40)]), r"nested deeper"),
    (lambda d: d.update(outputs={"slot": d["num_slots"] + 5}), r"slot must be an int in"),
    (lambda d: d["steps"][0]["args"].update(nested=_deep_list(100)), r"nested too deeply"),
], ids=["version", "format", "negative_slots", "huge_slots", "unknown_op", "slot_written_twice",
        "slot_out_of_range", "slot_read_before_written", "missing_weight", "weight_not_a_reference",
        "bad_hyperparameter", "hyperparameter_mismatching_weights", "bad_input_dtype", "bad_dim_expression",
        "deep_dim_expression", "bad_output", "deep_argument"])
def test_corrupt_or_hostile_programs_are_refused_on_load(converted, tmp_path, edit, expected):
    _, model = converted
    document, weights = _corrupt(model, edit)
    with pytest.raises(ValueError, match=expected):
        fastlstm.Model(document, weights)
    # and the same through a file, with the file named
    from fastlstm._program_file import save_program

    path = tmp_path / "hostile.safetensors"
    save_program(path, document, weights)
    with pytest.raises(ValueError, match=r"hostile.safetensors' holds an invalid fastlstm program"):
        fastlstm.load(path)


def _deep(levels):
    expr = {"sym": "s0"}
    for _ in range(levels):
        expr = {"add": [expr]}
    return expr


def _deep_list(levels):
    arg = 1
    for _ in range(levels):
        arg = {"list": [arg]}
    return arg


def test_program_that_is_not_json_is_refused(converted, tmp_path):
    from safetensors.numpy import save_file

    _, model = converted
    path = tmp_path / "garbage.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in model.state_dict().items()}, str(path),
              metadata={PROGRAM_METADATA_KEY: "{not json" + "[" * 100000})
    with pytest.raises(ValueError, match=r"garbage.safetensors' holds an invalid fastlstm program: the program is not valid JSON"):
        fastlstm.load(path)


def test_weights_of_unsupported_dtype_are_refused(converted):
    document, weights = _document_and_weights(converted[1])
    weights = dict(weights, extra=np.zeros(3, np.complex64))
    with pytest.raises(ValueError, match=r"weight 'extra' has dtype complex64"):
        fastlstm.Model(document, weights)


# ------------------------------------------------------------------------------ inputs of a call
def test_numpy_in_numpy_out_and_torch_in_torch_out(converted):
    module, model = converted
    x, state = numpy_inputs(3, 4)
    out_numpy = model(x, state)
    out_torch = model(torch.from_numpy(x), tuple(torch.from_numpy(s) for s in state))
    assert isinstance(out_numpy[0], np.ndarray) and isinstance(out_numpy[1][0], np.ndarray)
    assert isinstance(out_torch[0], torch.Tensor) and isinstance(out_torch[1][1], torch.Tensor)
    assert type(out_torch) is tuple and type(out_torch[1]) is tuple  # forward's nesting
    np.testing.assert_array_equal(out_numpy[0], out_torch[0].numpy())
    with torch.no_grad():
        expected = module(torch.from_numpy(x), tuple(torch.from_numpy(s) for s in state))
    np.testing.assert_allclose(out_numpy[0], expected[0].numpy(), atol=2e-5)


@pytest.mark.parametrize("make_call, error, expected", [
    (lambda m, x, s: m(x), TypeError, r"must have 2 items, as in the example"),
    (lambda m, x, s: m(x, s, x), TypeError, r"must have 2 items"),
    (lambda m, x, s: m(x, s[0]), TypeError, r"inputs\[1\] must be a tuple"),
    (lambda m, x, s: m(x, (s[0],)), TypeError, r"inputs\[1\] must have 2 items"),
    (lambda m, x, s: m(x.astype(np.float64), s), TypeError, r"x has dtype float64 but the model takes float32.*never casts"),
    (lambda m, x, s: m(x.astype(np.int32), s), TypeError, r"x must have dtype float32, got int32"),
    (lambda m, x, s: m(x.tolist(), s), TypeError, r"must be a numpy array or a torch tensor, got list"),
    (lambda m, x, s: m(x[0], s), ValueError, r"x must be 3-D \(s0, s1, 3\), got 2-D"),
    (lambda m, x, s: m(x[..., :2], s), ValueError, r"x has shape \(3, 4, 2\).*axis 2 must be 3"),
    (lambda m, x, s: m(x, (s[0][:, :2], s[1][:, :2])), ValueError, r"state\[0\] has shape \(2, 2, 8\).*axis 1 must be 3"),
    (lambda m, x, s: m(x, (s[0][:1], s[1])), ValueError, r"state\[0\] has shape \(1, 3, 8\).*axis 0 must be 2"),
    (lambda m, x, s: m(torch.from_numpy(x).requires_grad_(), s), TypeError, r"requires grad.*torch.no_grad"),
], ids=["too_few", "too_many", "state_not_a_tuple", "state_too_short", "float64", "integer_for_float",
        "list", "wrong_rank", "wrong_features", "state_batch_mismatch", "state_layers", "requires_grad"])
def test_call_inputs_are_checked_with_clear_messages(converted, make_call, error, expected):
    _, model = converted
    x, state = numpy_inputs(3, 4)
    with pytest.raises(error, match=expected):
        make_call(model, x, state)


def test_requires_grad_inputs_run_under_no_grad(converted):
    _, model = converted
    x, state = numpy_inputs(2, 3)
    with torch.no_grad():
        out = model(torch.from_numpy(x).requires_grad_(), tuple(torch.from_numpy(s) for s in state))
    assert isinstance(out[0], torch.Tensor)


def test_integer_inputs_accept_any_exactly_convertible_integer_type():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2)).eval()
    with pytest.warns(UserWarning, match=r"fixes input axis 1 = 3"):  # Flatten + Linear(12) fix the length
        model = fastlstm.convert(module, torch.randint(0, 10, (2, 3)))
    tokens = np.array([[1, 2, 3], [4, 5, 6]])
    expected = model(tokens.astype(np.int64))
    np.testing.assert_array_equal(model(tokens.astype(np.int32)), expected)
    np.testing.assert_array_equal(model(tokens.astype(np.uint8)), expected)
    with pytest.raises(TypeError, match=r"must have dtype int64, got uint64"):
        model(tokens.astype(np.uint64))
    with pytest.raises(IndexError, match=r"embedding index out of range"):
        model(np.array([[1, 2, 10], [0, 0, 0]]))
    with pytest.raises(IndexError, match=r"embedding index out of range"):
        model(np.array([[1, 2, -1], [0, 0, 0]]))  # numpy would wrap -1 silently


def test_float64_model(tmp_path):
    torch.manual_seed(1)
    module = Forecaster().double().eval()
    model = fastlstm.convert(module, example(dtype=torch.float64))
    x, state = numpy_inputs(2, 30, seed=4)
    x, state = x.astype(np.float64), tuple(s.astype(np.float64) for s in state)
    with torch.no_grad():
        expected = module(torch.from_numpy(x), tuple(torch.from_numpy(s) for s in state))
    got = model(x, state)
    assert got[0].dtype == np.float64
    assert np.max(np.abs(got[0] - expected[0].numpy())) <= 1e-12 * max(1.0, float(np.max(np.abs(expected[0].numpy()))))
    with pytest.raises(TypeError, match=r"float32 but the model takes float64"):
        model(x.astype(np.float32), state)


# ------------------------------------------------------------------------------ the model object
def test_model_is_immutable_picklable_and_describes_itself(converted):
    _, model = converted
    with pytest.raises(AttributeError, match=r"immutable"):
        model.weights = None
    with pytest.raises(AttributeError, match=r"immutable"):
        del model._steps
    clone = pickle.loads(pickle.dumps(model))
    x, state = numpy_inputs(2, 3)
    np.testing.assert_array_equal(clone(x, state)[0], model(x, state)[0])
    assert model.inputs[0] == {"name": "x", "dtype": np.dtype(np.float32), "shape": "(s0, s1, 3)"}
    assert model.inputs[1]["name"] == "state[0]" and model.inputs[1]["shape"] == "(2, s0, 8)"
    assert "lstm" in model.operations and "linear" in model.operations
    assert repr(model).startswith("fastlstm.Model(Forecaster; inputs x: float32 (s0, s1, 3)")
    document = model.program()
    document["steps"].clear()  # a copy: the model is unaffected
    assert model.operations


def test_weights_are_read_only_and_outputs_are_owned(converted):
    _, model = converted
    assert all(not array.flags.writeable for array in model.state_dict().values())
    x, state = numpy_inputs(2, 3)
    prediction, (h, c) = model(x, state)
    assert prediction.flags.writeable and h.flags.writeable


def test_concurrent_calls_give_the_same_results(converted):
    _, model = converted
    inputs = [numpy_inputs(b, t, seed) for seed, (b, t) in enumerate([(1, 5), (3, 9), (2, 2), (4, 17)] * 4)]
    expected = [model(*call)[0] for call in inputs]
    results = [None] * len(inputs)

    def work(i):
        for _ in range(5):
            results[i] = model(*inputs[i])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_a_model_document_is_plain_json(converted):
    document = converted[1].program()
    assert json.loads(json.dumps(document, allow_nan=False)) == document
    assert copy.deepcopy(document) == document
