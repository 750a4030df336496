//! An agent refuses a desired document whose host-access fields break the rules the LO
//! applies to Git (`schemas::host::check`): an unknown capability, a relative device path,
//! published ports with host networking, a grace period above 1h, a non-namespaced sysctl.

mod common;

use common::*;
use en_agent::store::check_content;
use schemas::component::{Device, NetworkMode, PortMapping, Protocol};
use schemas::Component;

fn one(c: Component) -> schemas::wire::DesiredState {
    doc(1, vec![deployment("app", vec![c.with_hash()])])
}

#[test]
fn host_fields_out_of_bounds_are_refused_and_valid_ones_pass() {
    let base = comp("web", "reg/web:v1");
    let ok = Component {
        cap_add: vec!["CAP_NET_ADMIN".into()],
        devices: vec![Device {
            source: "/dev/null".into(),
            target: "/dev/null".into(),
            permissions: "rw".into(),
        }],
        network_mode: NetworkMode::Host,
        stop_grace_period_ms: Some(3_600_000),
        ..base.clone()
    };
    assert!(check_content(&one(ok)).is_ok());
    let bad: Vec<(Component, &str)> = vec![
        (
            Component {
                cap_add: vec!["CAP_FLY".into()],
                ..base.clone()
            },
            "unknown capability",
        ),
        (
            Component {
                devices: vec![Device {
                    source: "dev/null".into(),
                    target: "/dev/null".into(),
                    permissions: "rwm".into(),
                }],
                ..base.clone()
            },
            "not an absolute path",
        ),
        (
            Component {
                network_mode: NetworkMode::Host,
                ports: vec![PortMapping {
                    container: 80,
                    host: Some(8080),
                    host_ip: None,
                    protocol: Protocol::Tcp,
                }],
                ..base.clone()
            },
            "published ports are refused",
        ),
        (
            Component {
                stop_grace_period_ms: Some(3_600_001),
                ..base.clone()
            },
            "above the maximum of 1h",
        ),
        (
            Component {
                sysctls: [("kernel.hostname".to_owned(), "x".to_owned())].into(),
                ..base.clone()
            },
            "not namespaced",
        ),
    ];
    for (c, want) in bad {
        let e = check_content(&one(c)).expect_err(want);
        assert!(e.to_string().contains(want), "{e}");
    }
}
