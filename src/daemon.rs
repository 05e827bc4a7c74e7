//! `herald run`: wires the mailbox, the store and one worker per sink together, and shuts
//! them down in order on SIGTERM or SIGINT.
//!
//! Shutdown follows the source-first rule: the mailbox stops taking mail (it leaves IDLE and
//! logs out), then the workers finish the attempt they are making, bounded by
//! `[server] shutdown_timeout`; whatever is undelivered stays queued for the next start. A failing
//! store stops everything with an error, so the supervisor restarts herald rather than have it
//! run without durability.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::deliver::{Fanout, Worker};
use crate::mailbox::Mailbox;
use crate::metrics::Metrics;
use crate::route::Router;
use crate::store::Store;

/// How long finished alerts (and their content keys) are kept: 30 days.
const RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

/// Runs until a signal asks to stop, or a fatal error.
pub async fn run(config: Config) -> Result<()> {
    let store = Arc::new(Store::open(&config.state.path)?);
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
    let fanout = Fanout::new(
        sinks
            .iter()
            .map(|(name, sink)| (name.clone(), sink.targets())),
    );
    let workers_stop = CancellationToken::new();
    let mut workers = JoinSet::new();
    let all_sinks: Vec<Arc<dyn herald_bridges::Sink>> =
        sinks.iter().map(|(_, sink)| sink.clone()).collect();
    for (name, sink) in sinks {
        metrics.init_sink(&name);
        let policy = config.delivery.get(&name).copied().unwrap_or_default();
        let worker = Worker::new(
            name.clone(),
            sink,
            store.clone(),
            policy,
            fanout.clone(),
            config.fallback.clone(),
            metrics.clone(),
        );
        let stop = workers_stop.clone();
        let name = name.clone();
        workers.spawn(async move { (name, worker.run(stop).await) });
    }
    // Forget finished alerts after a while, at start and daily: the store stays small, and a
    // message re-delivered within that time is still recognised.
    {
        let store = store.clone();
        let stop = workers_stop.clone();
        tokio::spawn(async move {
            loop {
                match store.prune(crate::store::now_ms() - RETENTION_MS) {
                    Ok(0) => {}
                    Ok(n) => info!(alerts = n, "Pruned finished alerts older than 30 days."),
                    Err(error) => warn!(error = %format!("{error:#}"), "Cannot prune the store."),
                }
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(24 * 3600)) => {}
                    () = stop.cancelled() => break,
                }
            }
        });
    }
    let router = Router::new(config.rules.clone(), config.default_sinks.clone());
    if let Some((listener, address)) = listener {
        // Ready while the session answers: a live session hears from the server at least at
        // every IDLE refresh, and a dead one is noticed within idle_keepalive + timeout.
        let ready_within =
            config.imap.idle_refresh + config.imap.idle_keepalive + config.imap.timeout;
        let (metrics, store, stop) = (metrics.clone(), store.clone(), workers_stop.clone());
        tokio::spawn(async move {
            if let Err(error) =
                crate::serve::serve_on(listener, metrics, store, ready_within, stop).await
            {
                error!(error = %format!("{error:#}"), "The metrics server failed.");
            }
        });
        info!(%address, "Serving /metrics, /healthz and /readyz.");
    }
    let mailbox = Mailbox::new(config.imap.clone(), router, store, fanout, metrics)?;
    let mailbox_stop = CancellationToken::new();
    let mut mailbox_task = {
        let stop = mailbox_stop.clone();
        tokio::spawn(async move { mailbox.run(stop).await })
    };
    info!(
        version = env!("CARGO_PKG_VERSION"),
        server = %config.imap.host,
        mailbox = %config.imap.mailbox,
        sinks = %config.sinks.keys().cloned().collect::<Vec<_>>().join(","),
        "herald started."
    );

    let shutdown_timeout = config.server.shutdown_timeout;
    let failure = tokio::select! {
        () = shutdown_signal() => None,
        result = &mut mailbox_task => Some(match result {
            Ok(Ok(())) => anyhow::anyhow!("the mailbox stopped unexpectedly"),
            Ok(Err(error)) => error,
            Err(join) => anyhow::anyhow!("the mailbox task failed: {join}"),
        }),
        Some(result) = workers.join_next() => Some(match result {
            Ok((name, Err(error))) => error.context(format!("sink {name:?} stopped")),
            Ok((name, Ok(()))) => anyhow::anyhow!("sink {name:?} stopped unexpectedly"),
            Err(join) => anyhow::anyhow!("a sink task failed: {join}"),
        }),
    };
    match &failure {
        None => info!("Shutting down: leaving IDLE, finishing deliveries in flight."),
        Some(error) => error!(error = %format!("{error:#}"), "Stopping: fatal error."),
    }

    mailbox_stop.cancel();
    if !mailbox_task.is_finished() {
        match tokio::time::timeout(shutdown_timeout, &mut mailbox_task).await {
            Ok(Ok(Err(error))) => {
                warn!(error = %format!("{error:#}"), "The mailbox failed while stopping.")
            }
            Ok(_) => {}
            Err(_) => {
                warn!("The mailbox did not stop in time; abandoning its session.");
                mailbox_task.abort();
            }
        }
    }
    workers_stop.cancel();
    let deadline = tokio::time::sleep(shutdown_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = workers.join_next() => match next {
                None => break,
                Some(Ok((name, Err(error)))) => warn!(sink = %name, error = %format!("{error:#}"), "Sink worker failed while stopping."),
                Some(_) => {}
            },
            () = &mut deadline => {
                warn!(remaining = workers.len(), "Deliveries still in flight at the shutdown deadline; they stay queued.");
                workers.abort_all();
                break;
            }
        }
    }
    // Long-lived connections (IRC) say goodbye; bounded, since the peer may be gone.
    for sink in &all_sinks {
        if tokio::time::timeout(std::time::Duration::from_secs(5), sink.close())
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

/// Resolves on SIGTERM (docker stop, systemd) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
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
