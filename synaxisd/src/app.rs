//! Wiring: builds the services from a validated config and runs the daemon's commands.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use secrecy::{ExposeSecret, SecretString};
use synaxis_shared::RegionId;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::AuditLog;
use crate::billing::budgets::Budgets;
use crate::billing::payments::{AutoTopups, InvoiceProvider};
use crate::clock::{Clock, SystemClock};
use crate::config::{BusKind, Config, LimitStoreKind, LimitsConfig};
use crate::control::Signup;
use crate::directory::{DirectoryPublisher, Replicator};
use crate::events::{EventBus, KafkaBus, MemoryBus};
use crate::gateway::Gateway;
use crate::gateway::admission::Admission;
use crate::gateway::record::Recorder;
use crate::geo::GeoIp;
use crate::limits::Limiter;
use crate::limits::allowance::AllowanceLimiter;
use crate::limits::fallback::FallbackLimiter;
use crate::limits::memory::MemoryLimiter;
use crate::region::Regions;
use crate::region::health::HealthMonitor;
use crate::region::peer::PeerAuth;
use crate::secrets::PEER_SECRET_ENV;
use crate::secrets::{SecretSources, Secrets, SecretsError};
use crate::server::{self, AppState, AppStateInner, Metrics};
use crate::store::{self, Store};
use crate::tenancy::cache::AuthCache;
use crate::tenancy::keys::KeyHasher;
use crate::tenancy::plans::PlanCatalog;
use crate::tenancy::{Caller, Tenancy};

/// Name of the setting that contains the pepper's fingerprint.
const PEPPER_FINGERPRINT: &str = "key_pepper_fingerprint";

/// Errors that stop the daemon before it serves.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(
        "the key pepper does not match the one that hashed the stored keys, so every existing key would be rejected: restore the original pepper ({location}) and start again"
    )]
    PepperMismatch { location: String },
    #[error(
        "cannot listen on {address}: {error}; set server.listen or SYNAXIS_SERVER__LISTEN to a free address"
    )]
    Listen {
        address: std::net::SocketAddr,
        error: std::io::Error,
    },
}

impl StartupError {
    /// Returns whether the error comes from configuration or secrets, which `main` reports with the
    /// config exit status.
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Secrets(_) | Self::PepperMismatch { .. })
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// Connects the store, runs migrations and prepares every configured region's storage.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let store = store::connect(&config.database).await?;
    let regions: Vec<RegionId> = config.regions.keys().cloned().collect();
    store.prepare_regions(&regions).await?;
    Ok(store)
}

