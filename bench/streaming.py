"""`lab.py streaming`: the cost of one streaming step at batch 1, the way a service calls it.

A stream feeds one frame at a time and carries (h, c) from call to call, so every variant here does
exactly that (each timed call continues the stream from the previous call's state):

- fastlstm `model.step(x_t, (h, c), out=(y, h, c))`: the allocation-free path, state updated in place;
- fastlstm `model(x_t[None], state)`: the general forward on a one-step sequence, new arrays each call;
- torch `nn.LSTM(x, hx)` on a (1, 1, I) tensor under inference_mode;
- ORT on an export whose graph inputs are x, h0 and c0 (its state outputs fed back as the next inputs).

Before timing, each variant's one step from the same random (h0, c0) is checked against torch's.
Timing is the package's: one process, variants interleaved, primed, per-call perf_counter_ns.
The target: fastlstm's step at I=64, H=128 in at most 5 microseconds. Writes stream.md and stream.json;
exit status 1 if any variant's step differs from torch's.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import lab_options
from fastlstm.bench import report
from fastlstm.bench.cli import (
    add_timing_arguments,
    case_progress,
    mismatch_status,
    positive_int,
    progress,
    publish,
    run_info,
    settings_from,
)
from fastlstm.bench.configs import CONFIGS_BY_NAME, BenchConfig, select_configs
from fastlstm.bench.engines import ENGINE_LABELS, Outputs, create_onnx_session, fastlstm_model, fastlstm_threads_text
from fastlstm.bench.suite import CaseResult, SuiteSettings, Variant, run_variants
from fastlstm.bench.weights import BENCH_DTYPE, WeightSource, make_input, random_weights

DEFAULT_CONFIGS = "stream-step-h128,stream-step-h512"
TARGET_CONFIG = "stream-step-h128"  # I64 H128: the streaming target
TARGET_US = 5.0
STATE_SCALE = 0.5  # the checked step starts from a random state of this scale, not zeros

KEY_STEP = "fastlstm_step_out"
KEY_CALL = "fastlstm_call"


def step_config(config: BenchConfig) -> BenchConfig:
    """The same network fed one time step of batch 1."""
    return dataclasses.replace(config, seq_len=1, batch=1)


def initial_state(config: BenchConfig, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """A random (h0, c0) in nn.LSTM's hx shapes for batch 1, the same for every variant."""
    lstm = config.lstm
    rng = np.random.default_rng(seed + 1)
    layers = lstm.num_layers * (2 if lstm.bidirectional else 1)
    h0 = STATE_SCALE * rng.standard_normal((layers, 1, lstm.output_hidden_size), dtype=BENCH_DTYPE)
    c0 = STATE_SCALE * rng.standard_normal((layers, 1, lstm.hidden_size), dtype=BENCH_DTYPE)
    return h0, c0


# Every adapter: `run()` takes one step continuing the stream; `current_state()` is where the stream
# is now (h, c as numpy); `outputs()` is one step from the fixed (h0, c0), for the check against torch.


class FastlstmStepInPlace:
    """`model.step(x_t, (h, c), out=(y, h, c))`: no allocation, the stream's state updated in place."""

    def __init__(self, model: Any, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, threads: int) -> None:
        self._model, self._x_t, self._h0, self._c0, self._threads = model, x[0], h0, c0, threads
        self._state = (h0.copy(), c0.copy())
        step, x_t, state, out = model.step, self._x_t, self._state, (self._output_buffer(), *self._state)
        self.run: Callable[[], object] = lambda: step(x_t, state, out=out, num_threads=threads)
        self.detail = f"model.step(x_t, (h, c), out=(y, h, c)), {fastlstm_threads_text(threads)}"

    def _output_buffer(self) -> np.ndarray:
        directions = 2 if self._model.config.bidirectional else 1
        return np.empty((1, directions * self._h0.shape[-1]), self._h0.dtype)

    def current_state(self) -> Tuple[np.ndarray, np.ndarray]:
        return self._state[0].copy(), self._state[1].copy()

    def outputs(self) -> Outputs:
        h, c, y = self._h0.copy(), self._c0.copy(), self._output_buffer()
        self._model.step(self._x_t, (h, c), out=(y, h, c), num_threads=self._threads)
        return y[None], h, c


