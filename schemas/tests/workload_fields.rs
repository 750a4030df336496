//! The host-access fields of a component (`privileged`, `capAdd`/`capDrop`, `devices`,
//! `networkMode`, `user`, `workingDir`, `readOnly`, `tmpfs`, `init`, `stopSignal`,
//! `stopGracePeriod`, `extraHosts`, `shmSize`, `sysctls`, `ulimits`, `gpus`): what is
//! accepted and how it resolves, what is refused (naming file, line and field), the Site
//! security policy refusing each privileged field until the Site allows it, and that a
//! component without any of them keeps its spec hash.

use schemas::component::{Device, Gpus, NetworkMode, Ulimit};
use schemas::site::load_site;
use schemas::Component;

const FILE: &str = "sites/s1/app.yaml";
const SITE: &str = "sites/s1/site.yaml";
const AT: &str = "spec.components[0]";

/// A deployment with one component `web` (line 8 is its image) and `extra` lines after it.
fn deployment(extra: &str) -> String {
    format!(
        "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  components:\n    - name: web\n      image: nginx:1.27\n{extra}"
    )
}

fn site(security: &str) -> String {
    format!(
        "apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: s1\nspec:\n  security:\n{security}"
    )
}

/// A Site that allows everything privileged.
fn open_site() -> String {
    site("    allowPrivileged: true\n    allowHostNetwork: true\n    allowedDevices: [/dev/null, /dev/bus/usb]\n    allowedCapabilities: [NET_ADMIN, CAP_SYS_TIME]\n")
}

fn web(files: &[(&str, &str)]) -> Component {
    let docs = load_site("s1", files.iter().copied())
        .unwrap_or_else(|p| panic!("the site must load: {p:#?}"));
    docs.deployments["app"].components[0].clone()
}

/// The problems of a site made of `files`, as `(file, line, field, message)`.
fn problems(files: &[(&str, &str)]) -> Vec<(String, Option<usize>, String, String)> {
    match load_site("s1", files.iter().copied()) {
        Ok(_) => vec![],
        Err(p) => p
            .into_iter()
            .map(|p| (p.file, p.line, p.field.unwrap_or_default(), p.message))
            .collect(),
    }
}

fn device(s: &str, t: &str, p: &str) -> Device {
    Device {
        source: s.into(),
        target: t.into(),
        permissions: p.into(),
    }
}

#[test]
fn valid_fields_resolve_as_written() {
    let s = open_site();
    let yaml = deployment(
        "      privileged: true\n      capAdd: [net_admin, CAP_SYS_TIME]\n      capDrop: [ALL]\n      devices:\n        - /dev/null\n        - /dev/null:/dev/xnull:r\n        - {source: /dev/bus/usb/001/002, permissions: rw}\n      networkMode: host\n      user: 1000:1000\n      workingDir: /srv\n      readOnly: true\n      tmpfs: [/tmp, \"/run:size=64m,mode=1777,noexec\"]\n      init: true\n      stopSignal: int\n      stopGracePeriod: 1m30s\n      extraHosts: [\"gw:10.0.0.1\", \"v6=::1\", \"hg:host-gateway\"]\n      shmSize: 128m\n      sysctls: {kernel.shmmax: 65536, fs.mqueue.msg_max: \"20\"}\n      ulimits:\n        nofile: {soft: 1024, hard: 4096}\n        core: 0\n        memlock: -1\n      gpus: all\n",
    );
    let c = web(&[(SITE, &s), (FILE, &yaml)]);
    assert!(c.privileged);
    assert_eq!(c.cap_add, ["CAP_NET_ADMIN", "CAP_SYS_TIME"]);
    assert_eq!(c.cap_drop, ["ALL"]);
    assert_eq!(
        c.devices,
        [
            device("/dev/null", "/dev/null", "rwm"),
            device("/dev/null", "/dev/xnull", "r"),
            device("/dev/bus/usb/001/002", "/dev/bus/usb/001/002", "rw"),
        ]
    );
    assert_eq!(c.network_mode, NetworkMode::Host);
    assert_eq!(c.user.as_deref(), Some("1000:1000"));
    assert_eq!(c.working_dir.as_deref(), Some("/srv"));
    assert!(c.read_only && c.init);
    assert_eq!(
        c.tmpfs,
        [
            ("/tmp".to_owned(), String::new()),
            ("/run".to_owned(), "size=64m,mode=1777,noexec".to_owned())
        ]
        .into()
    );
    assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(c.stop_grace_period_ms, Some(90_000));
    assert_eq!(c.extra_hosts, ["gw:10.0.0.1", "v6:::1", "hg:host-gateway"]);
    assert_eq!(c.shm_size_bytes, Some(128 << 20));
    assert_eq!(
        c.sysctls,
        [
            ("fs.mqueue.msg_max".to_owned(), "20".to_owned()),
            ("kernel.shmmax".to_owned(), "65536".to_owned())
        ]
        .into()
    );
    assert_eq!(
        c.ulimits,
        [
            ("core".to_owned(), Ulimit { soft: 0, hard: 0 }),
            ("memlock".to_owned(), Ulimit { soft: -1, hard: -1 }),
            (
                "nofile".to_owned(),
                Ulimit {
                    soft: 1024,
                    hard: 4096
                }
            ),
        ]
        .into()
    );
    assert_eq!(c.gpus, Some(Gpus::All));
    assert!(c.hash_is_valid());
    assert_eq!(schemas::host::check(&c), Ok(()));

    // Bridge sysctls, networkMode none, a GPU count, a user name.
    let yaml = deployment(
        "      networkMode: none\n      sysctls: {net.ipv4.ip_forward: 1}\n      gpus: 2\n      user: nobody\n",
    );
    let c = web(&[(FILE, &yaml)]);
    assert_eq!(c.network_mode, NetworkMode::None);
    assert_eq!(c.sysctls["net.ipv4.ip_forward"], "1");
    assert_eq!(c.gpus, Some(Gpus::Count(2)));
    assert_eq!(c.user.as_deref(), Some("nobody"));
}