/// `synaxisd migrate`.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    open_store(config).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// `synaxisd serve`: runs until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let generate_into = config
        .database
        .is_embedded()
        .then_some(config.server.data_dir.as_path());
    let secrets = Secrets::load(&SecretSources {
        env: &process_env,
        generate_into,
    })
    .map_err(StartupError::from)?;
    if let Some(generated) = &secrets.generated_operator_token {
        // Printed on standard output, not logged, and only on the start that generated it.
        println!(
            "Generated operator token (shown once; kept in {}):\n{}",
            generated.path.display(),
            secrets.operator_token.expose_secret()
        );
    }

    let store = open_store(&config).await?;
    let metrics = Arc::new(Metrics::default());
    let hasher = KeyHasher::new(&secrets.pepper);
    check_pepper(&*store, &hasher, &config).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let region = config.server.region.clone();
    let (changes_tx, changes_rx) = tokio::sync::mpsc::unbounded_channel();
    let plans = match &config.plans.file {
        Some(path) => PlanCatalog::load(path)?,
        None => PlanCatalog::builtin()?,
    };
    let tenancy = Tenancy::new(
        store.clone(),
        clock.clone(),
        hasher,
        region.clone(),
        config.home_region().key_prefix.clone(),
        Arc::new(plans),
    )
    .with_regions(config.regions.keys().cloned().collect())
    .with_auth_cache(
        AuthCache::new(
            metrics.auth_cache_hits.clone(),
            metrics.auth_cache_misses.clone(),
        )
        .with_changes(changes_tx),
    );
    let links_stop = CancellationToken::new();
    let links = start_region_links(
        &config,
        &clock,
        &metrics,
        &tenancy,
        changes_rx,
        secrets.peer_secret.clone(),
        &links_stop,
    )
    .await?;

    let tracker = TaskTracker::new();
    let (recorder, writer) = Recorder::new(
        store.clone(),
        clock.clone(),
        region.clone(),
        metrics.clone(),
    );
    let auto_topups = Arc::new(AutoTopups::new(
        store.clone(),
        Arc::new(InvoiceProvider::new(store.clone())),
        tenancy.plans().clone(),
        clock.clone(),
    ));
    let writer = writer.with_auto_topups(auto_topups.clone());
    let writer_stop = CancellationToken::new();
    tracker.spawn(writer.run(writer_stop.clone()));
    let (limiter, allowances) = open_limiter(&config.limits, &metrics, clock.clone()).await?;
    let admission = Admission::new(limiter, clock.clone(), metrics.clone(), &config.limits)
        .with_plans(tenancy.plans().clone())
        .with_credits(store.clone())
        .with_auto_topups(auto_topups);
    let finisher = admission.take_finisher();
    let budgets = Arc::new(Budgets::new(
        store.clone(),
        clock.clone(),
        Duration::from_secs(config.budgets.hold_ttl_secs),
    ));
    let sweeper_stop = CancellationToken::new();
    let sweeper = tokio::spawn(budgets.clone().sweep(sweeper_stop.clone()));
    let lifecycle = tokio::spawn(run_lifecycle_every(
        tenancy.clone(),
        clock.clone(),
        Duration::from_secs(config.plans.lifecycle_interval_secs),
        sweeper_stop.clone(),
    ));
    let gateway = Gateway::new(&config, recorder, admission, budgets, &process_env)?;
    let state_plans = tenancy.plans().clone();
    let state = AppState::new(AppStateInner {
        audit: AuditLog::new(store.clone()),
        tenancy,
        gateway: Arc::new(gateway),
        operator_token: Arc::new(secrets.operator_token),
        region: region.clone(),
        metrics: metrics.clone(),
        max_body_bytes: config.server.max_body_bytes,
        shutdown: CancellationToken::new(),
        signup: open_signup(&config, &state_plans)?,
        regions: links.regions.clone(),
    });

    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|error| StartupError::Listen {
            address: config.server.listen,
            error,
        })?;
    let address = listener.local_addr()?;
    let tls = config
        .server
        .tls
        .as_ref()
        .map(crate::tls::server_config)
        .transpose()?;
    tracing::info!(%address, %region, tls = tls.is_some(), "listening");

    let drain = server::Drain {
        timeout: Duration::from_secs(config.server.shutdown_timeout_secs),
        cancel: state.shutdown.clone(),
        records: state.gateway.recorder.unfinished(),
        stop_writer: writer_stop,
        writer: tracker,
    };
    let app = server::router(state);
    match tls {
        Some(tls) => {
            let listener = crate::tls::TlsListener::new(listener, tls)?;
            server::serve(listener, app, shutdown_signal(), drain).await?;
        }
        None => {
            let listener = listener.tap_io(server::set_nodelay);
            server::serve(listener, app, shutdown_signal(), drain).await?;
        }
    }
    // Links are fire-and-forget: a task that waits on a broker that is down is dropped.
    links_stop.cancel();
    let deadline = tokio::time::Instant::now() + LINKS_GRACE;
    for mut task in links.tasks {
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "a region link task failed"),
            Err(_) => task.abort(),
        }
    }
    sweeper_stop.cancel();
    if let Err(error) = sweeper.await {
        tracing::warn!(%error, "the budget hold sweeper failed");
    }
    if let Err(error) = lifecycle.await {
        tracing::warn!(%error, "the plan lifecycle task failed");
    }

    // The server and every request are gone, so the finisher's channel closes once it has sent
    // the last settles and lease releases.
    if let Some(finisher) = finisher
        && tokio::time::timeout(FINISHER_GRACE, finisher)
            .await
            .is_err()
    {
        tracing::warn!(
            "the last settles and lease releases did not finish in time; leases expire by themselves"
        );
    }
    if let Some(allowances) = allowances
        && let Err(error) = allowances.return_all(clock.now()).await
    {
        tracing::warn!(%error, "returning unused rate-limit allowances failed; they count until their window ends");
    }
    Ok(())
}

