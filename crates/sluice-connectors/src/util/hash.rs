//! Stable digests of texts: a cheap identity (FNV-1a) and SHA-256 prefixes.
//! Not security measures; they name texts in memos, file names and prompts.

/// The 64-bit FNV-1a hash of `bytes`, as 16 hex digits: a cheap, stable
/// identity for texts (not a security measure).
pub(crate) fn fnv_hex(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// SHA-256 of `text`, hex, cut to `len` digits.
#[cfg_attr(not(feature = "openai"), allow(dead_code))]
pub(crate) fn sha256_hex(text: &str, len: usize) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..len.min(hex.len())].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_stable() {
        assert_eq!(fnv_hex(b""), "cbf29ce484222325");
        assert_eq!(sha256_hex("abc", 8), "ba7816bf");
    }
}
