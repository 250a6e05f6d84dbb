#!/usr/bin/env bash
# Runs the shell commands of README.md as written, in order, in one shell, in a
# scratch directory holding a copy of examples/ (what a fresh clone has), with
# the release binary on PATH. Offline: every README command is. Lines that
# install or test the checkout itself (`cargo install`, `cargo test`) are not
# run; `cargo run --release -p sluice --` runs the binary built here.
#
#   .ci/readme-check.sh                  # builds target/release/sluice first
#   SLUICE_BIN=path/to/sluice .ci/readme-check.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${SLUICE_BIN:-}" ]; then
  cargo build --release -p sluice --manifest-path "$root/Cargo.toml"
  SLUICE_BIN="${CARGO_TARGET_DIR:-$root/target}/release/sluice"
fi
bin="$(mktemp -d)"
work="$(mktemp -d)"
trap 'rm -rf "$bin" "$work"' EXIT
ln -s "$(cd "$(dirname "$SLUICE_BIN")" && pwd)/$(basename "$SLUICE_BIN")" "$bin/sluice"
cp -r "$root/examples" "$work/examples"

script="$work/readme-commands.sh"
python3 - "$root/README.md" > "$script" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
print("set -euo pipefail")
for block in re.findall(r"```sh\n(.*?)```", text, re.S):
    for line in block.splitlines():
        command = line.strip()
        if not command or command.startswith("#"):
            continue
        if re.match(r"cargo (install|test)\b", command):
            continue
        command = re.sub(r"^cargo run --release -p sluice -- ", "sluice ", command)
        print(f"echo {repr('$ ' + command)}")
        print(command)
PY
echo "== README.md: $(grep -vc '^echo\|^set' "$script") commands"
cd "$work"
env -u DATABASE_URL -u SLUICE_LOG -u RUST_LOG -u PIPELINE_MODE -u PIPELINE_STREAMING_BATCH \
  -u PIPELINE_STREAMING_BATCH_SIZE -u EMBEDDING_BATCH_SIZE PATH="$bin:$PATH" bash "$script" < /dev/null
echo "== README.md: every command ran"
