//! Building and running the HTTP application: state from configuration, the router with its
//! layers, binding, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt as _;
use axum::Router;
use tokio::net::TcpListener;

use crate::auth::TokenKeys;
use crate::state::{AppState, Services};
use keyledger_domain::usage::UsageLedger;
use keyledger_infra::crypto::{AuditSigner, Envelope};
use keyledger_infra::gateway::GatewaySettings;
use keyledger_infra::providers::{EndpointPolicy, ProviderClient};
use keyledger_infra::services::ServiceDeps;
use keyledger_infra::{Config, Gateway, Keyrings, UsageRecorder};
use keyledger_projections::{audit_tree, CallRetention, EventLog, Projector};
use keyledger_store::material::MaterialStore;
use keyledger_store::Database;
use secrecy::ExposeSecret as _;
use tokio::sync::watch;

pub use crate::router::{BODY_LIMIT, GATEWAY_BODY_LIMIT};

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Database(#[from] keyledger_store::DatabaseError),
    #[error("cannot build the provider HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot set up the projections: {0}")]
    Projections(#[source] keyledger_projections::ProjectionError),
    #[error("cannot sweep released key material: {0}")]
    Sweep(#[from] keyledger_store::material::MaterialError),
    #[error(
        "key material is sealed under master key id(s) {} that KEYLEDGER_MASTER_KEY lacks; \
         add them back to the ring (after the active key) and run `keyledger master-key rewrap` \
         before dropping them",
        .0.join(", ")
    )]
    MissingMasterKeys(Vec<String>),
    #[error("cannot count key material by master key: {0}")]
    Material(#[source] keyledger_infra::CommandError),
}

/// Opens the database, applies migrations, destroys material an older version left behind,
/// and puts the shared state together.
///
/// # Errors
/// [`StartError`] when the database or HTTP client cannot be set up.
pub async fn build_state(mut config: Config) -> Result<AppState, StartError> {
    let db = Database::connect(&config.database_url).await?;
    db.migrate().await?;
    let material = MaterialStore::new(db.clone());
    let swept = material.sweep_released().await?;
    if swept > 0 {
        tracing::warn!(
            count = swept,
            "destroyed released key material an older version left behind"
        );
    }
    let prices = Arc::new(config.prices.clone());
    let endpoints = EndpointPolicy { allow_private: config.allow_private_endpoints };
    let providers = ProviderClient::new(config.provider_base_urls.clone(), endpoints)
        .map_err(StartError::Http)?;
    let audit_signer = Arc::new(match &config.audit_signing_seed {
        Some(seed) => AuditSigner::from_seed(seed.expose_secret()),
        None => AuditSigner::derived(config.master_keys.active()),
    });
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let signing_key = audit_tree::SigningKey {
        key_id: audit_signer.key_id().to_owned(),
        public_key: audit_signer.public_key(),
    };
    audit_tree::remember_signing_key(&db, &signing_key, &since)
        .await
        .map_err(|e| StartError::Projections(e.into()))?;
    let deps = Arc::new(ServiceDeps {
        envelope: Envelope::new(config.master_keys),
        material,
        providers,
        plans: config.plans,
    });
    let views = db.clone();
    let call_retention = config.usage_calls_days.map(|days| CallRetention { days });
    let projector = Arc::new(Projector::new(
        views.clone(),
        keyledger_projections::views::all(
            call_retention,
            Some(Arc::new(crate::checkpoints::ViewSigner(Arc::clone(&audit_signer)))),
        ),
    ));
    projector.ensure_checkpoints().await.map_err(StartError::Projections)?;
    let keyrings = Arc::new(Keyrings::new(&db, Arc::clone(&deps)));
    keyrings.calls().bound_cache(config.cache_orgs);
    let missing = keyrings.missing_master_keys().await.map_err(StartError::Material)?;
    if !missing.is_empty() {
        return Err(StartError::MissingMasterKeys(missing));
    }
    // On SQLite nothing else tells the usage cockpit's pipeline of a commit.
    let usage = Arc::new(UsageRecorder::new(&db, config.usage_queue, {
        let projector = Arc::clone(&projector);
        move || projector.nudge_for(<UsageLedger as cqrs_es::Aggregate>::TYPE)
    }));
    usage.bound_cache(config.cache_orgs);
    let gateway = Gateway::new(
        Arc::clone(&keyrings),
        Arc::clone(&deps),
        Arc::clone(&usage),
        GatewaySettings {
            prices: Arc::clone(&prices),
            platform_keys: std::mem::take(&mut config.platform_keys),
            families: config.model_families,
            timeouts: config.model_call_timeouts,
            durability: config.usage_durability,
        },
    );
    Ok(AppState::new(Services {
        keyrings,
        usage,
        db,
        tokens: Arc::new(TokenKeys::configured(
            config.jwt_secret.as_ref(),
            config.jwks.as_ref(),
            config.jwt_issuer.clone(),
            config.jwt_audience.clone(),
        )),
        endpoints,
        log: EventLog::new(views.clone()),
        views,
        views_ahead: Arc::new(crate::ViewsAhead::start(
            Arc::clone(&projector),
            crate::state::KEYRING,
        )),
        projector,
        prices,
        metrics: Arc::default(),
        gateway: Arc::new(gateway),
        access_log: config.access_log,
        call_retention,
        audit_signer,
    }))
}

/// Starts what a serving replica runs in the background: the projector, the pruning of old
/// calls and the making of the coming months' log partitions (they stop when the returned
/// sender sends `true`) and, on PostgreSQL, the watch that lets model calls use cached
/// Keyrings. Commands-only uses (the CLI) start none.
#[must_use]
pub fn start_serving(state: &AppState) -> watch::Sender<bool> {
    state.keyrings.calls().start_watching();
    let tokens = Arc::clone(&state.tokens);
    tokio::spawn(async move { tokens.warm_up().await });
    let (stop, stopped) = watch::channel(false);
    if let Some(retention) = state.call_retention {
        tokio::spawn(retention.run(state.views.clone(), stopped.clone()));
    }
    tokio::spawn(keyledger_store::log_months::keep_ahead(state.views.clone(), stopped.clone()));
    tokio::spawn(Arc::clone(&state.projector).run(stopped));
    stop
}

/// The bound, ready-to-run application.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    stop_projector: watch::Sender<bool>,
    keyrings: Arc<Keyrings>,
    usage: Arc<UsageRecorder>,
}

