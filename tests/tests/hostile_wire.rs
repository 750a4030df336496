//! The real `lo` binary against hostile input with a real broker (ours, and Mosquitto for the
//! ACL): nothing a message, a broker or a configuration value does may stop the site, wedge a
//! node or print a secret.

use harness::{
    bin, free_port, mosquitto_sub_retained, output_within, require_mosquitto, start_broker,
    wait_for, GitRepo, Proc,
};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn http(port: u16, path: &str, auth: Option<&str>) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|x| x.1.to_owned())?;
    Some((code, body))
}

fn mosquitto_pub(port: u16, user: Option<(&str, &str)>, topic: &str, payload: &[u8]) {
    publish(port, user, topic, payload, true);
}

fn publish(port: u16, user: Option<(&str, &str)>, topic: &str, payload: &[u8], retain: bool) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic]);
    if retain {
        cmd.arg("-r");
    }
    if let Some((u, p)) = user {
        cmd.args(["-u", u, "-P", p]);
    }
    if payload.is_empty() {
        cmd.arg("-n");
    } else {
        cmd.arg("-m").arg(String::from_utf8_lossy(payload).as_ref());
    }
    let _ = output_within(&mut cmd, Duration::from_secs(10));
}

/// Every retained message under `filter` as `topic payload` lines, as `user` sees them.
fn retained(port: u16, user: (&str, &str), filter: &str) -> String {
    let out = output_within(
        Command::new("mosquitto_sub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-u",
            user.0,
            "-P",
            user.1,
            "-t",
            filter,
            "-v",
            "--retained-only",
            "-W",
            "2",
        ]),
        Duration::from_secs(10),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lo_acl(args: &[&str]) -> String {
    let out = output_within(
        Command::new(bin("lo")).arg("acl").args(args),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn mosquitto_acl_from_lo_acl_keeps_each_node_inside_its_own_site_and_name() {
    if !require_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Two sites with a node of the same name, one broker.
    let acl = format!(
        "{}\n{}",
        lo_acl(&["--site", "s1", "--node", "a", "--node", "b"]),
        lo_acl(&["--site", "s2", "--node", "a"])
    );
    let acl_file = dir.path().join("acl");
    std::fs::write(&acl_file, &acl).expect("acl");
    let pw = dir.path().join("passwd");
    for (i, (u, p)) in [
        ("a@s1", "p1"),
        ("b@s1", "p2"),
        ("a@s2", "p3"),
        ("lo-s1", "l1"),
        ("lo-s2", "l2"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let out = output_within(cmd.arg("-b").arg(&pw).args([u, p]), Duration::from_secs(10));
        assert!(out.status.success(), "{out:?}");
    }
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npersistence false\npassword_file {}\nacl_file {}\n",
            pw.display(),
            acl_file.display()
        ),
    )
    .expect("conf");
    let mut cmd = Command::new("mosquitto");
    cmd.arg("-c").arg(&conf);
    let _mosq = Proc::spawn("mosquitto", cmd, dir.path());
    harness::wait_port(port);

    let a1 = Some(("a@s1", "p1"));
    // Node a of s1 tries another site's node a, a sibling node, and the LO's topics.
    mosquitto_pub(port, a1, "fleet/s2/nodes/a/status", b"{\"spoof\":1}");
    mosquitto_pub(port, a1, "fleet/s1/nodes/b/status", b"{\"spoof\":2}");
    mosquitto_pub(port, a1, "fleet/s1/nodes/a/desired", b"{\"spoof\":3}");
    mosquitto_pub(port, a1, "fleet/s1/lo/status", b"{\"spoof\":4}");
    // Its own report goes through; so do the LOs' desired documents.
    mosquitto_pub(port, a1, "fleet/s1/nodes/a/status", b"{\"own\":1}");
    mosquitto_pub(
        port,
        Some(("lo-s1", "l1")),
        "fleet/s1/nodes/a/desired",
        b"{\"d\":1}",
    );
    mosquitto_pub(
        port,
        Some(("lo-s2", "l2")),
        "fleet/s2/nodes/a/desired",
        b"{\"d\":2}",
    );

    let s1 = retained(port, ("lo-s1", "l1"), "fleet/s1/#");
    let s2 = retained(port, ("lo-s2", "l2"), "fleet/s2/#");
    assert!(
        !s1.contains("spoof") && !s2.contains("spoof"),
        "s1:\n{s1}\ns2:\n{s2}"
    );
    assert!(s1.contains("fleet/s1/nodes/a/status {\"own\":1}"), "{s1}");
    assert!(s1.contains("fleet/s1/nodes/a/desired {\"d\":1}"), "{s1}");
    assert!(s2.contains("fleet/s2/nodes/a/desired {\"d\":2}"), "{s2}");
    // Each node reads only its own desired document.
    let a1_reads = retained(port, ("a@s1", "p1"), "fleet/+/nodes/a/desired");
    assert_eq!(a1_reads.trim(), "fleet/s1/nodes/a/desired {\"d\":1}");
    assert!(retained(port, ("a@s2", "p3"), "fleet/s1/#").is_empty());
    // An LO cannot read another site.
    assert!(retained(port, ("lo-s1", "l1"), "fleet/s2/#").is_empty());
}

#[test]
fn invalid_configuration_exits_with_2_and_never_echoes_a_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(bin("lo"));
        cmd.args(["run", "--repo", "/nonexistent", "--state-dir"])
            .arg(&state)
            .args(extra)
            .env("LO_SITE", "s1")
            .env_remove("LO_HTTP_AUTH");
        for (k, v) in env {
            cmd.env(k, v);
        }
        output_within(&mut cmd, Duration::from_secs(20))
    };
    // (flags, environment)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case<'_>; 7] = [
        (&["--broker", "mqtt://lo:hunter2@127.0.0.1:notaport"], &[]),
        (&[], &[("LO_TOPIC_ROOT", "#")]),
        (&[], &[("LO_TOPIC_ROOT", "/fleet")]),
        (&["--site", "a/b"], &[]),
        (&[], &[("LO_HTTP_AUTH", "hunter2")]),
        (&[], &[("LO_MAX_PACKET_SIZE", "10")]),
        (&[], &[("LO_POLL_INTERVAL", "0s")]),
    ];
    for (extra, env) in cases {
        let out = run(extra, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?} {env:?}: {stderr}");
        assert!(stderr.contains("invalid configuration"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

fn site_files(repo: &GitRepo, site: &str) -> String {
    let node =
        |n: &str| format!("apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: {n}\n");
    repo.write(
        &format!("sites/{site}/nodes.yaml"),
        &format!("{}---\n{}", node("n1"), node("n2")),
    );
    repo.write(
        &format!("sites/{site}/web.yaml"),
        "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  components:\n    - name: web\n      image: reg/web:1\n",
    );
    repo.commit("site")
}

fn start_lo(dir: &Path, site: &str, repo: &str, broker_port: u16, http_port: u16) -> Proc {
    let mut cmd = Command::new(bin("lo"));
    cmd.args(["run", "--site", site, "--repo", repo, "--broker"])
        .arg(format!("mqtt://127.0.0.1:{broker_port}"))
        .arg("--state-dir")
        .arg(dir.join("lo-state"))
        .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
        .env("LO_POLL_INTERVAL", "500ms")
        .env("LO_HEARTBEAT_TIMEOUT", "3s")
        .env("LO_HTTP_AUTH", "ops:pw")
        .env("RUST_LOG", "info");
    Proc::spawn("lo", cmd, dir)
}

const AUTH: &str = "Basic b3BzOnB3"; // ops:pw

#[test]
fn retained_max_generation_and_garbage_do_not_wedge_nodes_and_lo_stays_ready() {
    if !require_mosquitto() {
        return; // mosquitto_pub / mosquitto_sub are the hostile and the probing clients
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _broker = start_broker(port, dir.path());
    let repo = GitRepo::new();
    let commit = site_files(&repo, "s1");
    let http_port = free_port();
    let mut lo = start_lo(dir.path(), "s1", &repo.url(), port, http_port);
    wait_for("lo ready", T, || {
        http(http_port, "/readyz", None).filter(|(c, _)| *c == 200)
    });
    let topic = |n: &str| format!("fleet/s1/nodes/{n}/desired");
    let ours = wait_for("n1 desired", T, || {
        mosquitto_sub_retained(port, &topic("n1")).filter(|d| d["revision"]["commit"] == commit)
    });
    let ours2 = wait_for("n2 desired", T, || {
        mosquitto_sub_retained(port, &topic("n2"))
    });
    // One unsigned retained document with u64::MAX, and garbage on the other node.
    let mut evil = ours.clone();
    evil["generation"] = serde_json::json!(u64::MAX);
    mosquitto_pub(port, None, &topic("n1"), evil.to_string().as_bytes());
    mosquitto_pub(port, None, &topic("n2"), b"garbage");
    // A fresh agent gets the LO's documents again, not the forgery.
    wait_for("n1 re-asserted", T, || {
        mosquitto_sub_retained(port, &topic("n1")).filter(|d| *d == ours)
    });
    wait_for("n2 re-asserted", T, || {
        mosquitto_sub_retained(port, &topic("n2")).filter(|d| *d == ours2)
    });
    // A new commit still gets the next generation (no wrap to 0, no jump).
    repo.write(
        "sites/s1/web.yaml",
        "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  components:\n    - name: web\n      image: reg/web:2\n",
    );
    let c2 = repo.commit("web 2");
    let next = wait_for("n1 next generation", T, || {
        mosquitto_sub_retained(port, &topic("n1")).filter(|d| d["revision"]["commit"] == c2)
    });
    assert_eq!(
        next["generation"].as_u64(),
        ours["generation"].as_u64().map(|g| g + 1)
    );
    assert_eq!(http(http_port, "/readyz", None).map(|r| r.0), Some(200));
    assert!(lo.running());
    let (code, metrics) = http(http_port, "/metrics", Some(AUTH)).expect("metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("lo_generations_ignored_total 1"),
        "{metrics}"
    );
}

#[test]
fn five_thousand_invented_nodes_keep_lo_status_bounded_and_lo_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _broker = start_broker(port, dir.path());
    let repo = GitRepo::new();
    site_files(&repo, "s1");
    let http_port = free_port();
    let mut lo = start_lo(dir.path(), "s1", &repo.url(), port, http_port);
    wait_for("lo ready", T, || {
        http(http_port, "/readyz", None).filter(|(c, _)| *c == 200)
    });
    // One node's login publishes 5,000 retained presences of invented nodes.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let publish_all = |delete: bool| {
        rt.block_on(async {
            let mut opts = rumqttc::MqttOptions::new("n1", "127.0.0.1", port);
            opts.set_keep_alive(Duration::from_secs(5));
            let (client, mut ev) = rumqttc::AsyncClient::new(opts, 10_000);
            let poll = tokio::spawn(async move {
                let mut acked = 0;
                while acked < 5_000 {
                    match ev.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
                        Ok(_) => {}
                        Err(e) => panic!("attacker connection: {e}"),
                    }
                }
            });
            for i in 0..5_000 {
                let payload = if delete {
                    Vec::new()
                } else {
                    br#"{"schema":"fleet.presence/v1","online":true,"epoch":1}"#.to_vec()
                };
                client
                    .publish(
                        format!("fleet/s1/nodes/ghost-{i}/online"),
                        rumqttc::QoS::AtLeastOnce,
                        true,
                        payload,
                    )
                    .await
                    .expect("publish");
            }
            tokio::time::timeout(T, poll)
                .await
                .expect("all acknowledged")
                .expect("poller");
        })
    };
    publish_all(false);
    let status = wait_for("unknown nodes bounded", T, || {
        let (_, body) = http(http_port, "/status", Some(AUTH))?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["unknownNodesUntracked"].as_u64()? >= 4_000).then_some(v)
    });
    assert_eq!(status["unknownNodesCount"], 1_000);
    assert!(status["unknownNodes"]
        .as_array()
        .is_some_and(|a| a.len() <= 100));
    // The retained lo/status fits the broker and says the same.
    let retained = wait_for("lo/status retained", T, || {
        mosquitto_sub_retained_with_rumqttc(&rt, port, "fleet/s1/lo/status")
            .filter(|v| v["unknownNodesCount"] == 1_000)
    });
    assert!(retained.to_string().len() < 192 * 1024);
    assert_eq!(http(http_port, "/readyz", None).map(|r| r.0), Some(200));
    // The topics are deleted: the LO forgets them.
    publish_all(true);
    wait_for("unknown nodes forgotten", T, || {
        let (_, body) = http(http_port, "/status", Some(AUTH))?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v.get("unknownNodes").is_none() && v.get("unknownNodesCount").is_none()).then_some(())
    });
    assert_eq!(http(http_port, "/readyz", None).map(|r| r.0), Some(200));
    assert!(lo.running());
    assert!(!lo.log().contains("mqtt disconnected"), "{}", lo.log());
}

