#!/usr/bin/env bash
# Valgrind memcheck over a few hundred fastlstm calls: fails if any memory the extension allocated
# is "definitely lost", or if any read/write/uninitialised-use error is raised in its own code.
#
#   bench/leak_check.sh              # uses $PYTHON, else .venv/bin/python, else python3
#   PYTHON=/path/to/python bench/leak_check.sh
#
# Runs against the repository's in-place build if there is one, else the installed package. Python's own allocations are routed through malloc
# (PYTHONMALLOC=malloc) so that valgrind sees them, but the interpreter, numpy and the dynamic
# loader keep memory until exit and trip memcheck in ways that are not ours: only records whose
# stack involves fastlstm's extension (_core*.so, or a fastlstm:: function) count. Valgrind hides
# AVX-512 from the program, so the avx2 and scalar kernels run. About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
command -v valgrind >/dev/null || { echo "leak_check: valgrind is not installed" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastlstm-leak.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

cat > "$WORK/workload.py" <<'EOF'
"""A few hundred calls over every path of the extension, including the ones that raise."""
import threading

import numpy as np

import fastlstm

rng = np.random.default_rng(0)


def workload(isa):
    fastlstm.set_isa(isa)
    models = [
        fastlstm.LSTM(5, 8, seed=0),
        fastlstm.LSTM(5, 8, num_layers=2, bidirectional=True, proj_size=3, seed=1),
        fastlstm.LSTM(5, 20, num_layers=3, batch_first=True, dtype=np.float64, seed=2),
    ]
    for i in range(60):
        model = models[i % 3]
        batch, steps = 1 + i % 6, 1 + i % 5  # batch 5-6 takes the GEMM path, 1-4 the fused step
        x = rng.standard_normal((batch, steps, 5) if model.batch_first else (steps, batch, 5)).astype(model.dtype)
        h0, c0 = model.initial_state(batch)
        model(x)
        model(x, (h0 + 0.5, c0 - 0.5), lengths=rng.integers(1, steps + 1, size=batch))
        model(x[:, 0] if model.batch_first else x[:, 0], None)  # unbatched
        width = model.config.num_directions * model.config.output_hidden_size
        y = np.empty((batch, width), model.dtype)
        model.step(x[:, 0] if model.batch_first else x[0], (h0, c0), out=(y, h0, c0))
        model.step(x[:, 0] if model.batch_first else x[0], None)
        for bad in (
            lambda: model.step(x[:, 0] if model.batch_first else x[0], (h0, c0), out=(y[:, :-1], h0, c0)),
            lambda: model(x, (h0, c0[..., :-1])),
            lambda: model(x, lengths=[0] * batch),
            lambda: model._packed.forward(x, model.batch_first, None, None, np.zeros(batch + 1, np.int64)),
        ):
            try:
                bad()
            except (ValueError, TypeError):
                pass
    for seed in range(5):  # packed weights of dropped models must be freed
        fastlstm.LSTM(16, 64, num_layers=2, bidirectional=True, seed=seed)(np.zeros((3, 2, 16), np.float32))
    try:
        fastlstm._core.PackedLstmF32(3, 2, 1, False, False, 0, [np.zeros((8, 3), np.float32)])
    except ValueError:
        pass
    # Threads: a step big enough to split across two, and workspaces of threads that exit.
    big = fastlstm.LSTM(64, 256, seed=3)
    for _ in range(5):
        big.step(np.ones((1, 64), np.float32), None, num_threads=2)
    threads = [threading.Thread(target=lambda: models[1](np.zeros((4, 3, 5), np.float32))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


for isa in fastlstm.cpu_info()["supported_isas"]:
    workload(isa)
print("workload done on", fastlstm.cpu_info()["supported_isas"])
EOF

# The in-place build when there is one; else (a clean checkout) the installed package.
if compgen -G "$REPO/fastlstm/_core*.so" >/dev/null; then
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
where=$(cd "$WORK" && "$PYTHON" -c 'import fastlstm._core as c; print(c.__file__)')
echo "leak_check: valgrind memcheck on $where" >&2
start=$SECONDS
PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=full \
  --show-leak-kinds=definite --errors-for-leak-kinds=definite --num-callers=50 \
  --xml=yes --xml-file="$WORK/memcheck.xml" "$PYTHON" "$WORK/workload.py"
echo "leak_check: valgrind run took $((SECONDS - start)) s" >&2

"$PYTHON" - "$WORK/memcheck.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

ours = lambda frame: "_core" in (frame.findtext("obj") or "") and "fastlstm" in (frame.findtext("obj") or "") \
    or "fastlstm::" in (frame.findtext("fn") or "")
# Frames that only pass the problem on: the C library, the C++ runtime, valgrind's own wrappers.
passive = ("vgpreload", "/libc.so", "/libc-", "/libstdc++", "/libm.so", "/ld-linux")

root = ET.parse(sys.argv[1]).getroot()
counted, leaks_elsewhere = [], 0
for error in root.iter("error"):
    kind = error.findtext("kind")
    frames = list(error.find("stack").iter("frame")) if error.find("stack") is not None else []
    if kind.startswith("Leak_"):
        if any(ours(f) for f in frames):
            counted.append(error)
        else:
            leaks_elsewhere += 1
        continue
    first_active = next((f for f in frames if not any(p in (f.findtext("obj") or "") for p in passive)), None)
    if first_active is not None and ours(first_active):
        counted.append(error)

def describe(error):
    what = error.find("xwhat")
    text = what.findtext("text") if what is not None else error.findtext("what")
    frames = [f"{(f.findtext('fn') or '??')[:160]} ({(f.findtext('obj') or '').rsplit('/', 1)[-1]})"
              for f in error.find("stack").iter("frame")][:12]
    return f"{error.findtext('kind')}: {text}\n      " + "\n      ".join(frames)

for error in counted:
    print("leak_check: " + describe(error))
print(f"leak_check: {len(counted)} memcheck record(s) in fastlstm's code "
      f"(definitely-lost leaks elsewhere, not ours: {leaks_elsewhere})")
sys.exit(1 if counted else 0)
EOF
