//! Wiring: [`start`] opens the state directory and audit log, serves HTTP, starts the MQTT
//! session, the source poller ([`crate::source::poll`]) and the [`crate::engine`] task, and
//! returns once listening. [`run`] opens the Git source ([`open_git_source`]) and starts
//! with it; tests hand [`start`] any other [`DesiredSource`].

use crate::audit::Audit;
use crate::config::Config;
use crate::engine::{Engine, EngineParts};
use crate::mqtt::{self, MqttSettings};
use crate::shared::Shared;
use crate::source::poll::poll_source;
use crate::source::{DesiredSource, GitSource, SourceError};
use crate::status::VERSION;
use crate::store::{Store, StoreError};
use schemas::{BrokerUrl, Topics};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Errors that stop the LO.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// State directory.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Git mirror.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// HTTP listener or audit log.
    #[error("{context}: {source}")]
    Io {
        /// What.
        context: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running LO.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP endpoints listen.
    pub http_addr: SocketAddr,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Ends when the LO has shut down.
    pub join: tokio::task::JoinHandle<()>,
}

/// Runs the LO on its Git source until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), AppError> {
    // Configuration, broker address and TLS files are checked before Git is reached.
    check(&cfg)?;
    let source = open_git_source(&cfg).await?;
    let running = start(cfg, source, shutdown).await?;
    let _ = running.join.await;
    Ok(())
}

/// The configuration validated, the broker address parsed and its transport (TLS) set up.
fn check(cfg: &Config) -> Result<(BrokerUrl, mqtt::Transport), AppError> {
    cfg.validate()?;
    let broker: BrokerUrl = cfg
        .broker
        .parse()
        .map_err(|e: schemas::BrokerUrlError| crate::config::ConfigError::Value(e.to_string()))?;
    let transport = mqtt::Transport::for_broker(&broker, cfg.tls_ca_file.as_deref())
        .map_err(|e| crate::config::ConfigError::Value(e.to_string()))?;
    Ok((broker, transport))
}

/// Opens (or creates) the Git mirror of `cfg.repo` in the state directory, bounded by
/// `cfg.limits`.
pub async fn open_git_source(cfg: &Config) -> Result<Box<dyn DesiredSource>, AppError> {
    let mirror = cfg.state_dir.join("mirror.git");
    let (url, branch, auth) = (cfg.repo.clone(), cfg.branch.clone(), cfg.git.clone());
    let source = tokio::task::spawn_blocking(move || GitSource::open(&mirror, &url, &branch, auth))
        .await
        .map_err(|e| AppError::Io {
            context: "git mirror".into(),
            source: std::io::Error::other(e.to_string()),
        })??;
    Ok(Box::new(source.with_limits(cfg.limits.clone())))
}

/// Starts the LO on `source`: state dir, HTTP, MQTT, source poller, engine. Returns once
/// listening.
pub async fn start(
    cfg: Config,
    source: Box<dyn DesiredSource>,
    shutdown: CancellationToken,
) -> Result<Running, AppError> {
    let (broker, transport) = check(&cfg)?;
    let store = Store::open(&cfg.state_dir)?;
    let audit = Audit::open(
        &cfg.state_dir.join("audit"),
        cfg.audit.max_bytes,
        cfg.audit.keep,
    )
    .map_err(|source| AppError::Io {
        context: "audit log".into(),
        source,
    })?;
    let shared = Arc::new(Shared::default());
    let listener = tokio::net::TcpListener::bind(&cfg.http_listen)
        .await
        .map_err(|source| AppError::Io {
            context: format!("http listen {}", cfg.http_listen),
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| AppError::Io {
        context: "http listen".into(),
        source,
    })?;
    let auth = cfg
        .http_credentials()?
        .map(|(u, p)| crate::http::Credentials::new(&u, &p));
    if auth.is_none() && !http_addr.ip().is_loopback() {
        tracing::warn!(listen = %http_addr, "http endpoints listen beyond loopback without http_auth: /status and POST /sync are open to the network");
    }
    let router = crate::http::router_with_auth(shared.clone(), auth);
    let http_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { http_shutdown.cancelled().await });
        if let Err(e) = served.await {
            tracing::error!(error = %e, "http server failed");
        }
    });

    let topics = Topics::new(&cfg.topic_root);
    let (mqtt_tx, mqtt_rx) = mpsc::unbounded_channel();
    let mqtt_stop = CancellationToken::new();
    let (client, mqtt_task) = mqtt::start(
        MqttSettings {
            broker,
            client_id: cfg.client_id(),
            max_packet_size: cfg.max_packet_size,
            site: cfg.site.clone(),
            topics: topics.clone(),
            last_epoch: store.data.lo_epoch,
            epoch_file: Some(cfg.state_dir.join("lo-epoch")),
            version: VERSION.into(),
            transport,
        },
        mqtt_tx,
        mqtt_stop.clone(),
    );

    let (src_tx, src_rx) = mpsc::channel(4);
    let start_commit = store.data.served.as_ref().map(|s| s.commit.clone());
    tokio::spawn(poll_source(
        source,
        cfg.site_path(),
        start_commit,
        cfg.poll_interval,
        shared.sync.clone(),
        src_tx,
        shutdown.clone(),
    ));

    let signing = cfg.signing()?;
    let engine = Engine::new(EngineParts {
        cfg,
        shared: shared.clone(),
        audit,
        client,
        store,
        topics,
        signing,
    });
    let join = tokio::spawn(engine.run(src_rx, mqtt_rx, mqtt_task, mqtt_stop, shutdown));
    Ok(Running {
        http_addr,
        shared,
        join,
    })
}