/// The retained message on `topic`, read with rumqttc (our broker; no Mosquitto needed).
fn mosquitto_sub_retained_with_rumqttc(
    rt: &tokio::runtime::Runtime,
    port: u16,
    topic: &str,
) -> Option<serde_json::Value> {
    rt.block_on(async {
        let mut opts = rumqttc::MqttOptions::new(harness::unique("probe"), "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut ev) = rumqttc::AsyncClient::new(opts, 10);
        client
            .subscribe(topic, rumqttc::QoS::AtLeastOnce)
            .await
            .ok()?;
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = ev.poll().await {
                    return serde_json::from_slice(&p.payload).ok();
                }
            }
        })
        .await
        .ok()
        .flatten();
        let _ = client.disconnect().await;
        got
    })
}

#[test]
fn git_token_never_appears_in_log_status_or_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _broker = start_broker(port, dir.path());
    let http_port = free_port();
    let closed = free_port();
    let mut lo = start_lo(
        dir.path(),
        "s1",
        &format!("https://lo:tok3n-s3cret@127.0.0.1:{closed}/acme/fleet.git"),
        port,
        http_port,
    );
    let status = wait_for("source error in the status", T, || {
        let (c, body) = http(http_port, "/status", Some(AUTH))?;
        (c == 200 && body.contains("lastError")).then_some(body)
    });
    assert!(!status.contains("tok3n-s3cret"), "{status}");
    lo.terminate();
    let log = lo.log();
    assert!(log.contains("git source failed"), "{log}");
    assert!(!log.contains("tok3n-s3cret"), "{log}");
    let audit =
        std::fs::read_to_string(dir.path().join("lo-state/audit/audit.log")).expect("audit log");
    assert!(!audit.contains("tok3n-s3cret"), "{audit}");
}

