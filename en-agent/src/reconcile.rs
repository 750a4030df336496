//! The effectful half of convergence: observe the engine, execute one planned action,
//! record the outcome in the planner's [`Memory`].

use crate::plan::{self, Action, Memory, Observed, Plan};
use crate::retry::{ErrorKind, Limits, Retry};
use crate::runtime::spec::{CompKey, Identity, Ownership};
use crate::runtime::{ContainerRuntime, RuntimeError};
use schemas::wire::{DesiredState, ErrorInfo, FailurePolicy, RuntimeInfo};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Reconciler settings.
#[derive(Debug, Clone)]
pub struct ReconcileSettings {
    /// Grace before SIGKILL when stopping.
    pub stop_timeout: Duration,
    /// Free disk to keep after a pull; a pull that would go below is refused.
    pub disk_reserve_bytes: u64,
    /// The longest wait between two retries of a transient failure (`retry_max_backoff`).
    pub retry_max_backoff: Duration,
    /// Image garbage collection (`image_gc_interval`, `image_keep_previous`).
    pub image_gc: crate::images::GcSettings,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        ReconcileSettings {
            stop_timeout: Duration::from_secs(10),
            disk_reserve_bytes: 256 << 20,
            retry_max_backoff: crate::retry::DEFAULT_MAX_BACKOFF,
            image_gc: crate::images::GcSettings::default(),
        }
    }
}

/// What one executed action led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Done,
    /// Failed; recorded in memory.
    Failed(ErrorInfo),
    /// The engine is unreachable; nothing counted.
    Unreachable(String),
}

/// Observes and acts on one engine for one agent identity.
#[derive(Debug)]
pub struct Reconciler {
    rt: Arc<dyn ContainerRuntime>,
    /// Naming and ownership.
    pub identity: Identity,
    /// Retry and health memory.
    pub memory: Memory,
    settings: ReconcileSettings,
    /// The engine as last seen.
    pub runtime_info: RuntimeInfo,
    /// Image garbage collection and the record of the images pulled (in memory until
    /// [`Reconciler::with_image_ledger`]).
    pub images: crate::images::ImageGc,
}

impl Reconciler {
    /// A reconciler over `rt`.
    pub fn new(
        rt: Arc<dyn ContainerRuntime>,
        identity: Identity,
        settings: ReconcileSettings,
    ) -> Self {
        let kind = rt.kind().to_owned();
        let images = crate::images::ImageGc::new(settings.image_gc.clone(), Default::default());
        Reconciler {
            rt,
            identity,
            memory: Memory::default(),
            images,
            settings,
            runtime_info: RuntimeInfo {
                kind,
                version: None,
                reachable: false,
                error: None,
            },
        }
    }

    /// Keeps the record of the images pulled in `state_dir` (`images.json`), reading it now.
    pub fn with_image_ledger(mut self, state_dir: &std::path::Path) -> Self {
        self.images.ledger = crate::images::Ledger::load(state_dir);
        self
    }

    /// Runs image garbage collection when it is due: the node settled on `desired` (see
    /// [`crate::images::settled`]) and the engine reachable. An unreachable engine marks
    /// the runtime so; the run is tried again later.
    pub async fn collect_images(
        &mut self,
        desired: Option<&DesiredState>,
        observed: &Observed,
        plan: &Plan,
        now: Instant,
    ) -> Option<crate::images::Summary> {
        let desired = desired?;
        if !self.runtime_info.reachable
            || !crate::images::settled(plan)
            || !self.images.due(desired.generation, now)
        {
            return None;
        }
        let rt = self.rt.clone();
        let r = self
            .images
            .run(rt.as_ref(), desired, observed, &self.identity, now)
            .await;
        self.mark(&r.as_ref().map(|_| ()).map_err(Clone::clone));
        match r {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(error = %e, "image garbage collection interrupted");
                None
            }
        }
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<dyn ContainerRuntime> {
        &self.rt
    }

    fn mark(&mut self, r: &Result<(), RuntimeError>) {
        match r {
            Err(RuntimeError::Unreachable(m)) => {
                self.runtime_info.reachable = false;
                self.runtime_info.error = Some(m.clone());
            }
            _ => {
                self.runtime_info.reachable = true;
                self.runtime_info.error = None;
            }
        }
    }

    /// Lists containers, the images that matter and our networks.
    pub async fn observe(
        &mut self,
        desired: Option<&DesiredState>,
    ) -> Result<Observed, RuntimeError> {
        let r = self.observe_inner(desired).await;
        self.mark(&r.as_ref().map(|_| ()).map_err(Clone::clone));
        r
    }

