//! Image garbage collection against the fake runtime (paused tokio time): what goes, what
//! stays, what survives an agent restart, and the switch that turns it off.

mod common;

use common::*;
use en_agent::runtime::fake::FakeRuntime;
use en_agent::{AgentHandle, Config};
use schemas::wire::NodeStatus;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(3_600);
const MB: u64 = 1 << 20;

struct Rig {
    fake: FakeRuntime,
    dir: tempfile::TempDir,
    agent: Option<(AgentHandle, CancellationToken)>,
}

impl Rig {
    fn new() -> Rig {
        let fake = FakeRuntime::new();
        for v in ["v1", "v2", "v3"] {
            fake.add_registry_image_sized(&format!("reg/web:{v}"), 10 * MB);
        }
        Rig {
            fake,
            dir: tempfile::tempdir().expect("tempdir"),
            agent: None,
        }
    }

    fn config(&self) -> Config {
        let mut c = Config::new(SITE, NODE);
        c.state_dir = self.dir.path().to_owned();
        c
    }

    fn start(&mut self, config: Config) {
        let stop = CancellationToken::new();
        let agent =
            en_agent::spawn(config, Arc::new(self.fake.clone()), stop.clone()).expect("spawn");
        self.agent = Some((agent, stop));
    }

    async fn stop(&mut self) {
        if let Some((a, stop)) = self.agent.take() {
            stop.cancel();
            a.wait().await.expect("agent stops");
        }
    }

    fn deploy(&self, generation: u64, image: &str) {
        let d = doc(
            generation,
            vec![deployment("app", vec![comp("web", image)])],
        );
        self.agent
            .as_ref()
            .expect("agent")
            .0
            .submit_desired(bytes(&d));
    }

    async fn until(&self, what: &str, pred: impl FnMut(&NodeStatus) -> bool) -> NodeStatus {
        let agent = &self.agent.as_ref().expect("agent").0;
        match agent.wait_status(WAIT, pred).await {
            Some(s) => s,
            None => panic!(
                "timed out waiting for {what}; last status: {:#?}\nimages: {:?}\ncalls: {:?}",
                agent.status().borrow().clone(),
                self.fake.images(),
                self.fake.calls()
            ),
        }
    }

    async fn converged(&self, generation: u64) -> NodeStatus {
        self.until(&format!("generation {generation}"), |s| {
            s.converged && s.observed_generation == generation
        })
        .await
    }

    fn images(&self) -> Vec<String> {
        self.fake.images()
    }
}

#[tokio::test(start_paused = true)]
async fn v1_v2_v3_with_keep_1_removes_v1_keeps_v2_and_never_touches_foreign_images() {
    let mut rig = Rig::new();
    // The user's own images: one a container of theirs runs, one just lying there.
    rig.fake.add_local_image("user/tool:1", 5 * MB);
    rig.fake
        .add_foreign_container("tool", "user/tool:1", BTreeMap::new());
    rig.fake.add_local_image("user/spare:1", 7 * MB);
    rig.start(rig.config());

    rig.deploy(1, "reg/web:v1");
    rig.converged(1).await;
    rig.deploy(2, "reg/web:v2");
    rig.converged(2).await;
    // Keep 1: v1 is v2's previous version, nothing goes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(rig.fake.count_calls("remove-image"), 0);

    // The record of pulled images survives a restart.
    rig.stop().await;
    assert!(rig.dir.path().join("images.json").exists());
    rig.start(rig.config());
    rig.deploy(3, "reg/web:v3");
    rig.converged(3).await;
    let s = rig
        .until("v1 removed", |s| s.agent.images_removed == 1)
        .await;
    assert_eq!(s.agent.image_bytes_freed, 10 * MB);
    let images = rig.images();
    assert!(!images.contains(&"reg/web:v1".to_owned()), "{images:?}");
    for keep in ["reg/web:v2", "reg/web:v3", "user/tool:1", "user/spare:1"] {
        assert!(images.contains(&keep.to_owned()), "{keep} kept: {images:?}");
    }
    let removals: Vec<String> = rig
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("remove-image"))
        .collect();
    assert_eq!(removals.len(), 1, "{removals:?}");

    // Later runs (once per interval) find nothing more to remove, and write nothing.
    use std::os::unix::fs::MetadataExt as _;
    let path = rig.dir.path().join("images.json");
    let record = std::fs::read(&path).expect("record");
    let inode = std::fs::metadata(&path).expect("record").ino();
    tokio::time::sleep(Duration::from_secs(3 * 600)).await;
    assert_eq!(rig.fake.count_calls("remove-image"), 1);
    assert_eq!(std::fs::read(&path).expect("record"), record);
    // An atomic write renames a new file in: the same inode means no write at all.
    assert_eq!(std::fs::metadata(&path).expect("record").ino(), inode);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_image_an_unmanaged_container_uses_stays_until_that_container_is_gone() {
    let mut rig = Rig::new();
    let mut config = rig.config();
    config.image_gc.keep_previous = 0;
    rig.start(config);
    rig.deploy(1, "reg/web:v1");
    rig.converged(1).await;
    // The user starts a container of their own from the agent's v1 image.
    let id = rig
        .fake
        .add_foreign_container("mine", "reg/web:v1", BTreeMap::new());
    rig.deploy(2, "reg/web:v2");
    rig.converged(2).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(rig.images().contains(&"reg/web:v1".to_owned()));
    assert_eq!(
        rig.fake.count_calls("remove-image"),
        0,
        "never even tried: {:?}",
        rig.fake.calls()
    );
    // Once it is gone, the next run (within the interval) removes v1.
    rig.fake.remove_by_hand(&id);
    rig.until("v1 removed", |s| s.agent.images_removed == 1)
        .await;
    assert_eq!(rig.images(), ["reg/web:v2"]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_image_present_before_the_agent_pulled_it_is_not_the_agents() {
    let mut rig = Rig::new();
    let mut config = rig.config();
    config.image_gc.keep_previous = 0;
    rig.start(config);
    // Someone pulled v1 by hand before; the agent's refresh pull brings nothing new.
    rig.fake.add_registry_image_sized("reg/web:v1", 10 * MB);
    let pulled = rig.fake.clone();
    {
        use en_agent::runtime::ContainerRuntime;
        pulled.pull_image("reg/web:v1").await.expect("pull by hand");
    }
    rig.deploy(1, "reg/web:v1");
    rig.converged(1).await;
    rig.deploy(2, "reg/web:v2");
    rig.converged(2).await;
    tokio::time::sleep(Duration::from_secs(1_300)).await;
    assert!(rig.images().contains(&"reg/web:v1".to_owned()));
    assert_eq!(rig.fake.count_calls("remove-image"), 0);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn image_gc_off_removes_nothing() {
    let mut rig = Rig::new();
    let mut config = rig.config();
    config.image_gc.interval = None;
    config.image_gc.keep_previous = 0;
    rig.start(config);
    for (g, v) in [(1, "v1"), (2, "v2"), (3, "v3")] {
        rig.deploy(g, &format!("reg/web:{v}"));
        rig.converged(g).await;
    }
    tokio::time::sleep(Duration::from_secs(1_300)).await;
    assert_eq!(rig.images().len(), 3);
    assert_eq!(rig.fake.count_calls("remove-image"), 0);
    rig.stop().await;
}