/// The links to other regions that run beside the server.
struct RegionLinks {
    regions: Arc<Regions>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts the event bus links (key directory publisher and replicators), the peer client and
/// the health monitor.
async fn start_region_links(
    config: &Config,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    tenancy: &Tenancy,
    changes: tokio::sync::mpsc::UnboundedReceiver<crate::directory::Changed>,
    peer_secret: Option<SecretString>,
    stop: &CancellationToken,
) -> anyhow::Result<RegionLinks> {
    let own = config.server.region.clone();
    let store = tenancy.store();
    let prefix = &config.events.topic_prefix;
    let mut tasks = Vec::new();

    // One bus per cluster: this region publishes to its own and reads each region's topic from
    // that region's cluster.
    let mut buses: BTreeMap<String, Arc<dyn EventBus>> = BTreeMap::new();
    let mut topics_by_cluster: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, region) in &config.regions {
        let cluster = match config.events.bus {
            BusKind::Memory => String::new(),
            BusKind::Kafka => region.kafka_brokers.clone().unwrap_or_default(),
        };
        if !buses.contains_key(&cluster) {
            let bus: Arc<dyn EventBus> = match config.events.bus {
                BusKind::Memory => Arc::new(MemoryBus::new()),
                BusKind::Kafka => Arc::new(KafkaBus::connect(&cluster)?),
            };
            buses.insert(cluster.clone(), bus);
        }
        topics_by_cluster
            .entry(cluster)
            .or_default()
            .push(crate::directory::topic(prefix, id));
    }
    let own_cluster = match config.events.bus {
        BusKind::Memory => String::new(),
        BusKind::Kafka => config
            .home_region()
            .kafka_brokers
            .clone()
            .unwrap_or_default(),
    };
    let own_bus = buses
        .get(&own_cluster)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no event bus for region {own}"))?;
    let publisher = DirectoryPublisher::new(
        store.clone(),
        own_bus,
        clock.clone(),
        crate::directory::topic(prefix, &own),
        Duration::from_secs(config.events.republish_interval_secs),
        metrics.directory_published.clone(),
    );
    tasks.push(tokio::spawn(publisher.run(changes, stop.clone())));

    // Each process reads every event under a group of its own, and its own region's events
    // evict its cache. NOTE: a new group starts at the beginning of each topic, so every start
    // replays the topics. Compacted topics keep that to one entry per key.
    let group = format!("synaxisd-{own}-{}", uuid::Uuid::new_v4().simple());
    for (cluster, topics) in topics_by_cluster {
        let bus = buses[&cluster].clone();
        let replicator = Replicator {
            store: store.clone(),
            cache: tenancy.auth_cache_handle(),
            region: own.clone(),
            applied: metrics.directory_applied.clone(),
            rejected: metrics.directory_rejected.clone(),
        };
        // A broker that is down delays the replica, never the start of the server.
        tasks.push(tokio::spawn(replicator.follow(
            bus,
            cluster,
            topics,
            group.clone(),
            stop.clone(),
        )));
    }

    let auth = match peer_secret {
        Some(secret) => Some(PeerAuth::new(
            own.clone(),
            secret,
            config.regions.keys().cloned().collect(),
        )),
        None => {
            tracing::info!(
                "{PEER_SECRET_ENV} is not set: requests of other regions' keys get 421 and peer calls are refused"
            );
            None
        }
    };
    let health = Arc::new(HealthMonitor::new(
        config.health.clone(),
        config.regions.keys().cloned(),
        metrics.region_up.clone(),
    ));
    let regions = Arc::new(Regions::new(
        config,
        auth,
        crate::region::peer::client(&config.peer)?,
        health.clone(),
    ));
    tasks.push(tokio::spawn(health.run(
        regions.clone(),
        store.clone(),
        stop.clone(),
    )));
    tasks.push(tokio::spawn(crate::region::failover::hand_off(
        regions.clone(),
        store.clone(),
        metrics.clone(),
        stop.clone(),
    )));
    Ok(RegionLinks { regions, tasks })
}

