#!/usr/bin/env bash
# The unchanged re-run (issue 18, item 1), sluice against a hand-written
# asyncio + aiohttp script, on the same documents and the same fake
# embeddings API (the test kit's, in its own process): each first does the
# full run (chunk 1000/100 chars + embed into SQLite), then the re-run over
# unchanged data, which is what is compared. Installs aiohttp from PyPI into
# a venv under /tmp; never run by CI.
#
#   crates/sluice-bench/scripts/unchanged-vs-python.sh [DOCUMENTS] [CALL_MS] [CONCURRENCY]
set -euo pipefail
DOCS=${1:-2000} CALL_MS=${2:-20} CONC=${3:-16}
PORT=${PORT:-8094}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
WORK=${WORK:-/tmp/sluice-unchanged-vs-python}
rm -rf "$WORK/run" && mkdir -p "$WORK/run"
cd "$ROOT"
cargo build --release -q -p sluice-bench -p sluice-testkit
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release

if [ ! -x "$WORK/venv/bin/python" ] || ! "$WORK/venv/bin/python" -c 'import aiohttp' 2>/dev/null; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install -q aiohttp
fi

"$TARGET/sluice-testkit" openai --port "$PORT" --rpm 100000000 --fault-endpoints embeddings \
  --latency-ms "$CALL_MS" >"$WORK/openai.out" 2>"$WORK/openai.err" &
FAKE=$!
trap 'kill $FAKE 2>/dev/null || true' EXIT
URL="http://127.0.0.1:$PORT/v1"
for _ in $(seq 100); do curl -s -o /dev/null "$URL/models" && break; sleep 0.1; done

# sluice: writes the corpus, runs, re-runs; prints its rows and the re-run's wall time last.
"$TARGET/sluice-bench" unchanged "$DOCS" "$WORK/run" "$URL" "$CONC" | tee "$WORK/sluice.out"
SLUICE_RERUN=$(tail -1 "$WORK/sluice.out" | sed -n 's/^rerun_wall_s=//p')

PEER="$WORK/venv/bin/python crates/sluice-bench/scripts/unchanged_peer.py $WORK/run/docs.jsonl $WORK/run/peer.db $URL $CONC"
FIRST=$($PEER)
AGAIN=$($PEER)
echo "python first run: $FIRST"
echo "python re-run:    $AGAIN"
PY_RERUN=$(echo "$AGAIN" | python3 -c 'import json,sys; print(json.load(sys.stdin)["wall_s"])')
python3 - "$SLUICE_RERUN" "$PY_RERUN" "$DOCS" <<'PY'
import sys
sluice, peer, docs = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
print(f"| re-run of {docs} unchanged documents | sluice {sluice:.3f} s | asyncio script {peer:.3f} s | sluice / script {sluice / peer:.2f} |")
PY
