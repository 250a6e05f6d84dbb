//! The local MiniLM embedder on this CPU (issue 18, item 5): 2,000 short
//! texts (4 to 60 words, ticket-like), embedded at batch 32 with the model of
//! `SLUICE_MINILM_DIR`. Needs the bench's `minilm` feature:
//!
//! ```sh
//! export SLUICE_MINILM_DIR="$(.ci/minilm.sh)"
//! cargo run --release -p sluice-bench --features minilm -- minilm [TEXTS] [BATCH] [OUT_DIR]
//! ```
//!
//! Two rows, each one pass over the texts after one warm-up call (the model
//! is loaded before the clock starts):
//! - `calls of BATCH`: the texts in their order, BATCH per call, as the
//!   embed stage calls the embedder (`batch_size`);
//! - `one call`: all the texts in one call, the embedder cutting them into
//!   batches of BATCH itself; what sentence-transformers' `encode(texts,
//!   batch_size=BATCH)` is asked to do.
//!
//! A last line times the dense layers' matrix products alone (gemm, the
//! kernels the embedder uses) at the run's shapes: as many passes of the mean
//! pass's token count through six layers of all-MiniLM-L6-v2's sizes. No
//! encoder built on those kernels can take less.
//!
//! With OUT_DIR, the texts go to `OUT_DIR/texts.txt` (one a line), the
//! seconds of `one call` then its vectors (one a line) to
//! `OUT_DIR/sluice.txt`, and the products' shape (rows a pass, passes) to
//! `OUT_DIR/shape.txt`: `scripts/minilm-vs-sentence-transformers.sh` runs
//! sentence-transformers (and torch's products at that shape) on the same
//! texts and compares.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use sluice_connectors::embedder::MiniLmEmbedder;

/// Words of support tickets and docs, common enough to be one WordPiece each mostly.
const WORDS: [&str; 48] = [
    "the",
    "invoice",
    "refund",
    "login",
    "password",
    "crash",
    "export",
    "billing",
    "is",
    "slow",
    "report",
    "api",
    "customer",
    "cannot",
    "open",
    "dashboard",
    "after",
    "update",
    "please",
    "help",
    "with",
    "my",
    "account",
    "payment",
    "failed",
    "twice",
    "and",
    "error",
    "message",
    "shows",
    "when",
    "I",
    "try",
    "to",
    "download",
    "the",
    "file",
    "from",
    "settings",
    "page",
    "order",
    "was",
    "charged",
    "but",
    "never",
    "arrived",
    "today",
    "thanks",
];

/// `count` texts of 4 to 60 words, the same on every run (a fixed linear congruential sequence).
pub(crate) fn texts(count: usize) -> Vec<String> {
    let mut state: u64 = 0x5eed;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    (0..count)
        .map(|_| {
            // Mostly short, some long: lengths differ as a real batch's do.
            let words = if next() % 4 == 0 { 20 + next() % 41 } else { 4 + next() % 16 };
            let mut text = String::new();
            for w in 0..words {
                if w > 0 {
                    text.push(' ');
                }
                text.push_str(WORDS[next() % WORDS.len()]);
            }
            text.push('.');
            text
        })
        .collect()
}

pub(crate) fn minilm(count: usize, batch: usize, out_dir: Option<PathBuf>) {
    let dir = std::env::var_os("SLUICE_MINILM_DIR")
        .map(PathBuf::from)
        .expect("SLUICE_MINILM_DIR names the model directory: export SLUICE_MINILM_DIR=\"$(.ci/minilm.sh)\"");
    let model = MiniLmEmbedder::load(&dir).expect("model loads");
    let texts = texts(count);
    let tokens: usize = texts.iter().map(|t| model.count_tokens(t).expect("tokens") + 2).sum();
    println!(
        "{count} texts, {tokens} tokens with [CLS]/[SEP] ({:.1} a text), batch {batch}, {} threads",
        tokens as f64 / count as f64,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    model.embed_blocking(&texts[..batch.min(count)]).expect("warm-up");

    println!("| sluice MiniLM | texts | wall s | texts/s |");
    println!("| --- | --- | --- | --- |");
    let started = Instant::now();
    for call in texts.chunks(batch) {
        model.embed_blocking(call).expect("embed");
    }
    let calls = started.elapsed().as_secs_f64();
    println!("| calls of {batch} | {count} | {calls:.2} | {:.0} |", count as f64 / calls);

    let started = Instant::now();
    let vectors = model.embed_blocking_in(&texts, batch).expect("embed");
    let one = started.elapsed().as_secs_f64();
    println!("| one call, batches of {batch} | {count} | {one:.2} | {:.0} |", count as f64 / one);

    let passes = count.div_ceil(batch.max(1));
    let rows = tokens.div_ceil(passes.max(1));
    let (floor, gflops) = dense_products(rows, passes);
    println!("dense-layer products alone (gemm, {passes} passes of {rows} tokens): {floor:.2} s, {gflops:.0} GFLOP/s");

    if let Some(out) = out_dir {
        std::fs::create_dir_all(&out).expect("OUT_DIR");
        std::fs::write(out.join("texts.txt"), texts.join("\n") + "\n").expect("texts.txt");
        let mut lines = format!("{one}\n");
        for vector in &vectors {
            for (i, x) in vector.iter().enumerate() {
                let _ = write!(lines, "{}{x}", if i > 0 { " " } else { "" });
            }
            lines.push('\n');
        }
        std::fs::write(out.join("sluice.txt"), lines).expect("sluice.txt");
        std::fs::write(out.join("shape.txt"), format!("{rows} {passes}\n")).expect("shape.txt");
    }
}

/// all-MiniLM-L6-v2's sizes.
const HIDDEN: usize = 384;
const INTERMEDIATE: usize = 1536;
const LAYERS: usize = 6;

/// One product's inputs, outputs, and its matrices: `rows × inputs`, the
/// weights `outputs × inputs`, the result `rows × outputs`.
type Product = (usize, usize, Vec<f32>, Vec<f32>, Vec<f32>);

/// Seconds and GFLOP/s of the dense layers' products of `passes` passes of
/// `rows` tokens: per layer query-key-value, attention output, intermediate
/// and output, each `rows × inputs` times `inputs × outputs` by gemm on every core.
fn dense_products(rows: usize, passes: usize) -> (f64, f64) {
    let shapes = [(HIDDEN, 3 * HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, INTERMEDIATE), (INTERMEDIATE, HIDDEN)];
    let mut buffers: Vec<Product> =
        shapes.iter().map(|&(k, n)| (k, n, vec![0.5; rows * k], vec![0.25; n * k], vec![0.0; rows * n])).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut product = |(k, n, a, w, out): &mut Product| {
        // SAFETY: out is rows × n, a rows × k, w n × k (read as its transpose), as the strides say.
        unsafe {
            gemm::gemm(
                rows,
                *n,
                *k,
                out.as_mut_ptr(),
                1,
                *n as isize,
                false,
                a.as_ptr(),
                1,
                *k as isize,
                w.as_ptr(),
                *k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(threads),
            )
        }
    };
    buffers.iter_mut().for_each(&mut product); // warm-up
    let started = Instant::now();
    for _ in 0..passes * LAYERS {
        buffers.iter_mut().for_each(&mut product);
    }
    let seconds = started.elapsed().as_secs_f64();
    let flops: usize = shapes.iter().map(|(k, n)| 2 * rows * k * n).sum::<usize>() * passes * LAYERS;
    (seconds, flops as f64 / seconds / 1e9)
}
