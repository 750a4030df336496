//! ed25519 signatures of desired documents.
//!
//! The LO signs [`DesiredState::signing_payload`] (the canonical JSON of the document
//! without `signature`); an agent configured with the public key applies nothing unsigned
//! or badly signed, so the broker is not trusted with what runs.

use crate::wire::{DesiredState, Signature};
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The document carries no signature.
    #[error("document is not signed")]
    Missing,
    /// The algorithm is not ed25519.
    #[error("unsupported signature algorithm {0:?}")]
    Algorithm(String),
    /// The value is not base64 of 64 bytes.
    #[error("malformed signature value")]
    Malformed,
    /// The signature does not verify with the configured key.
    #[error("signature does not verify")]
    Invalid,
    /// A key file or value is not a 32-byte key in base64.
    #[error("malformed key: {0}")]
    Key(String),
}

/// Signs `doc` in place.
pub fn sign(doc: &mut DesiredState, key: &SigningKey, key_id: &str) {
    doc.signature = None;
    let sig = key.sign(doc.signing_payload().as_bytes());
    doc.signature = Some(Signature {
        alg: "ed25519".into(),
        key_id: key_id.to_owned(),
        value: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
    });
}

/// Verifies `doc`'s signature with `key`.
pub fn verify(doc: &DesiredState, key: &VerifyingKey) -> Result<(), SignatureError> {
    let sig = doc.signature.as_ref().ok_or(SignatureError::Missing)?;
    if sig.alg != "ed25519" {
        return Err(SignatureError::Algorithm(sig.alg.clone()));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&sig.value)
        .map_err(|_| SignatureError::Malformed)?;
    let bytes: [u8; 64] = bytes.try_into().map_err(|_| SignatureError::Malformed)?;
    let signature = ed25519_dalek::Signature::from_bytes(&bytes);
    key.verify(doc.signing_payload().as_bytes(), &signature)
        .map_err(|_| SignatureError::Invalid)
}

fn key_bytes(text: &str) -> Result<[u8; 32], SignatureError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| SignatureError::Key(e.to_string()))?;
    bytes
        .try_into()
        .map_err(|_| SignatureError::Key("expected 32 bytes".into()))
}

/// A signing key from base64 of its 32-byte seed.
pub fn signing_key_from_base64(text: &str) -> Result<SigningKey, SignatureError> {
    Ok(SigningKey::from_bytes(&key_bytes(text)?))
}

/// A public key from base64 of its 32 bytes.
pub fn verifying_key_from_base64(text: &str) -> Result<VerifyingKey, SignatureError> {
    VerifyingKey::from_bytes(&key_bytes(text)?).map_err(|e| SignatureError::Key(e.to_string()))
}

/// Base64 of a signing key's 32-byte seed, the form `signing_key_from_base64` reads.
pub fn signing_key_to_base64(key: &SigningKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.to_bytes())
}

/// Base64 of a public key, for configuration files.
pub fn verifying_key_to_base64(key: &VerifyingKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
}

pub use ed25519_dalek::{SigningKey as Ed25519SigningKey, VerifyingKey as Ed25519VerifyingKey};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{DesiredSchema, Revision};

    fn doc() -> DesiredState {
        DesiredState {
            schema: DesiredSchema::V1,
            site: "s".into(),
            node: "n".into(),
            generation: 4,
            revision: Revision {
                commit: "abc".into(),
                path: "sites/s".into(),
            },
            issued_at: "2026-11-25T00:00:00.000Z".into(),
            deployments: vec![],
            signature: None,
        }
    }

    #[test]
    fn signed_document_verifies_and_tampering_fails() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let mut d = doc();
        assert_eq!(
            verify(&d, &key.verifying_key()),
            Err(SignatureError::Missing)
        );
        sign(&mut d, &key, "k1");
        assert_eq!(verify(&d, &key.verifying_key()), Ok(()));
        // Survives a JSON round trip (what travels over MQTT).
        let back: DesiredState =
            serde_json::from_str(&serde_json::to_string(&d).expect("ser")).expect("de");
        assert_eq!(verify(&back, &key.verifying_key()), Ok(()));
        let mut tampered = back.clone();
        tampered.generation = 5;
        assert_eq!(
            verify(&tampered, &key.verifying_key()),
            Err(SignatureError::Invalid)
        );
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert_eq!(
            verify(&back, &other.verifying_key()),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn keys_round_trip_through_base64() {
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let text = verifying_key_to_base64(&key.verifying_key());
        assert_eq!(
            verifying_key_from_base64(&text).expect("key"),
            key.verifying_key()
        );
        assert!(verifying_key_from_base64("bm90IGEga2V5").is_err());
        let seed = signing_key_to_base64(&key);
        assert_eq!(
            signing_key_from_base64(&seed).expect("seed").to_bytes(),
            key.to_bytes()
        );
    }
}
