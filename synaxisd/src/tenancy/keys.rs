//! Virtual keys: `sk-syn-<region prefix>-<secret>`. The secret is shown once; the store keeps
//! only HMAC-SHA-256 of the whole key under the server's pepper.

use hmac::{Hmac, Mac};
use rand::Rng;
use rand::distr::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

const KEY_PREFIX: &str = "sk-syn-";

/// Length of the random part: 40 base62 characters, about 238 bits of entropy.
const SECRET_LEN: usize = 40;

/// Computes the stored hash of a presented key.
#[derive(Clone)]
pub struct KeyHasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher([redacted])")
    }
}

impl KeyHasher {
    pub fn new(pepper: &SecretString) -> Self {
        let mac = Hmac::<Sha256>::new_from_slice(pepper.expose_secret().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        Self { mac }
    }

    /// Returns a fingerprint of the pepper: the HMAC of a fixed text. Equal fingerprints mean
    /// equal peppers, and a fingerprint does not reveal its pepper.
    pub fn pepper_fingerprint(&self) -> String {
        self.hash("synaxis key pepper fingerprint")
    }

    /// Returns the lowercase hex HMAC of the full key text.
    pub fn hash(&self, key: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        // Written through a table, because `hex::encode` collects the text from an iterator of
        // `char`s, which took about 2,000 instructions per key under callgrind.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(64);
        for byte in mac.finalize().into_bytes() {
            text.push(char::from(DIGITS[usize::from(byte >> 4)]));
            text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        text
    }
}

/// Generates a new key for the region whose keys start with `sk-syn-<region_prefix>-`.
pub fn generate(region_prefix: &str) -> SecretString {
    let secret: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(SECRET_LEN)
        .map(char::from)
        .collect();
    SecretString::from(format!("{KEY_PREFIX}{region_prefix}-{secret}"))
}

/// Returns the region prefix of a key in the `sk-syn-<prefix>-<secret>` format, or `None` when
/// the text is not such a key.
pub fn region_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (prefix, secret) = rest.split_once('-')?;
    let well_formed = !prefix.is_empty()
        && secret.len() == SECRET_LEN
        && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    well_formed.then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_has_region_prefix() {
        let key = generate("eu");
        assert_eq!(region_prefix(key.expose_secret()), Some("eu"));
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        for key in [
            "",
            "sk-syn-",
            "sk-syn-eu",
            "sk-syn-eu-short",
            "sk-other-eu-0123456789012345678901234567890123456789",
            "sk-syn-eu-012345678901234567890123456789012345678!",
        ] {
            assert_eq!(region_prefix(key), None, "{key:?}");
        }
    }

    #[test]
    fn hash_depends_on_pepper() {
        let key = "sk-syn-us-0123456789012345678901234567890123456789";
        let a = KeyHasher::new(&SecretString::from("a".repeat(32)));
        let b = KeyHasher::new(&SecretString::from("b".repeat(32)));
        assert_eq!(a.hash(key), a.hash(key));
        assert_ne!(a.hash(key), b.hash(key));
        assert_eq!(a.hash(key).len(), 64);
    }
}