#[test]
fn invalid_values_name_file_line_and_field() {
    // (extra lines from line 9, line of the problem, field under the component, message part)
    let table: &[(&str, usize, &str, &str)] = &[
        (
            "      capAdd: [CAP_FLY]\n",
            9,
            "capAdd[0]",
            "unknown capability `CAP_FLY`",
        ),
        (
            "      capDrop: [NET_RAW, fly]\n",
            9,
            "capDrop[1]",
            "unknown capability `fly`",
        ),
        (
            "      devices: [dev/null]\n",
            9,
            "devices[0]",
            "`dev/null` is not an absolute path",
        ),
        (
            "      devices: [\"/dev/null:/dev/x:rwx\"]\n",
            9,
            "devices[0]",
            "not a non-empty subset of `rwm`",
        ),
        (
            "      devices: [\"/dev/null:/dev/x:wr\"]\n",
            9,
            "devices[0]",
            "not a non-empty subset of `rwm`",
        ),
        (
            "      devices: [\"/a:/b:r:x\"]\n",
            9,
            "devices[0]",
            "is not a device",
        ),
        (
            "      devices:\n        - {source: /dev/null, target: x}\n",
            10,
            "devices[0]",
            "`x` is not an absolute path",
        ),
        (
            "      networkMode: container:db\n",
            9,
            "networkMode",
            "unknown network mode",
        ),
        (
            "      networkMode: none\n      ports: [\"8080:80\"]\n",
            10,
            "ports",
            "published ports are refused with networkMode none",
        ),
        ("      user: \"root:\"\n", 9, "user", "is not a user"),
        ("      user: \"a b\"\n", 9, "user", "is not a user"),
        (
            "      workingDir: srv\n",
            9,
            "workingDir",
            "`srv` is not an absolute path",
        ),
        (
            "      tmpfs: [tmp]\n",
            9,
            "tmpfs[0]",
            "is not a tmpfs mount",
        ),
        (
            "      tmpfs: [\"/tmp:size=64m,suid=1\"]\n",
            9,
            "tmpfs[0]",
            "is not a tmpfs mount",
        ),
        (
            "      tmpfs: [/tmp, \"/tmp:size=1m\"]\n",
            9,
            "tmpfs[1]",
            "`/tmp` is mounted twice",
        ),
        (
            "      stopSignal: SIGFOO\n",
            9,
            "stopSignal",
            "unknown signal `SIGFOO`",
        ),
        (
            "      stopGracePeriod: 2h\n",
            9,
            "stopGracePeriod",
            "above the maximum of 1h",
        ),
        ("      stopGracePeriod: soon\n", 9, "stopGracePeriod", ""),
        (
            "      extraHosts: [\"gw:10.0.0.300\"]\n",
            9,
            "extraHosts[0]",
            "is not an extra host",
        ),
        (
            "      extraHosts: [gw]\n",
            9,
            "extraHosts[0]",
            "is not an extra host",
        ),
        ("      shmSize: 0\n", 9, "shmSize", "is not a size"),
        ("      shmSize: lots\n", 9, "shmSize", "is not a size"),
        (
            "      sysctls:\n        vm.swappiness: 10\n",
            10,
            "sysctls.vm.swappiness",
            "is not namespaced",
        ),
        (
            "      sysctls:\n        kernel.domainname: x\n",
            10,
            "sysctls.kernel.domainname",
            "is not namespaced",
        ),
        (
            "      sysctls:\n        net.core.somaxconn: \"\"\n",
            10,
            "sysctls.net.core.somaxconn",
            "1 to 256 characters",
        ),
        (
            "      ulimits:\n        files: 10\n",
            10,
            "ulimits.files",
            "unknown ulimit `files`",
        ),
        (
            "      ulimits:\n        nofile: {soft: 20, hard: 10}\n",
            10,
            "ulimits.nofile",
            "soft not above hard",
        ),
        (
            "      ulimits:\n        nofile: -2\n",
            10,
            "ulimits.nofile",
            "soft not above hard",
        ),
        ("      gpus: 0\n", 9, "gpus", "not `all` or a GPU count"),
        ("      gpus: some\n", 9, "gpus", "not `all` or a GPU count"),
    ];
    for (extra, line, field, message) in table {
        let doc = deployment(extra);
        let got = problems(&[(FILE, &doc)]);
        let want_field = format!("{AT}.{field}");
        assert!(
            got.iter().any(|(f, l, fl, m)| f == FILE
                && *l == Some(*line)
                && *fl == want_field
                && m.contains(message)),
            "{extra}: want {FILE}:{line}: {want_field}: …{message}…, got {got:#?}"
        );
    }
}

