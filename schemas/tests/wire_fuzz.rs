//! Every decoder of untrusted input, fed thousands of generated inputs: random bytes,
//! mutated valid documents, huge numbers and deep nesting. None may panic, and each input is
//! decoded in bounded time (a hang would show as a slow or stuck test; the cases are small).
//! What travels over MQTT comes from a broker we do not trust.

use proptest::prelude::*;
use schemas::{
    BrokerUrl, DesiredState, Event, Heartbeat, NodeStatus, Presence, SiteStatus, Topics,
};
use std::time::{Duration, Instant};

const EXAMPLES: [&str; 6] = [
    include_str!("../examples/desired.json"),
    include_str!("../examples/status.json"),
    include_str!("../examples/event.json"),
    include_str!("../examples/heartbeat.json"),
    include_str!("../examples/presence.json"),
    include_str!("../examples/site-status.json"),
];

/// One input through every payload decoder; returns how many accepted it.
fn decode_all(bytes: &[u8]) -> usize {
    let started = Instant::now();
    let ok = [
        serde_json::from_slice::<DesiredState>(bytes).is_ok(),
        serde_json::from_slice::<NodeStatus>(bytes).is_ok(),
        serde_json::from_slice::<Event>(bytes).is_ok(),
        serde_json::from_slice::<Heartbeat>(bytes).is_ok(),
        serde_json::from_slice::<Presence>(bytes).is_ok(),
        serde_json::from_slice::<SiteStatus>(bytes).is_ok(),
        serde_json::from_slice::<serde_json::Value>(bytes).is_ok(),
    ]
    .into_iter()
    .filter(|x| *x)
    .count();
    // Linear-time decoding: even the largest generated input takes well under this.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{} bytes took {:?}",
        bytes.len(),
        started.elapsed()
    );
    ok
}

/// A JSON value, nested up to a few levels, with the numbers that break counters.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        prop_oneof![
            Just(u64::MAX),
            Just(0u64),
            Just((1u64 << 53) - 1),
            Just(1u64 << 53),
            any::<u64>()
        ]
        .prop_map(|n| serde_json::json!(n)),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        ".{0,40}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid example with one field replaced, removed or added.
fn mutated_example() -> impl Strategy<Value = Vec<u8>> {
    (
        0..EXAMPLES.len(),
        any::<prop::sample::Index>(),
        json_value(),
        0..3u8,
    )
        .prop_map(|(i, at, value, how)| {
            let mut doc: serde_json::Value =
                serde_json::from_str(EXAMPLES[i]).expect("example is JSON");
            if let serde_json::Value::Object(map) = &mut doc {
                let keys: Vec<String> = map.keys().cloned().collect();
                let key = keys[at.index(keys.len())].clone();
                match how {
                    0 => {
                        map.insert(key, value);
                    }
                    1 => {
                        map.remove(&key);
                    }
                    _ => {
                        map.insert(format!("{key}X"), value);
                    }
                }
            }
            serde_json::to_vec(&doc).expect("serialises")
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_documents_never_panic(bytes in mutated_example()) {
        decode_all(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(v in json_value()) {
        decode_all(&serde_json::to_vec(&v).expect("serialises"));
    }

    #[test]
    fn truncated_documents_never_panic(i in 0..EXAMPLES.len(), cut in any::<prop::sample::Index>()) {
        let bytes = EXAMPLES[i].as_bytes();
        decode_all(&bytes[..cut.index(bytes.len() + 1)]);
    }

    #[test]
    fn topic_parser_never_panics(topic in "[a-z0-9/+#$._ -]{0,80}|.{0,80}") {
        for root in ["fleet", "acme/fleet"] {
            let t = Topics::new(root);
            if let Ok(parsed) = t.parse(&topic) {
                // What parses is exactly one of our shapes, under our root.
                prop_assert!(topic.starts_with(&format!("{root}/")), "{topic} {parsed:?}");
                prop_assert!(!topic.contains(['+', '#']));
            }
        }
    }

    #[test]
    fn broker_url_parser_never_panics_nor_echoes_passwords(
        // Typos too: `mqtt:user:pass@host` must not echo the password either.
        scheme in "(mqtts?|http|ftp)://|mqtt:|",
        user in "[a-z@:%]{0,8}",
        pass in "[a-zA-Z0-9@:/]{0,12}",
        host in "[a-z0-9.:\\[\\]-]{0,20}",
        port in "(:[0-9]{0,7})?",
    ) {
        let url = format!("{scheme}{user}:{pass}@{host}{port}");
        match url.parse::<BrokerUrl>() {
            Ok(b) => {
                // Shown forms carry `***` instead of the password.
                let shown = b.to_string();
                let debug = format!("{b:?}");
                if let Some(p) = b.password.as_deref().filter(|p| p.len() >= 6) {
                    prop_assert!(!shown.contains(p), "{}", shown);
                    prop_assert!(!debug.contains(p), "{}", debug);
                }
            }
            Err(e) => {
                // The password never shows in the error (a short one may occur elsewhere).
                let text = e.to_string();
                if pass.len() >= 6 {
                    prop_assert!(!text.contains(&pass), "{}", text);
                }
            }
        }
    }
}

#[test]
fn deep_nesting_is_refused_quickly_by_every_decoder() {
    for depth in [129, 1_000, 100_000] {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let doc = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            assert_eq!(decode_all(doc.as_bytes()), 0, "depth {depth}");
        }
    }
}

#[test]
fn huge_numbers_are_refused_or_kept_exact() {
    for g in [
        "18446744073709551616",
        "1e400",
        "-1",
        "1.5",
        "99999999999999999999999",
    ] {
        let doc = include_str!("../examples/desired.json").replacen(
            "\"generation\": ",
            &format!("\"generation\": {g}, \"x\": "),
            1,
        );
        // Either the document is refused, or (unknown field `x` refused here anyway) it
        // never decodes to a wrapped or rounded generation.
        if let Ok(d) = serde_json::from_str::<DesiredState>(&doc) {
            panic!("decoded a generation from {g}: {}", d.generation);
        }
    }
    let hb = format!(
        "{{\"schema\":\"fleet.heartbeat/v1\",\"seq\":{},\"uptimeS\":1,\"observedGeneration\":18446744073709551616,\"converged\":true}}",
        u64::MAX
    );
    assert!(serde_json::from_str::<Heartbeat>(&hb).is_err());
}

#[test]
fn a_large_array_decodes_in_bounded_time() {
    // Near a packet limit: 1 MiB of small array entries in a status.
    let mut st: serde_json::Value =
        serde_json::from_str(include_str!("../examples/status.json")).expect("json");
    st["deployments"] = serde_json::Value::Array(vec![serde_json::json!({}); 250_000]);
    let bytes = serde_json::to_vec(&st).expect("ser");
    assert!(bytes.len() > 500_000);
    decode_all(&bytes);
}
