#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver (chromedriver) from the Debian
# packages `chromium` and `chromium-driver` when missing, then prints the two
# paths as shell assignments for the dashboard's browser tests:
#
#   eval "$(.ci/chromium.sh)"   # exports SLUICE_CHROMEDRIVER and SLUICE_CHROMIUM
#
# Idempotent: installed binaries are reused and apt is not touched.
set -euo pipefail

find_bin() {
    for name in "$@"; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if ! find_bin chromedriver >/dev/null || ! find_bin chromium chromium-browser >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "chromium.sh: installing chromium and chromium-driver (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
fi
driver="$(find_bin chromedriver)" || { echo "chromium.sh: no chromedriver after the install" >&2; exit 1; }
browser="$(find_bin chromium chromium-browser)" || { echo "chromium.sh: no chromium after the install" >&2; exit 1; }
"$browser" --version >&2
echo "export SLUICE_CHROMEDRIVER='$driver' SLUICE_CHROMIUM='$browser'"
