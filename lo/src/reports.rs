//! Which node reports are taken in, pure: the signature policy (`check_report`), the size
//! bound of a status report, how many undeclared nodes are tracked, and when a generation
//! read back from the broker is followed. No I/O; the engine's ingest applies them.

/// Largest generation the LO issues or follows (the contract's, see `docs/protocol.md`).
pub use schemas::MAX_GENERATION;
/// Largest jump above our own generation that a desired document read back from the broker
/// makes us follow (the state dir was lost and the broker still holds newer documents). A
/// larger jump is what someone else wrote: it is ignored and logged, never followed, so one
/// message cannot exhaust the generation space of a node.
pub const MAX_GENERATION_STEP: u64 = 1_000_000;
/// Nodes not declared in Git (unknown, or auto-enrolled) tracked at most; messages of further
/// ones are counted only. Anyone on the broker can invent node names.
pub const MAX_UNDECLARED_NODES: usize = 1_000;
/// The same bound when the Site allows auto-enrolment: there every announcing node is a
/// node of the site (trust on first use, the Site's choice), so the bound is a fleet size
/// (twice the 10,000 nodes benchmarked) rather than a guard against invented names.
pub const MAX_AUTO_ENROLLED_NODES: usize = 20_000;
/// Deployments, and components over all deployments, accepted in one node status. A report
/// above these is refused rather than decoded and summed (a node runs tens, not thousands).
pub const MAX_REPORT_DEPLOYMENTS: usize = 1_000;
/// See [`MAX_REPORT_DEPLOYMENTS`].
pub const MAX_REPORT_COMPONENTS: usize = 10_000;

/// Whether a generation read back from the broker above ours is followed (`Some`: the floor
/// to raise to). Only a trusted document (signed with our key when we sign) within
/// [`MAX_GENERATION_STEP`] above ours and below [`MAX_GENERATION`] (so the next one we issue
/// is still at most the maximum) is followed.
pub fn follow_generation(ours: u64, theirs: u64, trusted: bool) -> Option<u64> {
    let step = theirs.checked_sub(ours)?;
    (trusted && step > 0 && step <= MAX_GENERATION_STEP && theirs < MAX_GENERATION)
        .then_some(theirs)
}

/// Why a report is refused by the signature check (the `kind` label of
/// `messages_rejected`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportRefusal {
    /// No signature where one is required.
    Unsigned,
    /// A signature that does not verify with the node's key (or no key to verify it with).
    BadSignature,
    /// A signature older than the newest accepted on that node and channel.
    Replay,
}

impl ReportRefusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportRefusal::Unsigned => "unsigned",
            ReportRefusal::BadSignature => "bad_signature",
            ReportRefusal::Replay => "replay",
        }
    }
}

/// The signature policy for one report, pure: `key` is the node's key from Git, `required`
/// the Site's `requireSignedReports`, `last` the newest `(epoch, seq)` accepted on this node
/// and channel, `presence` whether it came on the `online` channel (whose `epoch` the LO
/// acts on). Returns the report's `(epoch, seq)` when it was signed and verified.
pub fn check_report(
    raw: &serde_json::Value,
    topic: &str,
    presence: bool,
    key: Option<&ed25519_dalek::VerifyingKey>,
    required: bool,
    last: Option<(u64, u64)>,
) -> Result<Option<(u64, u64)>, ReportRefusal> {
    let signed = raw.get("signature").is_some();
    let key = match key {
        Some(k) => k,
        // Nothing to verify with: refused when signatures are required.
        None if required && signed => return Err(ReportRefusal::BadSignature),
        None if required => return Err(ReportRefusal::Unsigned),
        None => return Ok(None),
    };
    if !signed {
        return if required {
            Err(ReportRefusal::Unsigned)
        } else {
            Ok(None)
        };
    }
    let (epoch, seq) = schemas::sign::verify_report(raw, topic, key).map_err(|e| match e {
        schemas::sign::SignatureError::Missing => ReportRefusal::Unsigned,
        _ => ReportRefusal::BadSignature,
    })?;
    // A presence's own epoch is what the LO acts on: it must be the signed one.
    if presence && raw.get("epoch").and_then(|e| e.as_u64()) != Some(epoch) {
        return Err(ReportRefusal::BadSignature);
    }
    // An equal (epoch, seq) is the same message again (a retained copy): harmless.
    if last.is_some_and(|l| (epoch, seq) < l) {
        return Err(ReportRefusal::Replay);
    }
    Ok(Some((epoch, seq)))
}

/// Why a node status is too large to ingest, if it is.
pub fn oversized_report(raw: &serde_json::Value) -> Option<String> {
    let deployments = raw.get("deployments").and_then(|d| d.as_array());
    let n = deployments.map_or(0, Vec::len);
    if n > MAX_REPORT_DEPLOYMENTS {
        return Some(format!(
            "{n} deployments (at most {MAX_REPORT_DEPLOYMENTS})"
        ));
    }
    let components: usize = deployments
        .into_iter()
        .flatten()
        .map(|d| {
            d.get("components")
                .and_then(|c| c.as_array())
                .map_or(0, Vec::len)
        })
        .sum();
    let unmanaged = raw
        .get("unmanaged")
        .and_then(|u| u.as_array())
        .map_or(0, Vec::len);
    (components + unmanaged > MAX_REPORT_COMPONENTS).then(|| {
        format!(
            "{} containers (at most {MAX_REPORT_COMPONENTS})",
            components + unmanaged
        )
    })
}

