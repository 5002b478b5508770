//! Signed checkpoints of the audit chain.
//!
//! Every so often the gateway signs `(gateway, seq, hash)` of its chain's head with its Ed25519
//! key. A checkpoint makes two things possible that the hash chain alone does not:
//! - routine verification in O(new events): `audit verify` starts from the newest checkpoint it
//!   has already verified instead of the anchor (`--full` still walks everything);
//! - offline verification: an exported trail carries its checkpoints, and anyone holding the
//!   public key can tell it is the gateway's trail — rebuilding a consistent chain needs no
//!   secret, forging a signature does.
//!
//! The signed text is the canonical JSON (see [`crate::chain::canonical_json`]) of
//! `{"type", "gateway", "seq", "hash", "ts", "key_id"}`; docs/architecture/audit-chain.md spells
//! it out for auditors.

use std::collections::BTreeMap;

use ed25519_dalek::pkcs8::DecodePublicKey as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::chain::{canonical_json, timestamp};

/// The `type` inside every signed checkpoint text: a signature over anything else (a token, a
/// future format) can never pass for a checkpoint.
pub const CHECKPOINT_TYPE: &str = "meshguard.audit.checkpoint.v1";

/// A signature by the gateway over one point of its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    /// Instance id of the gateway whose chain this is.
    pub gateway: String,
    /// The `seq` signed.
    pub seq: u64,
    /// The `hash` of the event at `seq`.
    pub hash: String,
    /// When it was signed.
    #[serde(with = "timestamp")]
    pub ts: OffsetDateTime,
    /// Which key signed it ([`key_id`]), so a verifier holding several keys (a rotated one among
    /// them) picks the right one and says which is missing.
    pub key_id: String,
    /// Hex Ed25519 signature over [`AuditCheckpoint::signed_text`].
    pub signature: String,
}

impl AuditCheckpoint {
    /// Signs `(gateway, seq, hash)` at `ts` with `key`.
    pub fn sign(key: &SigningKey, gateway: &str, seq: u64, hash: &str, ts: OffsetDateTime) -> Self {
        let mut checkpoint = Self {
            gateway: gateway.to_owned(),
            seq,
            hash: hash.to_owned(),
            ts: timestamp::truncate(ts),
            key_id: key_id(&key.verifying_key()),
            signature: String::new(),
        };
        checkpoint.signature =
            hex::encode(key.sign(checkpoint.signed_text().as_bytes()).to_bytes());
        checkpoint
    }

    /// The exact text the signature covers.
    pub fn signed_text(&self) -> String {
        canonical_json(&json!({
            "type": CHECKPOINT_TYPE,
            "gateway": self.gateway,
            "seq": self.seq,
            "hash": self.hash,
            "ts": timestamp::format(self.ts),
            "key_id": self.key_id,
        }))
    }

    /// `Ok` when one of `keys` signed this checkpoint; else why not, in words.
    pub fn check_signature(&self, keys: &CheckpointKeys) -> Result<(), String> {
        let Some(key) = keys.0.get(&self.key_id) else {
            return Err(if keys.0.is_empty() {
                format!(
                    "the checkpoint at seq {} cannot be checked: no public key was given",
                    self.seq
                )
            } else {
                format!(
                    "the checkpoint at seq {} is signed by key {}, which is not among the keys \
                     given ({})",
                    self.seq,
                    self.key_id,
                    keys.ids().join(", ")
                )
            });
        };
        let bytes = hex::decode(&self.signature)
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .ok_or_else(|| {
                format!(
                    "the checkpoint at seq {} has a malformed signature (64 bytes in hex expected)",
                    self.seq
                )
            })?;
        key.verify(
            self.signed_text().as_bytes(),
            &Signature::from_bytes(&bytes),
        )
        .map_err(|_| {
            format!(
                "the signature of the checkpoint at seq {} does not verify with key {}: the \
                 checkpoint was forged or altered",
                self.seq, self.key_id
            )
        })
    }
}

/// A public key's short name: the first 16 hex digits of the SHA-256 of its 32 bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(digest).chars().take(16).collect()
}

/// The public keys a verification accepts, by [`key_id`].
#[derive(Debug, Clone, Default)]
pub struct CheckpointKeys(BTreeMap<String, VerifyingKey>);

impl CheckpointKeys {
    /// Accepts checkpoints signed by `key` too.
    pub fn add(&mut self, key: VerifyingKey) {
        self.0.insert(key_id(&key), key);
    }

    /// Accepts checkpoints signed by the public key in `pem` (SPKI, `-----BEGIN PUBLIC KEY-----`,
    /// as `signing-key.pub.pem` holds it).
    pub fn add_pem(&mut self, pem: &str) -> Result<String, String> {
        let key = VerifyingKey::from_public_key_pem(pem)
            .map_err(|err| format!("not an Ed25519 public key in PEM form: {err}"))?;
        let id = key_id(&key);
        self.add(key);
        Ok(id)
    }

    /// The ids of the keys held, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    /// True when no key is held: no signature can be checked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_checkpoint_verifies_with_its_key_only() {
        let signed = AuditCheckpoint::sign(
            &key(1),
            "gw-1",
            42,
            &"ab".repeat(32),
            datetime!(2026-03-01 12:00:00.1234567 UTC),
        );
        assert_eq!(signed.ts, datetime!(2026-03-01 12:00:00.123456 UTC));
        let mut keys = CheckpointKeys::default();
        assert!(
            signed
                .check_signature(&keys)
                .unwrap_err()
                .contains("no public key")
        );
        keys.add(key(2).verifying_key());
        let err = signed.check_signature(&keys).unwrap_err();
        assert!(err.contains("not among the keys"), "{err}");
        keys.add(key(1).verifying_key());
        signed.check_signature(&keys).unwrap();

        for altered in [
            AuditCheckpoint {
                seq: 43,
                ..signed.clone()
            },
            AuditCheckpoint {
                hash: "cd".repeat(32),
                ..signed.clone()
            },
            AuditCheckpoint {
                gateway: "gw-2".into(),
                ..signed.clone()
            },
            AuditCheckpoint {
                ts: datetime!(2026-03-01 12:00:01 UTC),
                ..signed.clone()
            },
        ] {
            let err = altered.check_signature(&keys).unwrap_err();
            assert!(err.contains("forged or altered"), "{err}");
        }
        let garbled = AuditCheckpoint {
            signature: "zz".into(),
            ..signed
        };
        assert!(
            garbled
                .check_signature(&keys)
                .unwrap_err()
                .contains("malformed")
        );
    }

    #[test]
    fn the_signed_text_is_canonical_json_with_a_type() {
        let signed =
            AuditCheckpoint::sign(&key(1), "gw-1", 7, "00", datetime!(2026-03-01 12:00:00 UTC));
        assert_eq!(
            signed.signed_text(),
            format!(
                r#"{{"gateway":"gw-1","hash":"00","key_id":"{}","seq":7,"ts":"2026-03-01T12:00:00.000000Z","type":"meshguard.audit.checkpoint.v1"}}"#,
                signed.key_id
            )
        );
        let json = serde_json::to_string(&signed).unwrap();
        let back: AuditCheckpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back, signed);
    }

    #[test]
    fn public_keys_are_read_from_pem() {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
        let pem = key(3)
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let mut keys = CheckpointKeys::default();
        let id = keys.add_pem(&pem).unwrap();
        assert_eq!(id, key_id(&key(3).verifying_key()));
        assert!(keys.add_pem("not a key").unwrap_err().contains("PEM"));
    }
}
