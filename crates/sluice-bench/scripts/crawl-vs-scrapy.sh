#!/usr/bin/env bash
# sluice's crawl against Scrapy's on the same generated site, with a slow page:
# wall, CPU, peak RSS and pages of each crawler process (the site runs in its
# own process). Installs Scrapy from PyPI into a venv; never run by CI.
#
#   crates/sluice-bench/scripts/crawl-vs-scrapy.sh [PAGES] [PAGE_MS] [SLOW_MS] [CONCURRENCY]
set -euo pipefail
PAGES=${1:-400} PAGE_MS=${2:-20} SLOW_MS=${3:-3000} CONC=${4:-8}
PORT=${PORT:-8093}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
WORK=${WORK:-/tmp/sluice-crawl-vs-scrapy}
mkdir -p "$WORK"
cd "$ROOT"
cargo build --release -q -p sluice-bench -p sluice-testkit
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release

if [ ! -x "$WORK/venv/bin/scrapy" ]; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install -q scrapy
fi

"$TARGET/sluice-testkit" site --port "$PORT" --pages "$PAGES" --latency-ms "$PAGE_MS" --slow-ms "$SLOW_MS" \
  >"$WORK/site.out" 2>"$WORK/site.err" &
SITE=$!
trap 'kill $SITE 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/robots.txt" >/dev/null && break; sleep 0.1; done
sed -n 1p "$WORK/site.err"

# The same settings on both sides: CONC requests at once (all to the one host), no
# delay, robots.txt obeyed, 2 retries, breadth-first, every page kept.
cat >"$WORK/spider.py" <<PY
import posixpath
from urllib.parse import urlsplit, urlunsplit

import scrapy
from scrapy.linkextractors import LinkExtractor


def without_dot_segments(url):
    # Python's urljoin keeps "/./" in a protocol-relative link; sluice resolves it (RFC 3986 5.2.4).
    parts = urlsplit(url)
    path = posixpath.normpath(parts.path) if parts.path else "/"
    if parts.path.endswith("/") and path != "/":
        path += "/"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


class Site(scrapy.Spider):
    name = "site"
    allowed_domains = ["127.0.0.1"]
    start_urls = ["http://127.0.0.1:$PORT/"]
    custom_settings = {
        "ROBOTSTXT_OBEY": True, "CONCURRENT_REQUESTS": $CONC, "CONCURRENT_REQUESTS_PER_DOMAIN": $CONC,
        "DOWNLOAD_DELAY": 0, "RETRY_TIMES": 2, "LOG_LEVEL": "WARNING", "TELNETCONSOLE_ENABLED": False,
        "DEPTH_PRIORITY": 1, "SCHEDULER_DISK_QUEUE": "scrapy.squeues.PickleFifoDiskQueue",
        "SCHEDULER_MEMORY_QUEUE": "scrapy.squeues.FifoMemoryQueue",
        "FEEDS": {"$WORK/scrapy.jsonl": {"format": "jsonlines", "overwrite": True}},
    }
    # allow_domains compares the host with its port, so the site is matched by its URL.
    links = LinkExtractor(allow=[r"^http://127\.0\.0\.1:$PORT/"])

    def parse(self, response):
        if not isinstance(response, scrapy.http.TextResponse):
            return
        yield {"url": response.url, "text": response.text}
        if isinstance(response, scrapy.http.HtmlResponse):
            for link in self.links.extract_links(response):
                if not link.nofollow:
                    yield response.follow(without_dot_segments(link.url), self.parse)
PY

echo "| crawler | concurrency | pages | wall s | CPU s | peak RSS MiB |"
echo "| --- | --- | --- | --- | --- | --- |"
"$TARGET/sluice-bench" crawl-site "http://127.0.0.1:$PORT/" "$CONC"
start=$(date +%s.%N)
/usr/bin/time -f "%U %S %M" -o "$WORK/scrapy.time" "$WORK/venv/bin/scrapy" runspider -s LOG_LEVEL=WARNING "$WORK/spider.py" \
  >"$WORK/scrapy.out" 2>"$WORK/scrapy.err"
end=$(date +%s.%N)
read -r user sys rss <"$WORK/scrapy.time"
pages=$(wc -l <"$WORK/scrapy.jsonl")
awk -v c="$CONC" -v p="$pages" -v s="$start" -v e="$end" -v u="$user" -v y="$sys" -v r="$rss" \
  'BEGIN { printf "| Scrapy | %s | %s pages | %.2f | %.2f | %.0f |\n", c, p, e - s, u + y, r / 1024 }'