class FastlstmCall:
    """`out, state = model(x_t[None], state)`: the general forward on a one-step sequence."""

    def __init__(self, model: Any, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, threads: int) -> None:
        self._model, self._x, self._h0, self._c0, self._threads = model, x, h0, c0, threads
        self._state = state = [(h0.copy(), c0.copy())]

        def run() -> None:
            _, state[0] = model(x, state[0], num_threads=threads)

        self.run: Callable[[], object] = run
        self.detail = f"model(x_t[None], state), {fastlstm_threads_text(threads)}"

    def current_state(self) -> Tuple[np.ndarray, np.ndarray]:
        h, c = self._state[0]
        return h.copy(), c.copy()

    def outputs(self) -> Outputs:
        out, (h, c) = self._model(self._x, (self._h0, self._c0), num_threads=self._threads)
        return out, h, c


class TorchStep:
    """`out, state = lstm(x, state)` under inference_mode, on tensors made once."""

    def __init__(self, lstm: Any, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self._torch, self._lstm = torch, lstm
        self._x, self._h0, self._c0 = torch.from_numpy(x), torch.from_numpy(h0), torch.from_numpy(c0)
        x_tensor = self._x
        self._state = state = [(self._h0.clone(), self._c0.clone())]

        def run() -> None:
            with torch.inference_mode():
                _, state[0] = lstm(x_tensor, state[0])

        self.run: Callable[[], object] = run
        self.detail = f"torch {torch.__version__} nn.LSTM(x, hx), inference_mode, {threads} thread(s)"

    def current_state(self) -> Tuple[np.ndarray, np.ndarray]:
        h, c = self._state[0]
        return h.numpy().copy(), c.numpy().copy()

    def outputs(self) -> Outputs:
        with self._torch.inference_mode():
            out, (h, c) = self._lstm(self._x, (self._h0, self._c0))
        return out.numpy(), h.numpy(), c.numpy()


class OnnxRuntimeStep:
    """ORT on an export with h0/c0 as graph inputs; each call feeds back the previous call's states."""

    def __init__(self, lstm: Any, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, threads: int) -> None:
        self._check_feed = {"x": x, "h0": h0, "c0": c0}
        self._session, detail = create_onnx_session(lstm, dict(self._check_feed), threads)
        session, feed = self._session, dict(self._check_feed)
        self._feed = feed

        def run() -> None:
            _, feed["h0"], feed["c0"] = session.run(None, feed)

        self.run: Callable[[], object] = run
        self.detail = f"session.run(x, h0, c0), {detail}"

    def current_state(self) -> Tuple[np.ndarray, np.ndarray]:
        return self._feed["h0"].copy(), self._feed["c0"].copy()

    def outputs(self) -> Outputs:
        out, h, c = self._session.run(None, self._check_feed)
        return out, h, c


# key (in results and JSON), label (in tables), engine, adapter taking (network, x, h0, c0, threads)
STREAM_VARIANTS: Tuple[Tuple[str, str, str, Any], ...] = (
    (KEY_STEP, "fastlstm step(out=)", "fastlstm", FastlstmStepInPlace),
    (KEY_CALL, "fastlstm model(x[None], state)", "fastlstm", FastlstmCall),
    ("torch", "torch nn.LSTM(x, hx)", "torch", TorchStep),
    ("ort", "ORT run(x, h0, c0)", "ort", OnnxRuntimeStep),
)


def variant_labels(engines: Sequence[str]) -> Dict[str, str]:
    """{key: label} of the variants the chosen engines give, in table order."""
    return {key: label for key, label, engine, _adapter in STREAM_VARIANTS if engine in engines}


def stream_variants(h0: np.ndarray, c0: np.ndarray, engines: Sequence[str], threads: int) -> List[Variant]:
    """The ways to take one step, for the engines asked for; every one starts from (h0, c0)."""

    def builder(engine: str, adapter: Any) -> Callable[[WeightSource, np.ndarray], Any]:
        def build(source: WeightSource, x: np.ndarray) -> Any:
            # fastlstm variants share the case's one packed model (suite.run_variants).
            network = fastlstm_model(source) if engine == "fastlstm" else source.torch_lstm
            return adapter(network, x, h0, c0, threads)

        return build

    return [
        Variant(key, label, engine, builder(engine, adapter))
        for key, label, engine, adapter in STREAM_VARIANTS
        if engine in engines
    ]


def torch_step_reference(source: WeightSource, x: np.ndarray, h0: np.ndarray, c0: np.ndarray) -> Optional[Outputs]:
    if source.torch_lstm is None:
        return None
    import torch

    with torch.inference_mode():
        out, (h, c) = source.torch_lstm(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
    return out.numpy().copy(), h.numpy().copy(), c.numpy().copy()


def run_stream_case(config: BenchConfig, settings: SuiteSettings, threads: int) -> CaseResult:
    """Check and time every variant's step on config's network."""
    source = random_weights(config, settings.seed)
    x = make_input(config, settings.seed)
    h0, c0 = initial_state(config, settings.seed)
    reference = torch_step_reference(source, x, h0, c0)
    return run_variants(source, x, stream_variants(h0, c0, settings.engines, threads), settings, reference)


def target_verdict(cases: Sequence[CaseResult]) -> Optional[Tuple[float, bool]]:
    """fastlstm step(out=)'s median at the target shape and whether it meets TARGET_US."""
    target_lstm = CONFIGS_BY_NAME[TARGET_CONFIG].lstm
    for case in cases:
        if case.config.lstm == target_lstm and KEY_STEP in case.engines:
            median = case.engines[KEY_STEP].timing.median_us
            return median, median <= TARGET_US
    return None


def stream_table(cases: Sequence[CaseResult], labels: Dict[str, str]) -> str:
    keys = list(labels)
    baselines = [key for key in ("torch", "ort") if key in keys and KEY_STEP in keys]
    header = ["config", "shape"] + [f"{labels[key]} us" for key in keys]
    header += [f"step(out=)/{ENGINE_LABELS[key]}" for key in baselines]
    rows = []
    for case in cases:
        row = [case.config.name, case.config.describe()] + [report.time_cell(case, key) for key in keys]
        rows.append(row + [report.format_ratio(report.time_ratio(case, KEY_STEP, key)) for key in baselines])
    return report.markdown_table(header, rows)


def stream_report(cases: List[CaseResult], settings: SuiteSettings, labels: Dict[str, str],
                  run: Dict[str, Any]) -> report.Report:
    """The report; run is cli.run_info's."""
    verdict = target_verdict(cases)
    shape = CONFIGS_BY_NAME[TARGET_CONFIG].lstm
    goal = f"fastlstm step(out=) at I={shape.input_size}, H={shape.hidden_size} in <= {TARGET_US:g} us per step"
    target = "not measured in this run." if verdict is None else f"median {verdict[0]:.2f} us, {'MET' if verdict[1] else 'MISSED'}."
    header = report.header_lines(run["machine"], run["date"], run["command"])
    header += report.timing_lines(settings, run["timer_floor_ns"], what="variants")
    header += ["every call continues the stream: it starts from the state the previous call left"]
    table = stream_table(cases, labels)
    return report.Report(
        title="fastlstm streaming: one step at batch 1",
        header=header + report.engine_lines(cases),
        sections=[("Time per step (microseconds, median / p90)",
                   f"step(out=)/X is fastlstm step(out=)'s median over X's: below 1 means fastlstm is faster.\n\n{table}\n\n"
                   f"Target ({goal}): {target}")],
        notes=report.merged_notes(cases),
        data={
            **run,
            "settings": report.settings_json(settings),
            "target": {"config": TARGET_CONFIG, "variant": KEY_STEP, "target_us": TARGET_US,
                       "median_us": None if verdict is None else verdict[0], "met": None if verdict is None else verdict[1]},
            "cases": [{**report.case_json(case), "step_time_over_torch": report.time_ratio(case, KEY_STEP, "torch"),
                       "step_time_over_ort": report.time_ratio(case, KEY_STEP, "ort")} for case in cases],
        },
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("streaming", help="one streaming step at batch 1: fastlstm step(out=) vs model() vs torch vs ORT",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, metavar="NAMES",
                        help=f"standard configs whose network takes the step (T and B set to 1), or 'all' (default: {DEFAULT_CONFIGS})")
    parser.add_argument("--threads", type=positive_int, default=1, metavar="N", help="threads per engine (default: 1)")
    add_timing_arguments(parser)
    lab_options.add_priming_argument(parser)
    lab_options.add_output_arguments(parser, "stream.md and stream.json")
    parser.set_defaults(handler=run, parser=parser)


def run(args: argparse.Namespace, command: str) -> int:
    parser: argparse.ArgumentParser = args.parser
    try:
        configs = [step_config(config) for config in select_configs(args.configs)]
    except ValueError as error:
        parser.error(str(error))
    settings = settings_from(args, args.threads, priming_seconds=lab_options.priming_seconds(args, parser))
    labels = variant_labels(args.engines)
    progress(f"lab streaming: {len(configs)} config(s), variants {', '.join(labels.values())}, {args.threads} thread(s)")
    run = run_info(command)
    cases = []
    for index, config in enumerate(configs, start=1):
        cases.append(run_stream_case(config, settings, args.threads))
        case_progress(index, len(configs), cases[-1])
    document = stream_report(cases, settings, labels, run)
    publish(document, lab_options.output_dir(args), "stream")
    return mismatch_status(cases)