/// How many undeclared nodes are tracked at most: [`MAX_AUTO_ENROLLED_NODES`] when the Site
/// enrols announcing nodes, else [`MAX_UNDECLARED_NODES`].
pub fn undeclared_limit(auto_enrol: bool) -> usize {
    if auto_enrol {
        MAX_AUTO_ENROLLED_NODES
    } else {
        MAX_UNDECLARED_NODES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use serde_json::json;

    #[test]
    fn generations_read_back_are_followed_only_within_bounds() {
        // (ours, theirs, trusted, followed)
        let cases = [
            (4, 9, true, Some(9)),
            (4, 4, true, None),
            (4, 3, true, None),
            (4, 9, false, None),
            (0, MAX_GENERATION_STEP, true, Some(MAX_GENERATION_STEP)),
            (0, MAX_GENERATION_STEP + 1, true, None),
            (4, u64::MAX, true, None),
            (
                MAX_GENERATION - 2,
                MAX_GENERATION - 1,
                true,
                Some(MAX_GENERATION - 1),
            ),
            (MAX_GENERATION - 1, MAX_GENERATION, true, None),
            (u64::MAX, 0, true, None),
        ];
        for (ours, theirs, trusted, want) in cases {
            assert_eq!(
                follow_generation(ours, theirs, trusted),
                want,
                "ours {ours}, theirs {theirs}, trusted {trusted}"
            );
        }
    }

    fn hb(seq: u64) -> serde_json::Value {
        json!({"schema": "fleet.heartbeat/v1", "seq": seq, "uptimeS": 1,
            "observedGeneration": 2, "converged": true})
    }

    /// (report, node key, required, newest accepted, outcome)
    type Case<'a> = (
        &'a serde_json::Value,
        Option<&'a ed25519_dalek::VerifyingKey>,
        bool,
        Option<(u64, u64)>,
        Result<Option<(u64, u64)>, ReportRefusal>,
    );

    #[test]
    fn report_signature_policy_table() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let vk = key.verifying_key();
        let topic = "fleet/s/nodes/n1/heartbeat";
        let unsigned = hb(1);
        let mut signed = hb(1);
        schemas::sign::sign_report(&mut signed, topic, 3, 10, &key);
        let mut foreign = hb(1);
        schemas::sign::sign_report(&mut foreign, topic, 3, 10, &other);
        let mut elsewhere = hb(1);
        schemas::sign::sign_report(&mut elsewhere, "fleet/s/nodes/n2/heartbeat", 3, 10, &key);
        let mut tampered = signed.clone();
        tampered["converged"] = json!(false);
        use ReportRefusal::*;
        let cases: [Case<'_>; 12] = [
            (&unsigned, None, false, None, Ok(None)),
            (&unsigned, Some(&vk), false, None, Ok(None)),
            (&unsigned, Some(&vk), true, None, Err(Unsigned)),
            (&unsigned, None, true, None, Err(Unsigned)),
            (&signed, None, true, None, Err(BadSignature)),
            (&signed, Some(&vk), true, None, Ok(Some((3, 10)))),
            (&signed, Some(&vk), false, Some((3, 10)), Ok(Some((3, 10)))),
            (&signed, Some(&vk), true, Some((3, 11)), Err(Replay)),
            (&signed, Some(&vk), true, Some((4, 0)), Err(Replay)),
            (&foreign, Some(&vk), false, None, Err(BadSignature)),
            (&elsewhere, Some(&vk), true, None, Err(BadSignature)),
            (&tampered, Some(&vk), false, None, Err(BadSignature)),
        ];
        for (i, (raw, k, required, last, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                check_report(raw, topic, false, k, required, last),
                want,
                "case {i}"
            );
        }
    }

    #[test]
    fn presence_epoch_must_be_the_signed_epoch() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let topic = "fleet/s/nodes/n1/online";
        let mut p = json!({"schema": "fleet.presence/v1", "online": false, "epoch": 5});
        schemas::sign::sign_report(&mut p, topic, 5, 0, &key);
        assert_eq!(
            check_report(&p, topic, true, Some(&key.verifying_key()), true, None),
            Ok(Some((5, 0)))
        );
        let mut q = json!({"schema": "fleet.presence/v1", "online": false, "epoch": 9});
        schemas::sign::sign_report(&mut q, topic, 5, 0, &key);
        assert_eq!(
            check_report(&q, topic, true, Some(&key.verifying_key()), true, None),
            Err(ReportRefusal::BadSignature)
        );
    }

    #[test]
    fn oversized_reports_are_recognised_before_decoding() {
        let deps: Vec<serde_json::Value> = (0..MAX_REPORT_DEPLOYMENTS + 1)
            .map(|i| json!({"name": format!("d{i}"), "state": "installed", "components": []}))
            .collect();
        assert!(oversized_report(&json!({ "deployments": deps })).is_some());
        let comps: Vec<serde_json::Value> =
            (0..MAX_REPORT_COMPONENTS + 1).map(|_| json!({})).collect();
        assert!(oversized_report(&json!({"deployments": [{"components": comps}]})).is_some());
        assert!(oversized_report(&json!({"deployments": [{"components": [{}]}]})).is_none());
    }
}