#[test]
fn host_network_refuses_net_sysctls() {
    let s = open_site();
    let doc =
        deployment("      networkMode: host\n      sysctls:\n        net.ipv4.ip_forward: 1\n");
    let got = problems(&[(SITE, &s), (FILE, &doc)]);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].1, Some(11));
    assert_eq!(got[0].2, format!("{AT}.sysctls.net.ipv4.ip_forward"));
    assert!(
        got[0].3.contains("refused with networkMode host"),
        "{got:#?}"
    );
}

#[test]
fn privileged_fields_are_refused_until_the_site_allows_them() {
    // (extra lines, line, field, message part, the Site security that allows it)
    let table: &[(&str, usize, &str, &str, &str)] = &[
        (
            "      privileged: true\n",
            9,
            "privileged",
            "privileged mode is refused",
            "    allowPrivileged: true\n",
        ),
        (
            "      networkMode: host\n",
            9,
            "networkMode",
            "host networking is refused",
            "    allowHostNetwork: true\n",
        ),
        (
            "      devices: [/dev/null]\n",
            9,
            "devices[0]",
            "device `/dev/null` is refused",
            "    allowedDevices: [/dev/null]\n",
        ),
        (
            "      devices:\n        - {source: /dev/bus/usb/001/002}\n",
            10,
            "devices[0]",
            "device `/dev/bus/usb/001/002` is refused",
            "    allowedDevices: [/dev/bus/usb]\n",
        ),
        (
            "      capAdd: [SYS_ADMIN]\n",
            9,
            "capAdd[0]",
            "capability CAP_SYS_ADMIN is refused",
            "    allowedCapabilities: [cap_sys_admin]\n",
        ),
        (
            "      capAdd: [ALL]\n",
            9,
            "capAdd[0]",
            "capability ALL is refused",
            "    allowedCapabilities: [ALL]\n",
        ),
    ];
    // A Site with other allowances does not allow these.
    let unrelated = site("    allowPrivilegedPorts: true\n    allowedCapabilities: [NET_RAW]\n    allowedDevices: [/dev/bus/usb/002, /dev/nullx]\n");
    for (extra, line, field, message, allow) in table {
        let doc = deployment(extra);
        for files in [
            vec![(FILE, doc.as_str())],
            vec![(SITE, unrelated.as_str()), (FILE, doc.as_str())],
        ] {
            let got = problems(&files);
            assert_eq!(got.len(), 1, "{extra}: {got:#?}");
            let (f, l, fl, m) = &got[0];
            assert_eq!(
                (f.as_str(), *l, fl.as_str()),
                (FILE, Some(*line), format!("{AT}.{field}").as_str()),
                "{extra}"
            );
            assert!(
                m.contains(message) && m.contains("Site.spec.security"),
                "{extra}: {m}"
            );
        }
        let s = site(allow);
        let got = problems(&[(SITE, &s), (FILE, &doc)]);
        assert!(got.is_empty(), "{extra} with {allow}: {got:#?}");
    }
    // Not privilege: dropping capabilities and networkMode none need no allowance.
    let doc =
        deployment("      capDrop: [ALL]\n      networkMode: none\n      privileged: false\n");
    assert!(problems(&[(FILE, &doc)]).is_empty());
}

#[test]
fn site_security_lists_are_checked() {
    let s = site("    allowedDevices: [dev/null]\n    allowedCapabilities: [FLY]\n");
    let doc = deployment("");
    let got = problems(&[(SITE, &s), (FILE, &doc)]);
    let fields: Vec<(&str, Option<usize>, &str)> = got
        .iter()
        .map(|(f, l, fl, _)| (f.as_str(), *l, fl.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            (SITE, Some(7), "spec.security.allowedDevices[0]"),
            (SITE, Some(8), "spec.security.allowedCapabilities[0]")
        ],
        "{got:#?}"
    );
}

