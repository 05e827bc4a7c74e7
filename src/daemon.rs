//! `herald run`: wires the stages together — one source per watched mailbox, dispatch, one
//! worker per sink, all over one store — and shuts them down in order.
//!
//! Shutdown follows the source-first rule: the mailboxes stop taking mail (each leaves IDLE
//! and logs out), then dispatch and the workers finish what they are doing, bounded by
//! `[server] shutdown_timeout`; whatever is undispatched or undelivered stays queued for the
//! next start. A failing store stops everything with an error, so the supervisor restarts
//! herald rather than have it run without durability.
//!
//! [`run`] takes the shutdown signal as a parameter (mini-redis's `run(listener, shutdown)`),
//! so tests can run the whole pipeline in-process and stop it when they like.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::deliver::{Shared, Worker};
use crate::dispatch::{Clock, Dispatcher, Fanout};
use crate::error::chain;
use crate::expect::watch::Watcher;
use crate::metrics::Metrics;
use crate::push::Pushes;
use crate::route::Router;
use crate::source::imap::Mailbox;
use crate::store::{self, Access, Store};

/// How long finished alerts (and their content keys) are kept: 30 days.
const RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

/// How long a sink may take to say goodbye (IRC's QUIT) at shutdown; the peer may be gone.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the daemon until `shutdown` resolves, or a fatal error.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let store: Arc<dyn Store> = store::open(config.state.path.clone(), Access::Daemon).await?;
    let metrics = Metrics::new();
    // Bind before anything else starts, so a taken port stops herald at once.
    let listener = match config.server.listen {
        Some(listen) => Some(crate::serve::bind(listen).await?),
        None => None,
    };
    let mut sinks = Vec::with_capacity(config.sinks.len());
    for (name, sink_config) in &config.sinks {
        let sink: Arc<dyn herald_bridges::Sink> = Arc::from(
            sink_config
                .build()
                .with_context(|| format!("cannot build sink {name:?}"))?,
        );
        sinks.push((name.clone(), sink));
    }
    let fanout = Fanout::new(sinks.iter().map(|(name, sink)| (name.clone(), &**sink)));
    let dispatch_wake = Arc::new(Notify::new());
    // One clock for dispatch's and the expectations' timers.
    let clock = Clock::start();
    let delivery_stop = CancellationToken::new();
    let mut stages: JoinSet<(String, Result<()>)> = JoinSet::new();
    let all_sinks: Vec<Arc<dyn herald_bridges::Sink>> =
        sinks.iter().map(|(_, sink)| sink.clone()).collect();
    let shared = Shared {
        store: store.clone(),
        dispatch: dispatch_wake.clone(),
        fallback: config.fallback.clone(),
        metrics: metrics.clone(),
    };
    for (name, sink) in sinks {
        metrics.init_sink(&name);
        let policy = config.delivery.get(&name).copied().unwrap_or_default();
        let worker = Worker::new(name.clone(), sink, policy, &fanout, shared.clone());
        let stop = delivery_stop.clone();
        stages.spawn(async move { (format!("sink {name:?}"), worker.run(stop).await) });
    }
    {
        let dispatcher = Dispatcher::new(
            store.clone(),
            fanout,
            config.policies.clone(),
            dispatch_wake.clone(),
            metrics.clone(),
            clock,
        );
        let stop = delivery_stop.clone();
        stages.spawn(async move { ("dispatch".to_owned(), dispatcher.run(stop).await) });
    }
    spawn_pruning(store.clone(), delivery_stop.clone());
    let router = Router::new(config.rules.clone(), config.default_sinks.clone())
        .expecting(config.expectations.clone())
        .trusting(config.trust.clone());
    {
        let watcher = Watcher::new(store.clone(), router.clone(), dispatch_wake.clone(), clock);
        let stop = delivery_stop.clone();
        stages.spawn(async move { ("expectations".to_owned(), watcher.run(stop).await) });
    }
    // The mailboxes are made before the server starts, so the first push finds them.
    let mut pushes = Pushes::new(config.server.push_token.clone(), metrics.clone());
    let mut watched_mailboxes = Vec::new();
    for account in &config.accounts {
        for folder in &account.folders {
            let mailbox = Mailbox::new(
                account,
                folder,
                router.clone(),
                store.clone(),
                dispatch_wake.clone(),
                metrics.clone(),
            )?;
            pushes.register(&account.imap.username, folder, mailbox.push_wake());
            watched_mailboxes.push(mailbox);
        }
    }
    let pushes = Arc::new(pushes);
    if let Some((listener, address)) = listener {
        // Ready while every session answers: a live session hears from the server at least
        // at every IDLE refresh, and a dead one is noticed within idle_keepalive + timeout.
        let ready_within = config
            .accounts
            .iter()
            .map(|a| a.imap.idle_refresh + a.imap.idle_keepalive + a.imap.timeout)
            .max()
            .unwrap_or_default();
        let (metrics, store, stop) = (metrics.clone(), store.clone(), delivery_stop.clone());
        tokio::spawn(async move {
            if let Err(error) =
                crate::serve::serve_on(listener, metrics, store, pushes, ready_within, stop).await
            {
                error!(error = %chain(error.as_ref()), "The metrics server failed.");
            }
        });
        info!(%address, "Serving /metrics, /healthz, /readyz and /push.");
    }
    let mailbox_stop = CancellationToken::new();
    let mut mailboxes: JoinSet<(String, Result<()>)> = JoinSet::new();
    for mailbox in watched_mailboxes {
        let stop = mailbox_stop.clone();
        mailboxes.spawn(async move {
            let name = format!("mailbox {}", mailbox.id());
            (name, mailbox.run(stop).await)
        });
    }
    let watched: Vec<String> = config
        .accounts
        .iter()
        .flat_map(|a| a.folders.iter().map(move |f| format!("{}/{f}", a.name)))
        .collect();
    info!(
        version = env!("CARGO_PKG_VERSION"),
        servers = %config.accounts.iter().map(|a| a.imap.host.as_str()).collect::<Vec<_>>().join(","),
        mailboxes = %watched.join(","),
        sinks = %config.sinks.keys().cloned().collect::<Vec<_>>().join(","),
        "herald started."
    );

    let shutdown_timeout = config.server.shutdown_timeout;
    let failure = tokio::select! {
        () = shutdown => None,
        Some(result) = mailboxes.join_next() => Some(stopped(result)),
        Some(result) = stages.join_next() => Some(stopped(result)),
    };
    match &failure {
        None => info!("Shutting down: leaving IDLE, finishing deliveries in flight."),
        Some(error) => error!(error = %chain(error.as_ref()), "Stopping: fatal error."),
    }

    mailbox_stop.cancel();
    drain(
        &mut mailboxes,
        shutdown_timeout,
        "The mailboxes did not stop in time; abandoning their sessions.",
    )
    .await;
    delivery_stop.cancel();
    drain(
        &mut stages,
        shutdown_timeout,
        "Deliveries still in flight at the shutdown deadline; they stay queued.",
    )
    .await;
    // Long-lived connections (IRC) say goodbye; bounded, since the peer may be gone.
    for sink in &all_sinks {
        if tokio::time::timeout(CLOSE_TIMEOUT, sink.close())
            .await
            .is_err()
        {
            warn!("A sink did not close within 5 s.");
        }
    }
    match failure {
        None => {
            info!("Stopped.");
            Ok(())
        }
        Some(error) => Err(error),
    }
}