fn node_online(status: &serde_json::Value, node: &str) -> Option<bool> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node"] == node)?["online"]
        .as_bool()
}

#[test]
fn spoofed_max_epoch_presence_does_not_pin_a_node_offline() {
    if !require_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _broker = start_broker(port, dir.path());
    let repo = GitRepo::new();
    site_files(&repo, "s1");
    let http_port = free_port();
    let mut lo = start_lo(dir.path(), "s1", &repo.url(), port, http_port);
    wait_for("lo ready", T, || {
        http(http_port, "/readyz", None).filter(|(c, _)| *c == 200)
    });
    let online = "fleet/s1/nodes/n1/online";
    let hb = "fleet/s1/nodes/n1/heartbeat";
    let heartbeat = |seq: u64| {
        let p = format!(
            "{{\"schema\":\"fleet.heartbeat/v1\",\"seq\":{seq},\"uptimeS\":1,\"observedGeneration\":0,\"converged\":false}}"
        );
        publish(port, None, hb, p.as_bytes(), false);
    };
    let presence = |on: bool, epoch: u64| {
        let p = format!("{{\"schema\":\"fleet.presence/v1\",\"online\":{on},\"epoch\":{epoch}}}");
        mosquitto_pub(port, None, online, p.as_bytes());
    };
    let status_of_n1 = |want: bool| {
        wait_for(&format!("n1 online={want}"), T, || {
            let (_, body) = http(http_port, "/status", Some(AUTH))?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (node_online(&v, "n1")? == want).then_some(())
        })
    };
    presence(true, 7);
    heartbeat(1);
    status_of_n1(true);
    // Someone else's retained Will-like presences with huge epochs.
    presence(false, u64::MAX);
    presence(false, (1 << 53) - 1);
    status_of_n1(false);
    // The real agent speaks: online again, whatever the forged epoch said.
    heartbeat(2);
    status_of_n1(true);
    // Its next session (epoch 8) is accepted, not refused as older than the forgery.
    presence(true, 8);
    heartbeat(3);
    status_of_n1(true);
    assert!(lo.running());
    let (_, metrics) = http(http_port, "/metrics", Some(AUTH)).expect("metrics");
    assert!(
        metrics.contains("lo_messages_rejected_total{kind=\"out_of_range\"} 1"),
        "{metrics}"
    );
}