impl Application {
    /// Builds the state from `config` and binds its listen address (port 0 picks a free one).
    ///
    /// # Errors
    /// [`StartError`] when the state cannot be built or the address bound.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let addr = config.listen;
        let state = build_state(config).await?;
        let listener =
            TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
        let stop_projector = start_serving(&state);
        let (keyrings, usage) = (Arc::clone(&state.keyrings), Arc::clone(&state.usage));
        Ok(Self { listener, router: crate::router::router(state), stop_projector, keyrings, usage })
    }

    /// The address the application listens on.
    ///
    /// # Errors
    /// When the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    ///
    /// # Errors
    /// When serving fails.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let served = axum::serve(no_delay(self.listener), self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        // The calls answered last are recorded before the process goes.
        if !self.usage.settle(std::time::Duration::from_secs(10)).await {
            tracing::error!("stopping with model calls not yet recorded");
        }
        let _ = self.stop_projector.send(true);
        // Other replicas' commands need not wait for this one any more.
        self.keyrings.calls().leave().await;
        served
    }
}

/// The listener with Nagle's algorithm off on every connection: streamed answers go out as
/// many small writes, and Nagle would hold each one back until the client acknowledged the
/// last (tens of milliseconds with delayed ACKs).
pub fn no_delay(listener: TcpListener) -> impl axum::serve::Listener<Addr = SocketAddr> {
    listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
    })
}

/// Completes on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