/// Why a task that should run until shutdown ended.
fn stopped(result: Result<(String, Result<()>), tokio::task::JoinError>) -> anyhow::Error {
    match result {
        Ok((name, Err(error))) => error.context(format!("{name} stopped")),
        Ok((name, Ok(()))) => anyhow::anyhow!("{name} stopped unexpectedly"),
        Err(join) => anyhow::anyhow!("a task failed: {join}"),
    }
}

/// Waits up to `deadline` for `tasks` to finish, logging failures; aborts the rest.
async fn drain(tasks: &mut JoinSet<(String, Result<()>)>, deadline: Duration, late: &str) {
    let deadline = tokio::time::sleep(deadline);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                None => break,
                Some(Ok((name, Err(error)))) => warn!(task = %name, error = %chain(error.as_ref()), "A task failed while stopping."),
                Some(_) => {}
            },
            () = &mut deadline => {
                warn!(remaining = tasks.len(), "{late}");
                tasks.abort_all();
                break;
            }
        }
    }
}

/// Forgets finished alerts after a while, at start and daily: the store stays small, and a
/// message re-delivered within that time is still recognised.
fn spawn_pruning(store: Arc<dyn Store>, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            match store.prune(store::now_ms() - RETENTION_MS).await {
                Ok(0) => {}
                Ok(n) => info!(alerts = n, "Pruned finished alerts older than 30 days."),
                Err(error) => warn!(error = %chain(&error), "Cannot prune the store."),
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(24 * 3600)) => {}
                () = stop.cancelled() => break,
            }
        }
    });
}

/// Resolves on SIGTERM (docker stop, systemd) or SIGINT (Ctrl-C): what `herald run` stops on.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                warn!(%error, "Cannot listen for SIGTERM.");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => {}
        result = tokio::signal::ctrl_c() => {
            if let Err(error) = result {
                warn!(%error, "Cannot listen for SIGINT.");
                std::future::pending::<()>().await;
            }
        }
    }
}
