"""Score a Parquet dataset of variable-length sequences with fastlstm on Ray Data.

Each row holds one sequence: `values` (its steps' features, flattened) and `length` (its steps).
`map_batches` runs a pool of scorer actors; each loads the model file once, when it starts, and
scores every batch it is handed through a fastlstm.Batcher (which merges the batch's sequences into
batched calls). A row's score is what the model alone gives for its sequence: a converted model's
output (e.g. the airline forecaster's next month), or an LSTM's final hidden state of its last layer.

    python examples/ray_batch_scoring.py --smoke           # local Ray (2 CPUs): 200 rows, checked row by row
    python examples/ray_batch_scoring.py --measure         # 1 vs 2 workers on --rows rows
    python examples/ray_batch_scoring.py --data DIR --out DIR [--model FILE] [--workers N]

On a cluster: `ray start --head` on one machine and `ray start --address HEAD:6379` on the others,
the dataset and the model file on storage every node reads (a shared file system, or s3:// paths for
the data), and `--address auto`. Needs `pip install "fastlstm[ray]"`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from fastlstm.serve import BUNDLED_MODEL


class Scorer:
    """A Ray Data actor: the model is loaded once per actor, then every batch of rows is scored."""

    def __init__(self, model_file: str, input_size: int) -> None:
        import fastlstm

        fastlstm.set_num_threads(1)  # the actors, not threads inside one, share out the cores
        self.model = fastlstm.load(model_file)
        self.is_lstm = isinstance(self.model, fastlstm.LSTM)
        self.input_size = input_size
        self.batcher = fastlstm.Batcher(self.model, max_batch=64, max_delay_ms=0)

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        sequences = [np.asarray(values, np.float32).reshape(int(length), self.input_size)
                     for values, length in zip(batch["values"], batch["length"])]
        futures = [self.batcher.submit(x) for x in sequences]
        scores = [score_of(future.result(), self.is_lstm) for future in futures]
        return {"id": batch["id"], "score": np.stack(scores)}


def score_of(result: Any, is_lstm: bool) -> np.ndarray:
    if is_lstm:
        _, (h_n, _) = result
        return h_n[-1]
    return np.asarray(result).reshape(-1)


def score_alone(model_file: Path, rows: Dict[str, np.ndarray], input_size: int) -> np.ndarray:
    """The reference: every row scored by the model alone, one call per row, in this process."""
    import fastlstm

    model = fastlstm.load(str(model_file))
    is_lstm = isinstance(model, fastlstm.LSTM)
    scores = []
    for values, length in zip(rows["values"], rows["length"]):
        x = np.asarray(values, np.float32).reshape(int(length), input_size)
        scores.append(score_of(model(x) if is_lstm else model(x[None])[0], is_lstm))
    return np.stack(scores)


def model_input_size(model_file: Path) -> int:
    import fastlstm

    model = fastlstm.load(str(model_file))
    if isinstance(model, fastlstm.LSTM):
        return model.input_size
    (spec,) = model._program.inputs  # a one-input converted model: (batch, time, features)
    return int(spec.shape[-1])


def write_dataset(folder: Path, rows: int, input_size: int, seed: int = 0) -> None:
    """A Parquet dataset of `rows` random sequences of 6-48 steps, in 4 files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    lengths = rng.integers(6, 49, rows)
    values = [rng.random(int(n) * input_size, dtype=np.float32) for n in lengths]
    folder.mkdir(parents=True, exist_ok=True)
    for part, index in enumerate(np.array_split(np.arange(rows), 4)):
        table = pa.table({"id": pa.array(index, pa.int64()), "length": pa.array(lengths[index], pa.int32()),
                          "values": pa.array([values[i] for i in index], pa.list_(pa.float32()))})
        pq.write_table(table, folder / f"part-{part}.parquet")


def score(data: Path, model_file: Path, workers: int, cpus_per_worker: float, batch_size: int = 256) -> Any:
    """The scored dataset (Ray Data, lazy): id and score per row."""
    import ray

    input_size = model_input_size(model_file)
    # Small files may read as one block, which one scorer would take alone: a few blocks per scorer.
    dataset = ray.data.read_parquet(str(data)).repartition(4 * workers)
    return dataset.map_batches(Scorer, fn_constructor_args=(str(model_file), input_size), batch_size=batch_size,
                               batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
                               num_cpus=cpus_per_worker)


def collect(scored: Any) -> Dict[str, np.ndarray]:
    """Scores ordered by id."""
    rows = scored.to_pandas()
    order = np.argsort(rows["id"].to_numpy())
    return {"id": rows["id"].to_numpy()[order], "score": np.stack(rows["score"].to_numpy()[order])}


def read_rows(data: Path) -> Dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(str(data)).sort_by("id")
    return {"id": table["id"].to_numpy(), "length": table["length"].to_numpy(),
            "values": np.asarray(table["values"].to_pylist(), dtype=object)}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL, help="a model file (default: the bundled forecaster)")
    parser.add_argument("--data", type=Path, help="a Parquet dataset (id, length, values); default: made up")
    parser.add_argument("--out", type=Path, help="write the scores here as Parquet")
    parser.add_argument("--workers", type=int, default=2, help="scorer actors (default: 2)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster ('auto'); default: a local instance")
    parser.add_argument("--cpus-per-worker", type=float, default=None,
                        help="CPUs Ray reserves per scorer (default: 1 on a cluster, 0.5 on the local instance)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="local Ray (2 CPUs), 200 made-up rows, checked row by row")
    mode.add_argument("--measure", action="store_true", help="time 1 vs 2 workers on --rows made-up rows")
    parser.add_argument("--rows", type=int, default=20_000, help="rows made up for --measure (default: 20000)")
    args = parser.parse_args(argv)

    import ray

    if args.address:
        ray.init(address=args.address)
    else:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # Ray's CPUs are reservations. On the 2-CPU local instance, scorers reserving 1 CPU each would
    # leave none for the tasks that list and read the files, and the job would wait forever; each
    # scorer computes on one thread whatever it reserves.
    cpus = args.cpus_per_worker or (1.0 if args.address else 0.5)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            data = args.data
            if data is None:
                data = Path(scratch) / "sequences"
                write_dataset(data, 200 if args.smoke else args.rows, model_input_size(args.model))
            if args.smoke:
                result = collect(score(data, args.model, args.workers, cpus, batch_size=32))
                reference = score_alone(args.model, read_rows(data), model_input_size(args.model))
                equal = bool(np.array_equal(result["score"], reference))
                print(json.dumps({"rows": int(result["id"].size), "workers": args.workers,
                                  "equal_to_single_process": equal}))
                return 0 if equal else 1
            if args.measure:
                timings = {}
                for workers in (1, 2):
                    started = time.perf_counter()
                    rows = collect(score(data, args.model, workers, cpus))["id"].size
                    timings[workers] = {"seconds": time.perf_counter() - started, "rows": int(rows)}
                    print(f"{workers} worker(s): {timings[workers]}", file=sys.stderr)
                print(json.dumps({"rows": args.rows, "by_workers": timings}))
                return 0
            scored = score(data, args.model, args.workers, cpus)
            if args.out is None:
                print(scored.take(5))
            else:
                scored.write_parquet(str(args.out))
            return 0
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
