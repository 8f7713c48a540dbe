//! API keys, held only as SHA-256 hashes and compared in constant time.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 of a key. Keys are random and long, so a plain hash (not a slow KDF) suffices:
/// there is nothing to brute-force.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyHash([u8; 32]);

impl ApiKeyHash {
    pub fn of(key: &str) -> Self {
        ApiKeyHash(Sha256::digest(key.as_bytes()).into())
    }

    /// Parses `sha256:<64 hex digits>`.
    pub fn parse(text: &str) -> Option<Self> {
        let hex_part = text.trim().strip_prefix("sha256:")?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).ok()?;
        Some(ApiKeyHash(out))
    }
}

impl std::fmt::Debug for ApiKeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeyHash({self})")
    }
}

impl std::fmt::Display for ApiKeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

/// The set of accepted keys. Empty means the gateway runs without authentication.
#[derive(Default)]
pub struct ApiKeys {
    hashes: Vec<ApiKeyHash>,
}

impl ApiKeys {
    pub fn new(hashes: Vec<ApiKeyHash>, clear: &[SecretString]) -> Self {
        let mut hashes = hashes;
        hashes.extend(clear.iter().map(|k| ApiKeyHash::of(k.expose_secret())));
        ApiKeys { hashes }
    }

    /// These keys and `other`'s.
    pub fn with(mut self, other: &ApiKeys) -> Self {
        self.hashes.extend(other.hashes.iter().cloned());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `presented` is one of the keys. Every stored hash is compared, in constant
    /// time, so timing reveals neither which key matched nor how much of one did.
    pub fn accepts(&self, presented: &str) -> bool {
        let candidate = ApiKeyHash::of(presented);
        self.hashes
            .iter()
            .fold(subtle::Choice::from(0), |found, h| {
                found | h.0.ct_eq(&candidate.0)
            })
            .into()
    }
}

/// A fresh random key: `sk-pasarela-` and 64 hex digits (256 bits).
pub fn generate_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("sk-pasarela-{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_round_trips_through_its_text_form() {
        let h = ApiKeyHash::of("sk-test");
        assert_eq!(ApiKeyHash::parse(&h.to_string()), Some(h));
    }

    #[test]
    fn known_sha256_vector() {
        // SHA-256("abc") from FIPS 180-2, appendix B.1.
        assert_eq!(
            ApiKeyHash::of("abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn accepts_only_configured_keys() {
        let keys = ApiKeys::new(
            vec![ApiKeyHash::of("one")],
            &[SecretString::from("two".to_owned())],
        );
        assert!(keys.accepts("one"));
        assert!(keys.accepts("two"));
        assert!(!keys.accepts("three"));
        assert!(!keys.accepts(""));
    }

    #[test]
    fn generated_keys_differ_and_are_long() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert!(a.len() > 40);
    }
}
