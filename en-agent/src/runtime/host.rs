//! A component's host-access fields (`schemas::host`) in the Docker create body: devices,
//! privileged mode, capabilities, network mode, user, working directory, read-only root,
//! tmpfs, init, stop signal and grace period, extra hosts, `/dev/shm`, sysctls, ulimits
//! and GPUs. Unset fields leave the engine's defaults alone.

use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, HostConfig, ResourcesUlimits,
};
use bollard::Docker;
use schemas::component::{Gpus, NetworkMode};
use schemas::Component;
use std::time::Duration;

/// Sets the host-access fields of `c` on `body` (after its bridge network was set).
pub(super) fn apply(c: &Component, body: &mut ContainerCreateBody) {
    body.user = c.user.clone();
    body.working_dir = c.working_dir.clone();
    body.stop_signal = c.stop_signal.clone();
    body.stop_timeout = c.stop_grace_period_ms.map(|ms| grace_secs(ms).into());
    if c.network_mode != NetworkMode::Bridge {
        // Not on the deployment's network: no aliases, nothing exposed.
        body.networking_config = None;
        body.exposed_ports = None;
    }
    let h = body.host_config.get_or_insert_with(HostConfig::default);
    if c.network_mode != NetworkMode::Bridge {
        h.network_mode = Some(c.network_mode.as_str().to_owned());
        h.port_bindings = None;
    }
    h.privileged = c.privileged.then_some(true);
    h.cap_add = (!c.cap_add.is_empty()).then(|| c.cap_add.clone());
    h.cap_drop = (!c.cap_drop.is_empty()).then(|| c.cap_drop.clone());
    h.devices = (!c.devices.is_empty()).then(|| {
        c.devices
            .iter()
            .map(|d| DeviceMapping {
                path_on_host: Some(d.source.clone()),
                path_in_container: Some(d.target.clone()),
                cgroup_permissions: Some(d.permissions.clone()),
            })
            .collect()
    });
    h.readonly_rootfs = c.read_only.then_some(true);
    h.tmpfs = (!c.tmpfs.is_empty()).then(|| c.tmpfs.clone().into_iter().collect());
    h.init = c.init.then_some(true);
    h.extra_hosts = (!c.extra_hosts.is_empty()).then(|| c.extra_hosts.clone());
    h.shm_size = c.shm_size_bytes.and_then(|b| i64::try_from(b).ok());
    h.sysctls = (!c.sysctls.is_empty()).then(|| c.sysctls.clone().into_iter().collect());
    h.ulimits = (!c.ulimits.is_empty()).then(|| {
        c.ulimits
            .iter()
            .map(|(name, u)| ResourcesUlimits {
                name: Some(name.clone()),
                soft: Some(u.soft),
                hard: Some(u.hard),
            })
            .collect()
    });
    h.device_requests = c.gpus.map(|g| {
        vec![DeviceRequest {
            driver: Some("nvidia".to_owned()),
            count: Some(match g {
                Gpus::All => -1,
                Gpus::Count(n) => i64::from(n),
            }),
            capabilities: Some(vec![vec!["gpu".to_owned()]]),
            ..Default::default()
        }]
    });
}

/// A grace period in whole seconds for Docker, rounded up (a `500ms` period waits 1s).
fn grace_secs(ms: u64) -> i32 {
    i32::try_from(ms.div_ceil(1000)).unwrap_or(i32::MAX)
}

/// The stop timeout (whole seconds) for container `id`: its own `StopTimeout` (set from
/// its component's `stopGracePeriod`) when it has one, else the agent's `stop_timeout`.
pub(super) async fn stop_secs(d: &Docker, id: &str, agent: Duration) -> i32 {
    let r = super::timed(super::Ctx::Other, d.inspect_container(id, None)).await;
    pick_stop_secs(
        r.ok().and_then(|i| i.config).and_then(|c| c.stop_timeout),
        agent,
    )
}

fn pick_stop_secs(own: Option<i64>, agent: Duration) -> i32 {
    match own {
        Some(s) if s >= 0 => i32::try_from(s).unwrap_or(i32::MAX),
        _ => i32::try_from(agent.as_secs()).unwrap_or(10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::component::{Device, Ulimit};

    #[test]
    fn unset_fields_leave_the_body_alone() {
        let mut body = ContainerCreateBody {
            host_config: Some(HostConfig {
                network_mode: Some("ef-n-app".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let before = body.clone();
        apply(&Component::default(), &mut body);
        assert_eq!(body, before);
    }

    #[test]
    fn fields_map_to_docker_names() {
        let c = Component {
            privileged: true,
            cap_add: vec!["CAP_NET_ADMIN".into()],
            devices: vec![Device {
                source: "/dev/null".into(),
                target: "/dev/xnull".into(),
                permissions: "rw".into(),
            }],
            network_mode: NetworkMode::Host,
            stop_grace_period_ms: Some(1500),
            ulimits: [("nofile".to_owned(), Ulimit { soft: 10, hard: 20 })].into(),
            gpus: Some(Gpus::All),
            ..Component::default()
        };
        let mut body = ContainerCreateBody {
            networking_config: Some(Default::default()),
            ..Default::default()
        };
        apply(&c, &mut body);
        assert_eq!(body.stop_timeout, Some(2));
        assert_eq!(body.networking_config, None);
        let h = body.host_config.expect("host config");
        assert_eq!(h.network_mode.as_deref(), Some("host"));
        assert_eq!(h.privileged, Some(true));
        let dev = &h.devices.expect("devices")[0];
        assert_eq!(dev.path_in_container.as_deref(), Some("/dev/xnull"));
        assert_eq!(dev.cgroup_permissions.as_deref(), Some("rw"));
        let u = &h.ulimits.expect("ulimits")[0];
        assert_eq!((u.soft, u.hard), (Some(10), Some(20)));
        // This engine has no GPU: only the mapping is tested (`--gpus all`).
        let g = &h.device_requests.expect("gpus")[0];
        assert_eq!(g.driver.as_deref(), Some("nvidia"));
        assert_eq!(g.count, Some(-1));
        assert_eq!(pick_stop_secs(Some(7), Duration::from_secs(10)), 7);
        assert_eq!(pick_stop_secs(None, Duration::from_secs(10)), 10);
    }
}
