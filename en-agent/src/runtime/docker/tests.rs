//! Tests of the Docker mapping and error classification (moved out of docker.rs).

use super::*;

#[test]
fn docker_errors_map_to_wire_codes() {
    let cases = [
        (Some(404), "manifest for x not found: manifest unknown", Ctx::Pull, error_code::IMAGE_NOT_FOUND),
        (Some(500), "pull access denied for x", Ctx::Pull, error_code::PULL_DENIED),
        (Some(401), "unauthorized", Ctx::Pull, error_code::PULL_DENIED),
        (Some(500), "Get https://r/v2/: dial tcp: connection refused", Ctx::Pull, error_code::PULL_FAILED),
        (Some(500), "driver failed programming external connectivity: Bind for 0.0.0.0:80 failed: port is already allocated", Ctx::Start, error_code::PORT_IN_USE),
        (Some(500), "write /var/lib/docker/x: no space left on device", Ctx::Pull, error_code::NO_DISK),
        (Some(500), "oci runtime error", Ctx::Start, error_code::START_FAILED),
        (Some(400), "invalid mount", Ctx::Create, error_code::CREATE_FAILED),
    ];
    for (status, msg, ctx, code) in cases {
        assert_eq!(
            classify_message(status, msg.into(), ctx).code(),
            code,
            "{msg}"
        );
    }
    let e = classify(DockerError::SocketNotFoundError("/nope".into()), Ctx::Other);
    assert_eq!(e.code(), error_code::DOCKER_UNREACHABLE);
}

/// The engine's own words, as Docker 20.10 sent them with Debian's `docker-registry`
/// (see `tests/heal_docker.rs` for the same against the live engine).
#[test]
fn pull_errors_are_transient_unless_the_registry_said_no() {
    use crate::retry::ErrorKind::{Permanent, Transient};
    let cases = [
        // A registry stopped: connection refused (HTTP 500).
        (Some(500), "Get \"http://127.0.0.1:36687/v2/\": dial tcp 127.0.0.1:36687: connect: connection refused", Transient),
        // A registry answering 503.
        (Some(500), "received unexpected HTTP status: 503 Service Unavailable", Transient),
        (Some(500), "Head \"http://127.0.0.1:36687/v2/a/manifests/v1\": read tcp 127.0.0.1:49738->127.0.0.1:36687: read: connection reset by peer", Transient),
        (Some(500), "Get \"https://reg.example:5000/v2/\": dial tcp: lookup reg.example on 10.0.0.53:53: no such host", Transient),
        (Some(500), "Get \"https://r/v2/\": net/http: TLS handshake timeout", Transient),
        (Some(500), "Get \"https://r/v2/\": dial tcp 10.1.1.1:443: i/o timeout", Transient),
        (Some(500), "Get \"https://r/v2/\": context deadline exceeded", Transient),
        (None, "unexpected EOF", Transient),
        (Some(500), "toomanyrequests: You have reached your pull rate limit", Transient),
        // A proxy in front of a down registry saying "not found" is still down.
        (Some(500), "Get \"http://r/v2/\": dial tcp 10.1.1.1:80: connect: connection refused (not found)", Transient),
        // The registry answered: the tag or repository does not exist (HTTP 404).
        (Some(404), "manifest for 127.0.0.1:36687/ha-exp/app:nope not found: manifest unknown: manifest unknown", Permanent),
        (Some(404), "manifest for 127.0.0.1:36687/ha-exp/other:v1 not found: manifest unknown: manifest unknown", Permanent),
        (None, "manifest unknown", Permanent),
        (Some(500), "pull access denied for x, repository does not exist or may require 'docker login': denied: requested access to the resource is denied", Permanent),
        (Some(401), "unauthorized: authentication required", Permanent),
        (Some(500), "unauthorized: authentication required", Permanent),
        (Some(500), "Head \"http://127.0.0.1:5000/v2/a/manifests/v1\": no basic auth credentials", Permanent),
        (Some(400), "invalid reference format: repository name must be lowercase", Permanent),
    ];
    for (status, msg, want) in cases {
        assert_eq!(
            classify_message(status, msg.into(), Ctx::Pull).kind(),
            want,
            "{msg}"
        );
    }
}

#[test]
fn invalid_requests_are_permanent_engine_errors_transient() {
    use crate::retry::ErrorKind::{Permanent, Transient};
    let cases = [
        (Some(400), "invalid mount config for type \"bind\": invalid mount path: 'relative/path' mount path must be absolute", Ctx::Create, Permanent, error_code::CREATE_FAILED),
        (Some(400), "failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"/nope\": stat /nope: no such file or directory: unknown", Ctx::Start, Permanent, error_code::START_FAILED),
        (Some(404), "No such image: ha-exp-gone:v1", Ctx::Create, Transient, error_code::INTERNAL),
        (Some(409), "Conflict. The container name is already in use", Ctx::Create, Transient, error_code::INTERNAL),
        (Some(500), "driver failed programming external connectivity: port is already allocated", Ctx::Start, Transient, error_code::PORT_IN_USE),
        (Some(500), "containerd: connection error", Ctx::Start, Transient, error_code::START_FAILED),
    ];
    for (status, msg, ctx, kind, code) in cases {
        let e = classify_message(status, msg.into(), ctx);
        assert_eq!((e.kind(), e.code()), (kind, code), "{msg}");
    }
    // No answer in time, or no engine: not counted.
    assert_eq!(
        classify(DockerError::RequestTimeoutError, Ctx::Pull).kind(),
        crate::retry::ErrorKind::EngineDown
    );
}

#[test]
fn health_is_read_from_the_status_column() {
    assert_eq!(
        health_from_status("Up 2 minutes (healthy)"),
        Health::Healthy
    );
    assert_eq!(
        health_from_status("Up 2 minutes (unhealthy)"),
        Health::Unhealthy
    );
    assert_eq!(
        health_from_status("Up 1 second (health: starting)"),
        Health::Starting
    );
    assert_eq!(health_from_status("Exited (0) 3 seconds ago"), Health::None);
}