/// Runs the plan lifecycle every `interval` as the operator until `stop` is cancelled.
async fn run_lifecycle_every(
    tenancy: Tenancy,
    clock: Arc<dyn Clock>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = clock.sleep(interval) => {}
            () = stop.cancelled() => return,
        }
        match tenancy.run_lifecycle(&Caller::operator()).await {
            Ok(report) => tracing::info!(
                trials_ended = report.trials_ended.len(),
                suspended_keys = report.suspended.keys,
                purged_keys = report.purged.keys,
                "plan lifecycle run"
            ),
            Err(error) => tracing::warn!(%error, "the plan lifecycle run failed"),
        }
    }
}

/// Builds the signup service when the config turns signup on, with its country database.
fn open_signup(config: &Config, plans: &PlanCatalog) -> anyhow::Result<Option<Arc<Signup>>> {
    let settings = &config.signup;
    if !settings.enabled {
        return Ok(None);
    }
    plans
        .require("signup.trial_plan", &settings.trial_plan)
        .map_err(|error| anyhow::anyhow!("invalid config: `signup.trial_plan`: {error}"))?;
    let geo = settings
        .geoip_database
        .as_deref()
        .map(GeoIp::open)
        .transpose()?;
    let regions = config
        .regions
        .iter()
        .map(|(id, region)| (id.clone(), region.peer_url.clone()))
        .collect();
    Ok(Some(Arc::new(Signup::new(settings.clone(), geo, regions))))
}

/// Maximum wait at shutdown for the region link tasks to stop.
const LINKS_GRACE: Duration = Duration::from_secs(2);

/// Maximum wait at shutdown for the last settles and lease releases.
const FINISHER_GRACE: Duration = Duration::from_secs(5);

/// Builds the limiter of `limits.store`. On Redis, it also returns the local allowances in front
/// of it, which shutdown gives back.
async fn open_limiter(
    config: &LimitsConfig,
    metrics: &Metrics,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Arc<dyn Limiter>, Option<Arc<AllowanceLimiter>>)> {
    match (config.store, &config.redis_url) {
        (LimitStoreKind::Redis, Some(url)) => {
            let shared = FallbackLimiter::start(
                url,
                &config.redis_key_prefix,
                Duration::from_millis(config.redis_timeout_ms),
                config.processes,
                metrics.limiter_fallback.clone(),
            )
            .await?;
            tracing::info!(processes = config.processes, "rate limits on Redis");
            let allowances = AllowanceLimiter::start(shared, clock);
            Ok((allowances.clone(), Some(allowances)))
        }
        _ => Ok((Arc::new(MemoryLimiter::new()), None)),
    }
}

/// Records the pepper's fingerprint on first start, and refuses a pepper that differs from the
/// recorded one: it would silently invalidate every stored key.
async fn check_pepper(
    store: &dyn Store,
    hasher: &KeyHasher,
    config: &Config,
) -> Result<(), StartupError> {
    let fingerprint = hasher.pepper_fingerprint();
    let stored = store
        .put_setting_if_absent(PEPPER_FINGERPRINT, &fingerprint)
        .await
        .map_err(|error| StartupError::PepperMismatch {
            location: format!("the stored fingerprint could not be read: {error}"),
        })?;
    if stored == fingerprint {
        return Ok(());
    }
    let location = if process_env(crate::secrets::PEPPER_ENV).is_some() {
        format!("the value of {}", crate::secrets::PEPPER_ENV)
    } else {
        config
            .server
            .data_dir
            .join("key-pepper")
            .display()
            .to_string()
    };
    Err(StartupError::PepperMismatch { location })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
