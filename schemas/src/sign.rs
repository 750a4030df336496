//! ed25519 signatures of desired documents (by the LO) and of reports (by each node).
//!
//! The LO signs [`DesiredState::signing_payload`] (the canonical JSON of the document
//! without `signature`); an agent configured with the public key applies nothing unsigned
//! or badly signed, so the broker is not trusted with what runs.
//!
//! Each node signs its reports with its own key ([`sign_report`]); the LO verifies them with
//! the public key of the node's `Node` document ([`verify_report`]), so a broker login, or a
//! broker without ACLs, cannot speak for a node.

use crate::wire::{DesiredState, ReportSignature, Signature};
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};

/// Version tag of the report signing payload.
pub const REPORT_SIGNING_TAG: &str = "edgefleet.report/v1";

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

/// The bytes a report signature covers: the tag, the topic, the epoch, the sequence number
/// and the canonical JSON of the report without its `signature` field.
pub fn report_signing_payload(
    topic: &str,
    epoch: u64,
    seq: u64,
    report: &serde_json::Value,
) -> String {
    let body = match report {
        serde_json::Value::Object(map) if map.contains_key("signature") => {
            let mut map = map.clone();
            map.remove("signature");
            crate::component::canonical_json(&serde_json::Value::Object(map))
        }
        other => crate::component::canonical_json(other),
    };
    format!("{REPORT_SIGNING_TAG}\n{topic}\n{epoch}\n{seq}\n{body}")
}

/// Signs a report (a JSON object: status, event, heartbeat or presence) published on
/// `topic`, in place: sets its `signature` field. Anything but an object is left alone.
pub fn sign_report(
    report: &mut serde_json::Value,
    topic: &str,
    epoch: u64,
    seq: u64,
    key: &SigningKey,
) {
    let payload = report_signing_payload(topic, epoch, seq, report);
    let sig = key.sign(payload.as_bytes());
    let signature = ReportSignature {
        alg: "ed25519".into(),
        epoch,
        seq,
        value: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
    };
    if let (serde_json::Value::Object(map), Ok(v)) = (report, serde_json::to_value(&signature)) {
        map.insert("signature".into(), v);
    }
}

/// Verifies the signature of a report received on `topic` (the raw JSON, so fields a newer
/// agent added are covered too). Returns the signature's `(epoch, seq)` for replay checks.
pub fn verify_report(
    report: &serde_json::Value,
    topic: &str,
    key: &VerifyingKey,
) -> Result<(u64, u64), SignatureError> {
    let sig = report.get("signature").ok_or(SignatureError::Missing)?;
    let sig: ReportSignature =
        serde_json::from_value(sig.clone()).map_err(|_| SignatureError::Malformed)?;
    if sig.alg != "ed25519" {
        return Err(SignatureError::Algorithm(
            sig.alg.chars().take(32).collect(),
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&sig.value)
        .map_err(|_| SignatureError::Malformed)?;
    let bytes: [u8; 64] = bytes.try_into().map_err(|_| SignatureError::Malformed)?;
    let signature = ed25519_dalek::Signature::from_bytes(&bytes);
    let payload = report_signing_payload(topic, sig.epoch, sig.seq, report);
    key.verify(payload.as_bytes(), &signature)
        .map_err(|_| SignatureError::Invalid)?;
    Ok((sig.epoch, sig.seq))
}

#[cfg(test)]
mod report_tests {
    use super::*;

    #[test]
    fn report_signatures_bind_topic_epoch_seq_and_content() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let topic = "fleet/s/nodes/n1/heartbeat";
        let mut hb = serde_json::json!({"schema": "fleet.heartbeat/v1", "seq": 3, "uptimeS": 1,
            "observedGeneration": 2, "converged": true, "future": {"b": 1, "a": [1, 2]}});
        sign_report(&mut hb, topic, 5, 9, &key);
        assert_eq!(verify_report(&hb, topic, &key.verifying_key()), Ok((5, 9)));
        assert_eq!(
            verify_report(&hb, topic, &other.verifying_key()),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify_report(&hb, "fleet/s/nodes/n2/heartbeat", &key.verifying_key()),
            Err(SignatureError::Invalid)
        );
        let mut changed = hb.clone();
        changed["converged"] = serde_json::json!(false);
        assert_eq!(
            verify_report(&changed, topic, &key.verifying_key()),
            Err(SignatureError::Invalid)
        );
        let mut replayed = hb.clone();
        replayed["signature"]["seq"] = serde_json::json!(10);
        assert_eq!(
            verify_report(&replayed, topic, &key.verifying_key()),
            Err(SignatureError::Invalid)
        );
        let mut unsigned = hb.clone();
        unsigned
            .as_object_mut()
            .expect("object")
            .remove("signature");
        assert_eq!(
            verify_report(&unsigned, topic, &key.verifying_key()),
            Err(SignatureError::Missing)
        );
        // The typed report reads the signature back.
        let typed: crate::Heartbeat = serde_json::from_value(hb).expect("heartbeat");
        assert_eq!(typed.signature.map(|s| (s.epoch, s.seq)), Some((5, 9)));
    }
}
