//! Search cursors. Real Intercom cursors are base64 of a JSON array holding
//! the sort key (ms) and id of the last item of the page, and the page
//! number: `WzE3MjY3NTIxNDUwMDAsNSwyXQ==` is `[1726752145000,5,2]`. The
//! fake's look the same and append the issue time (ms), a nonce and the sort
//! they belong to: `[key_ms, id, page, issued_ms, nonce, sort]`. Clients must
//! treat them as opaque.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// Sort key of the last item of the page, in ms.
    pub key_ms: i64,
    /// Id of the last item of the page.
    pub id: u64,
    /// The page this cursor ends.
    pub page: u64,
    pub issued_ms: i64,
    pub nonce: u64,
    /// [`super::search::Sort::tag`] of the search that issued it.
    pub sort: u64,
}

impl Cursor {
    pub fn encode(&self) -> String {
        STANDARD.encode(format!(
            "[{},{},{},{},{},{}]",
            self.key_ms, self.id, self.page, self.issued_ms, self.nonce, self.sort
        ))
    }

    pub fn decode(s: &str) -> Result<Cursor, String> {
        let bytes = STANDARD.decode(s.trim()).map_err(|_| "not a valid cursor".to_string())?;
        let nums: Vec<i64> = serde_json::from_slice(&bytes).map_err(|_| "not a valid cursor".to_string())?;
        let [key_ms, id, page, issued_ms, nonce, sort] = nums[..] else {
            return Err("not a valid cursor".into());
        };
        if id < 0 || page < 1 || nonce < 0 || sort < 0 {
            return Err("not a valid cursor".into());
        }
        Ok(Cursor { key_ms, id: id as u64, page: page as u64, issued_ms, nonce: nonce as u64, sort: sort as u64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let c = Cursor {
            key_ms: 1_726_752_145_000,
            id: 1_000_000_123,
            page: 3,
            issued_ms: 1_767_000_000_000,
            nonce: 42,
            sort: 1,
        };
        let s = c.encode();
        assert!(s.starts_with("Wz"), "{s}");
        assert_eq!(Cursor::decode(&s), Ok(c));
        assert!(Cursor::decode("garbage!").is_err());
        assert!(Cursor::decode(&STANDARD.encode("[1,2,3]")).is_err());
        assert!(Cursor::decode(&STANDARD.encode("{\"a\":1}")).is_err());
        assert!(Cursor::decode("").is_err());
    }
}