#[test]
fn a_component_without_the_new_fields_keeps_its_spec_hash() {
    // Computed by the loader before these fields existed (commit 1b7cba1): the same
    // component, written with most older fields, must keep its hash.
    let doc = deployment("").replace("nginx:1.27", "registry.local:5000/web:1.0")
        + "      command: [\"nginx\", \"-g\", \"daemon off;\"]\n      env: {A: \"1\"}\n      ports: [\"8080:80\"]\n      volumes: [\"data:/data\"]\n      restart: always\n      healthcheck: {test: \"true\", interval: 5s}\n      resources: {memory: 64M, cpus: 0.5}\n      labels: {team: edge}\n      logging: {driver: local}\n";
    let c = web(&[(FILE, &doc)]);
    assert_eq!(
        c.spec_hash,
        "sha256:e06e4f40b5e903460096a5f83ccbbb7d9d23960ac6addc2dd941a7300fffa808"
    );
    // Explicit defaults are no change either.
    let explicit = doc.clone()
        + "      privileged: false\n      readOnly: false\n      init: false\n      networkMode: bridge\n      capAdd: []\n      tmpfs: []\n";
    assert_eq!(web(&[(FILE, &explicit)]).spec_hash, c.spec_hash);
    // Each new field is a spec change.
    let s = open_site();
    let mut seen = vec![c.spec_hash.clone()];
    for extra in [
        "      privileged: true\n",
        "      capAdd: [NET_ADMIN]\n",
        "      capDrop: [NET_RAW]\n",
        "      devices: [/dev/null]\n",
        "      user: \"1000\"\n",
        "      workingDir: /srv\n",
        "      readOnly: true\n",
        "      tmpfs: [/tmp]\n",
        "      init: true\n",
        "      stopSignal: SIGINT\n",
        "      stopGracePeriod: 5s\n",
        "      extraHosts: [\"gw:10.0.0.1\"]\n",
        "      shmSize: 1m\n",
        "      sysctls: {kernel.shmmax: 1}\n",
        "      ulimits: {nofile: 10}\n",
        "      gpus: 1\n",
    ] {
        let h = web(&[(SITE, &s), (FILE, &(doc.clone() + extra))]).spec_hash;
        assert!(!seen.contains(&h), "{extra}");
        seen.push(h);
    }
    let none = deployment("      networkMode: none\n");
    assert_ne!(
        web(&[(FILE, &none)]).spec_hash,
        web(&[(FILE, &deployment(""))]).spec_hash
    );
}

#[test]
fn the_agent_refuses_bad_values_in_a_desired_document() {
    let ok = Component {
        name: "web".into(),
        image: "nginx:1.27".into(),
        ..Component::default()
    };
    let cases: Vec<(Component, &str)> = vec![
        (
            Component {
                cap_add: vec!["CAP_FLY".into()],
                ..ok.clone()
            },
            "unknown capability",
        ),
        (
            Component {
                devices: vec![device("/dev/null", "/dev/null", "x")],
                ..ok.clone()
            },
            "rwm",
        ),
        (
            Component {
                stop_grace_period_ms: Some(3_600_001),
                ..ok.clone()
            },
            "above the maximum",
        ),
        (
            Component {
                shm_size_bytes: Some(0),
                ..ok.clone()
            },
            "shm size",
        ),
        (
            Component {
                sysctls: [("vm.swappiness".to_owned(), "1".to_owned())].into(),
                ..ok.clone()
            },
            "not namespaced",
        ),
        (
            Component {
                gpus: Some(Gpus::Count(0)),
                ..ok.clone()
            },
            "gpus",
        ),
        (
            Component {
                user: Some("a b".into()),
                ..ok.clone()
            },
            "not a user",
        ),
        (
            Component {
                extra_hosts: vec!["x".into()],
                ..ok.clone()
            },
            "extra host",
        ),
        (
            Component {
                tmpfs: [("tmp".to_owned(), String::new())].into(),
                ..ok.clone()
            },
            "tmpfs",
        ),
        (
            Component {
                stop_signal: Some("SIGFOO".into()),
                ..ok.clone()
            },
            "signal",
        ),
        (
            Component {
                ulimits: [("nofile".to_owned(), Ulimit { soft: 2, hard: 1 })].into(),
                ..ok.clone()
            },
            "ulimit",
        ),
        (
            Component {
                working_dir: Some("srv".into()),
                ..ok.clone()
            },
            "absolute",
        ),
    ];
    assert_eq!(schemas::host::check(&ok), Ok(()));
    for (c, want) in cases {
        let e = schemas::host::check(&c).expect_err(want).to_string();
        assert!(e.contains(want), "{e} should contain {want}");
    }
}
