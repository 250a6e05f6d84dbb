"""The hand-written peer of `sluice-bench unchanged`: the same documents
(a JSON-lines file of {"id", "text"}), chunked by 1000 characters with 100
overlap, every chunk embedded by an OpenAI-compatible embeddings endpoint
(32 inputs a call, CONCURRENCY calls at once), into SQLite, with asyncio and
aiohttp. A document whose text hashes as the stored one is skipped before it
is chunked: a re-run over unchanged data reads the file, hashes, looks up and
writes nothing.

    python3 unchanged_peer.py DOCS.jsonl DB BASE_URL [CONCURRENCY]

Prints one JSON line: documents, skipped, embedded, calls, wall_s.
"""

import array
import asyncio
import hashlib
import json
import sqlite3
import sys
import time

import aiohttp

SIZE, OVERLAP, PER_CALL, DIMENSIONS = 1000, 100, 32, 64


def chunks(text):
    step = SIZE - OVERLAP
    out, start = [], 0
    while True:
        out.append(text[start:start + SIZE])
        if start + SIZE >= len(text):
            return out
        start += step


async def embed_all(session, url, key, texts, concurrency):
    gate = asyncio.Semaphore(concurrency)
    calls = 0

    async def call(inputs):
        nonlocal calls
        async with gate:
            for attempt in range(5):
                async with session.post(
                    url + "/embeddings",
                    headers={"Authorization": "Bearer " + key},
                    json={"model": "text-embedding-3-small", "input": inputs, "dimensions": DIMENSIONS},
                ) as response:
                    if response.status == 200:
                        calls += 1
                        body = await response.json()
                        return [d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])]
                    if response.status not in (429, 500, 502, 503):
                        raise RuntimeError(f"embeddings answered {response.status}: {await response.text()}")
                await asyncio.sleep(0.2 * (attempt + 1))
            raise RuntimeError("embeddings kept failing")

    groups = [texts[i:i + PER_CALL] for i in range(0, len(texts), PER_CALL)]
    vectors = await asyncio.gather(*(call(g) for g in groups))
    return [v for group in vectors for v in group], calls


async def main(path, db_path, url, key, concurrency):
    started = time.perf_counter()
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE IF NOT EXISTS documents (id TEXT PRIMARY KEY, text TEXT, content_hash TEXT)")
    db.execute("CREATE TABLE IF NOT EXISTS chunks (doc_id TEXT, idx INTEGER, text TEXT, embedding BLOB, "
               "PRIMARY KEY (doc_id, idx))")
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            docs.append((record["id"], record["text"], hashlib.sha256(record["text"].encode()).hexdigest()))
    # One lookup for the whole file: the stored hash of every id.
    stored = dict(db.execute("SELECT id, content_hash FROM documents"))
    todo = [d for d in docs if stored.get(d[0]) != d[2]]
    texts, owners = [], []
    for doc_id, text, _ in todo:
        for idx, piece in enumerate(chunks(text)):
            texts.append(piece)
            owners.append((doc_id, idx))
    calls = 0
    if texts:
        async with aiohttp.ClientSession() as session:
            vectors, calls = await embed_all(session, url, key, texts, concurrency)
        with db:
            db.executemany("INSERT OR REPLACE INTO documents VALUES (?, ?, ?)", todo)
            db.executemany("DELETE FROM chunks WHERE doc_id = ?", [(d[0],) for d in todo])
            db.executemany(
                "INSERT INTO chunks VALUES (?, ?, ?, ?)",
                [(o[0], o[1], t, array.array("f", v).tobytes()) for o, t, v in zip(owners, texts, vectors)],
            )
    db.close()
    print(json.dumps({
        "documents": len(docs), "skipped": len(docs) - len(todo), "embedded": len(texts), "calls": calls,
        "wall_s": round(time.perf_counter() - started, 3),
    }))


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 3:
        sys.exit(__doc__)
    asyncio.run(main(args[0], args[1], args[2], "sk-test", int(args[3]) if len(args) > 3 else 16))
