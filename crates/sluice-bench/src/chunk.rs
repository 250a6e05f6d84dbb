//! Chunking pathological and ordinary texts: one text per process, so the
//! peak RSS printed is that text's.
//!
//! ```sh
//! cargo run --release -p sluice-bench -- chunk MB unbroken|natural [chars|before]
//! ```
//!
//! `chars` is the chunk stage (default size, 1000 chars); `before` is
//! text-splitter alone over the whole text, as the stage was before it cut
//! texts into windows.

use std::time::Instant;

use sluice_connectors::stage::chunk::{ChunkConfig, ChunkStage, DEFAULT_CHARS};
use text_splitter::TextSplitter;

/// `mb` MiB of text: `unbroken` is one run of letters and digits with no
/// space or punctuation (a base64 attachment, minified code); `natural` is
/// sentences in paragraphs.
fn text(mb: usize, kind: &str) -> String {
    let len = mb * 1024 * 1024;
    let mut text = String::with_capacity(len + 128);
    match kind {
        "unbroken" => {
            const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            let mut state = 0x2545_f491_4f6c_dd1du64;
            while text.len() < len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push(ALPHABET[(state % ALPHABET.len() as u64) as usize] as char);
            }
        }
        _ => {
            let sentences = [
                "The quick brown fox jumps over the lazy dog. ",
                "My invoice was charged twice this month, please refund the second payment. ",
                "Streaming pipelines keep a checkpoint so that a restart resumes where it stopped! ",
                "Is the export feature available on the starter plan? ",
            ];
            let mut i = 0usize;
            while text.len() < len {
                text.push_str(sentences[i % sentences.len()]);
                i += 1;
                if i.is_multiple_of(7) {
                    text.push_str("\n\n");
                }
            }
        }
    }
    text
}

pub(crate) fn chunk(mb: usize, kind: &str, how: &str) {
    let text = text(mb, kind);
    let started = Instant::now();
    let chunks = if how == "before" {
        TextSplitter::new(DEFAULT_CHARS)
            .chunk_indices(&text)
            .map(|(_, piece)| piece.to_string())
            .collect::<Vec<_>>()
            .len()
    } else {
        ChunkStage::new(ChunkConfig::default()).expect("chunk config").chunk_text(&text).len()
    };
    let elapsed = started.elapsed();
    println!(
        "| {mb} MB {kind} ({how}) | {chunks} chunks | {:.2} s | {:.0} MiB |",
        elapsed.as_secs_f64(),
        super::peak_rss_mib()
    );
}