    async fn observe_inner(
        &mut self,
        desired: Option<&DesiredState>,
    ) -> Result<Observed, RuntimeError> {
        if self.runtime_info.version.is_none() || !self.runtime_info.reachable {
            let info = self.rt.info().await?;
            self.runtime_info.version = Some(info.version);
        }
        let containers = self.rt.list_containers().await?;
        let mut refs: Vec<String> = desired
            .map(|d| {
                d.deployments
                    .iter()
                    .flat_map(|d| d.components.iter().map(|c| c.image.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for c in &containers {
            if matches!(self.identity.classify(c), Ownership::Mine(_)) {
                refs.push(c.image_id.clone());
            }
        }
        refs.sort();
        refs.dedup();
        let mut images = BTreeMap::new();
        for r in refs {
            if r.is_empty() {
                continue;
            }
            if let Some(i) = self.rt.inspect_image(&r).await? {
                images.insert(r, i);
            }
        }
        let networks = self
            .rt
            .list_networks(&self.identity.owner_labels())
            .await?
            .into_iter()
            .collect();
        Ok(Observed {
            containers,
            images,
            networks,
        })
    }

    /// Plans against an observation.
    pub fn plan(
        &mut self,
        desired: Option<&DesiredState>,
        observed: &Observed,
        now: Instant,
    ) -> Plan {
        if let Some(d) = desired {
            self.memory.new_generation(d.generation);
            for crash in
                self.memory
                    .observe_crashes(d, observed, &self.identity, now, fastrand::f64())
            {
                // Docker keeps restarting a failed one (up to once a minute): stay quiet then.
                if crash.crashes <= crash.limit {
                    tracing::warn!(
                        deployment = %crash.key.0,
                        component = %crash.key.1,
                        container = %crash.container,
                        crashes = crash.crashes,
                        limit = crash.limit,
                        exit_code = crash.exit_code,
                        "container crashed"
                    );
                } else {
                    tracing::debug!(deployment = %crash.key.0, component = %crash.key.1, crashes = crash.crashes, exit_code = crash.exit_code, "container crashed again");
                }
            }
        }
        let p = plan::plan(desired, observed, &self.memory, &self.identity, now);
        self.memory.settle(&p);
        p
    }

    fn policy(desired: Option<&DesiredState>, key: &CompKey) -> FailurePolicy {
        desired
            .and_then(|d| d.deployments.iter().find(|d| d.name == key.0))
            .map(|d| d.policy)
            .unwrap_or_default()
    }

    fn spec_hash_of(desired: Option<&DesiredState>, key: &CompKey) -> String {
        desired
            .and_then(|d| d.deployments.iter().find(|d| d.name == key.0))
            .and_then(|d| d.components.iter().find(|c| c.name == key.1))
            .map(|c| c.spec_hash.clone())
            .unwrap_or_default()
    }

    /// Executes one action and records its outcome.
    #[tracing::instrument(level = "debug", skip_all, fields(node = %self.identity.node))]
    pub async fn execute(
        &mut self,
        action: &Action,
        desired: Option<&DesiredState>,
        now: Instant,
    ) -> Outcome {
        let result = self.run_action(action, desired, now).await;
        self.mark(&result);
        let Some(key) = action.key().cloned() else {
            return match result {
                Ok(()) => Outcome::Done,
                Err(RuntimeError::Unreachable(m)) => Outcome::Unreachable(m),
                Err(e) => {
                    tracing::warn!(error = %e, "network cleanup failed");
                    Outcome::Failed(e.to_info())
                }
            };
        };
        let hash = Self::spec_hash_of(desired, &key);
        match result {
            Ok(()) => {
                match action {
                    Action::Pull { .. } => self.memory.entry(&key, &hash).refreshed = true,
                    Action::Remove { id, .. } if hash.is_empty() => {
                        tracing::info!(deployment = %key.0, component = %key.1, container = %id, "removed container no longer desired");
                        self.memory
                            .removed
                            .entry(key.0.clone())
                            .or_default()
                            .insert(key.1.clone());
                    }
                    _ => {}
                }
                Outcome::Done
            }
            Err(e) => self.failed(action, &key, &hash, e, desired, now),
        }
    }

    /// Records a failed action of a component as the retry policy decides.
    fn failed(
        &mut self,
        action: &Action,
        key: &CompKey,
        hash: &str,
        e: RuntimeError,
        desired: Option<&DesiredState>,
        now: Instant,
    ) -> Outcome {
        if let Action::Pull {
            refresh: true,
            image,
            ..
        } = action
        {
            if e.kind() != ErrorKind::EngineDown {
                // The image is present: a failed refresh is not a failure.
                tracing::info!(image = %image, error = %e, "could not refresh image tag, using the local image");
                self.memory.entry(key, hash).refreshed = true;
                return Outcome::Done;
            }
        }
        let limits = Limits {
            policy: Self::policy(desired, key),
            max_backoff: self.settings.retry_max_backoff,
        };
        let retry = self.memory.record_failure(
            key,
            hash,
            &e,
            limits,
            now,
            SystemTime::now(),
            fastrand::f64(),
        );
        let info = e.to_info();
        match retry {
            Retry::NotCounted => {
                let m = match e {
                    RuntimeError::Unreachable(m) => m,
                    other => other.to_string(),
                };
                tracing::warn!(error = %m, "docker unreachable");
                return Outcome::Unreachable(m);
            }
            Retry::GiveUp { attempts } => {
                tracing::warn!(deployment = %key.0, component = %key.1, attempts, code = info.code, error = %info.message, "giving up until the desired state changes");
            }
            Retry::Retrying {
                attempts, delay, ..
            } => {
                tracing::warn!(deployment = %key.0, component = %key.1, attempts, code = info.code, error = %info.message, retry_in_ms = delay.as_millis() as u64, "failed for a transient cause, will keep retrying");
            }
            Retry::At {
                attempts, delay, ..
            } => {
                tracing::info!(deployment = %key.0, component = %key.1, attempts, code = info.code, error = %info.message, retry_in_ms = delay.as_millis() as u64, "operation failed, will retry");
            }
        }
        Outcome::Failed(info)
    }

    async fn run_action(
        &mut self,
        action: &Action,
        desired: Option<&DesiredState>,
        now: Instant,
    ) -> Result<(), RuntimeError> {
        let rt = self.rt.clone();
        match action {
            Action::Pull { key, image, .. } => {
                tracing::info!(deployment = %key.0, component = %key.1, image = %image, "pulling image");
                if let Some(free) = rt.free_disk_bytes().await? {
                    let size = rt.image_size_hint(image).await.unwrap_or(0);
                    let need = size.saturating_add(self.settings.disk_reserve_bytes);
                    if free < need {
                        return Err(RuntimeError::NoDisk(format!(
                            "refusing to pull {image}: {} MiB free, {} MiB needed ({} MiB image + {} MiB reserve)",
                            free >> 20,
                            need >> 20,
                            size >> 20,
                            self.settings.disk_reserve_bytes >> 20
                        )));
                    }
                }
                let before = rt.inspect_image(image).await?.map(|i| i.id);
                rt.pull_image(image).await?;
                // Recorded for image garbage collection (never fatal: the pull worked).
                if let Ok(Some(after)) = rt.inspect_image(image).await {
                    self.images
                        .record_pull(key, image, before.as_deref(), &after.id);
                }
                Ok(())
            }
            Action::Create { key, spec } => {
                tracing::info!(deployment = %key.0, component = %key.1, name = %spec.name, "creating container");
                let mut labels = self.identity.owner_labels();
                labels.insert(crate::runtime::label::DEPLOYMENT.into(), key.0.clone());
                rt.ensure_network(&spec.network, &labels).await?;
                for m in &spec.mounts {
                    if m.kind == schemas::component::VolumeKind::Volume {
                        rt.ensure_volume(&m.source, &labels).await?;
                    }
                }
                rt.create_container(spec).await.map(|_| ())
            }
            Action::Start { key, id } => {
                tracing::info!(deployment = %key.0, component = %key.1, container = %id, "starting container");
                rt.start_container(id).await
            }
            Action::RestartUnhealthy { key, id } => {
                let hash = Self::spec_hash_of(desired, key);
                let policy = Self::policy(desired, key);
                let restarts =
                    self.memory
                        .record_health_restart(key, &hash, id, policy, now, fastrand::f64());
                tracing::warn!(deployment = %key.0, component = %key.1, container = %id, restarts, "restarting unhealthy container");
                rt.restart_container(id, self.settings.stop_timeout).await
            }
            Action::Remove { key, id, reason } => {
                tracing::info!(deployment = %key.0, component = %key.1, container = %id, reason, "removing container");
                rt.remove_container(id, self.settings.stop_timeout).await
            }
            Action::RemoveNetwork { name } => {
                tracing::info!(network = %name, "removing network");
                rt.remove_network(name).await
            }
        }
    }
}
