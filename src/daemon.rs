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
//! so tests can run the whole pipeline in-process and stop it when they like;
//! [`run_reloading`] also takes the reload requests (SIGHUP, from [`hangups`]): a reload
//! stops the pipeline like a shutdown and starts the new configuration's on the same store,
//! so nothing is lost or repeated. Throughout, systemd hears how herald is (`crate::notify`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::deliver::{Shared, Worker};
use crate::dispatch::{Clock, Dispatcher, Fanout};
use crate::error::chain;
use crate::expect::watch::Watcher;
use crate::metrics::Metrics;
use crate::notify::{imap_status, status_line, Notifier, Supervision};
use crate::push::Pushes;
use crate::route::Router;
use crate::source::imap::Mailbox;
use crate::store::{self, Access, Store};

/// How long finished alerts (and their content keys) are kept: 30 days.
const RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

/// How long a sink may take to say goodbye (IRC's QUIT) at shutdown; the peer may be gone.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the daemon until `shutdown` resolves, or a fatal error; no reloads.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let (_never, reloads) = mpsc::channel(1);
    run_reloading(config, shutdown, reloads).await
}

/// Runs the daemon until `shutdown` resolves, or a fatal error, reloading the configuration
/// from its file at each message on `reloads` (see [`hangups`]).
///
/// A reload reads and validates the whole file and builds its sinks first; if any of that
/// fails, the running configuration stays, the error is logged at ERROR with its location
/// and counted (`herald_config_reloads_total{result="error"}`). Otherwise the running
/// pipeline is stopped the way a shutdown stops it (the mailboxes first, so nothing is
/// fetched that the old rules would route; then dispatch and the deliveries in flight, up to
/// `[server] shutdown_timeout`) and the new configuration's pipeline is started on the same
/// store: every alert committed so far is dispatched and delivered once, by the new rules,
/// sinks, windows and expectations, and every IMAP session reconnects. The store, the
/// metrics and the `/metrics` endpoint stay; `[state] path` and `[server] listen` change only
/// at a restart.
pub async fn run_reloading(
    mut config: Config,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<()>,
) -> Result<()> {
    let notifier = Notifier::from_env();
    let store: Arc<dyn Store> = store::open(config.state.path.clone(), Access::Daemon).await?;
    let metrics = Metrics::new();
    // Bind before anything else starts, so a taken port stops herald at once.
    let listener = match config.server.listen {
        Some(listen) => Some(crate::serve::bind(listen).await?),
        None => None,
    };
    let base = Base {
        store: store.clone(),
        metrics: metrics.clone(),
        // One clock for dispatch's and the expectations' timers, across reloads.
        clock: Clock::start(),
        // Each pipeline registers its mailboxes (and the token) here; the server outlives it.
        pushes: Arc::new(Pushes::new(None, metrics.clone())),
    };
    let mut pipeline = Running(Some(Pipeline::start(&config, &base)?));
    // What lives as long as the process, across reloads.
    let process_stop = CancellationToken::new();
    spawn_pruning(store.clone(), process_stop.clone());
    if let Some((listener, _)) = listener {
        // Ready while every session answers: a live session hears from the server at least
        // at every IDLE refresh, and a dead one is noticed within idle_keepalive + timeout.
        let ready_within = config
            .accounts
            .iter()
            .map(|a| a.imap.idle_refresh + a.imap.idle_keepalive + a.imap.timeout)
            .max()
            .unwrap_or_default();
        let (metrics, store, stop) = (metrics.clone(), store.clone(), process_stop.clone());
        let pushes = base.pushes.clone();
        tokio::spawn(async move {
            if let Err(error) =
                crate::serve::serve_on(listener, metrics, store, pushes, ready_within, stop).await
            {
                error!(error = %chain(error.as_ref()), "The metrics server failed.");
            }
        });
    }
    let supervision = Supervision::spawn(
        &notifier,
        store.clone(),
        metrics.clone(),
        process_stop.clone(),
    );
    started(&config);
    notifier.send(&format!("READY=1\n{}", status_line(&imap_status(&metrics))));

    tokio::pin!(shutdown);
    let failure = loop {
        tokio::select! {
            () = &mut shutdown => break None,
            Some(()) = reloads.recv() => {
                notifier.send(&format!("RELOADING=1\n{}", status_line("Reloading the configuration.")));
                match reload(&config, pipeline, &base).await {
                    Reloaded::Ok(new, next) => {
                        metrics.config_reload(true);
                        config = *new;
                        pipeline = next;
                    }
                    Reloaded::Refused(next) => {
                        metrics.config_reload(false);
                        pipeline = next;
                    }
                    Reloaded::Fatal(error) => {
                        pipeline = Running(None);
                        break Some(error);
                    }
                }
                supervision.changed();
                notifier.send(&format!("READY=1\n{}", status_line(&imap_status(&metrics))));
            }
            error = pipeline.failed() => break Some(error),
        }
    };
    notifier.send(&format!("STOPPING=1\n{}", status_line("Shutting down.")));
    match &failure {
        None => info!("Shutting down: leaving IDLE, finishing deliveries in flight."),
        Some(error) => error!(error = %chain(error.as_ref()), "Stopping: fatal error."),
    }
    // After a fatal error the pipeline may already be gone (a failed reload restart).
    if let Some(pipeline) = pipeline.take() {
        pipeline
            .stop(config.server.shutdown_timeout, "shutdown")
            .await;
    }
    process_stop.cancel();
    match failure {
        None => {
            info!("Stopped.");
            Ok(())
        }
        Some(error) => Err(error),
    }
}

/// Installs the SIGHUP handler (from now on SIGHUP no longer ends the process) and returns
/// the reload requests it makes; several SIGHUPs during one reload make one more reload.
pub fn hangups() -> Result<mpsc::Receiver<()>> {
    let mut signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    let (sender, receiver) = mpsc::channel(1);
    tokio::spawn(async move {
        while signal.recv().await.is_some() {
            // Full: a reload is already asked for, and it will read the file as it is then.
            let _ = sender.try_send(());
        }
    });
    Ok(receiver)
}

/// The "herald started." line: what this configuration watches and delivers to.
fn started(config: &Config) {
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
}

/// What a reload came to.
enum Reloaded {
    /// The new configuration runs.
    Ok(Box<Config>, Running),
    /// The new configuration was refused; the old one runs (again).
    Refused(Running),
    /// Neither could be started again: herald stops.
    Fatal(anyhow::Error),
}

/// Reloads `current`'s file: see [`run_reloading`].
async fn reload(current: &Config, running: Running, base: &Base) -> Reloaded {
    info!(file = %current.path.display(), "Reloading the configuration (SIGHUP).");
    let new = match Config::load(&current.path) {
        Ok(new) => new,
        Err(error) => {
            error!(error = %error, "The new configuration is invalid; keeping the running one.");
            return Reloaded::Refused(running);
        }
    };
    // Building the sinks is the one other step that can refuse a valid file: do it before
    // the running pipeline is stopped (it is repeated, cheaply, when the pipeline starts).
    if let Err(error) = build_sinks(&new) {
        error!(error = %chain(error.as_ref()), "The new configuration is invalid; keeping the running one.");
        return Reloaded::Refused(running);
    }
    if new.state.path != current.state.path || new.server.listen != current.server.listen {
        warn!(
            "[state] path and [server] listen change only at a restart; keeping the running ones."
        );
    }
    let Some(pipeline) = running.take() else {
        return Reloaded::Fatal(anyhow::anyhow!("the pipeline is not running"));
    };
    pipeline
        .stop(current.server.shutdown_timeout, "reload")
        .await;
    // Deliveries abandoned at the deadline were never confirmed: attempted again, as after
    // a crash, rather than left `sending` until the next start.
    match base.store.requeue_sending().await {
        Ok(0) => {}
        Ok(n) => info!(
            deliveries = n,
            "Deliveries abandoned by the reload are queued again."
        ),
        Err(error) => return Reloaded::Fatal(error.into()),
    }
    let mut new = new;
    new.state = current.state.clone();
    new.server.listen = current.server.listen;
    match Pipeline::start(&new, base) {
        Ok(pipeline) => {
            crate::logging::use_config(new.log.format);
            info!("Configuration reloaded.");
            started(&new);
            Reloaded::Ok(Box::new(new), Running(Some(pipeline)))
        }
        Err(error) => {
            error!(error = %chain(error.as_ref()), "The new configuration cannot start; going back to the running one.");
            match Pipeline::start(current, base) {
                Ok(pipeline) => Reloaded::Refused(Running(Some(pipeline))),
                Err(error) => Reloaded::Fatal(error),
            }
        }
    }
}

/// The parts of the daemon that outlive a reload.
struct Base {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// Where `POST /push` hints go.
    pushes: Arc<Pushes>,
}

/// Builds every sink of `config`, by name.
fn build_sinks(config: &Config) -> Result<Vec<(String, Arc<dyn herald_bridges::Sink>)>> {
    let mut sinks = Vec::with_capacity(config.sinks.len());
    for (name, sink_config) in &config.sinks {
        let sink: Arc<dyn herald_bridges::Sink> = Arc::from(
            sink_config
                .build()
                .with_context(|| format!("cannot build sink {name:?}"))?,
        );
        sinks.push((name.clone(), sink));
    }
    Ok(sinks)
}

/// The stages of one configuration: one source per watched mailbox, dispatch, the
/// expectations' watcher and one worker per sink.
struct Pipeline {
    mailboxes: JoinSet<(String, Result<()>)>,
    mailbox_stop: CancellationToken,
    stages: JoinSet<(String, Result<()>)>,
    delivery_stop: CancellationToken,
    sinks: Vec<Arc<dyn herald_bridges::Sink>>,
}

/// The pipeline, while one runs.
struct Running(Option<Pipeline>);

impl Running {
    fn take(self) -> Option<Pipeline> {
        self.0
    }

    /// Resolves when a stage of the running pipeline ends; never if none runs.
    async fn failed(&mut self) -> anyhow::Error {
        match &mut self.0 {
            Some(pipeline) => pipeline.failed().await,
            None => std::future::pending().await,
        }
    }
}

impl Pipeline {
    /// Builds and starts `config`'s stages over `base`.
    fn start(config: &Config, base: &Base) -> Result<Pipeline> {
        let Base {
            store,
            metrics,
            clock,
            pushes,
        } = base;
        let sinks = build_sinks(config)?;
        let router = Router::new(config.rules.clone(), config.default_sinks.clone())
            .expecting(config.expectations.clone())
            .trusting(config.trust.clone());
        let dispatch_wake = Arc::new(Notify::new());
        // The previous configuration's sessions are gone; readiness and STATUS= are about
        // this one's.
        metrics.forget_sessions();
        // Push hints go to this configuration's mailboxes from now on; before they exist, a
        // hint finds none and is only counted (the new sessions fetch at start anyway).
        pushes.reset(config.server.push_token.clone());
        let mut sources = Vec::new();
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
                sources.push(mailbox);
            }
        }

        let fanout = Fanout::new(sinks.iter().map(|(name, sink)| (name.clone(), &**sink)));
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
                *clock,
            );
            let stop = delivery_stop.clone();
            stages.spawn(async move { ("dispatch".to_owned(), dispatcher.run(stop).await) });
        }
        {
            let watcher = Watcher::new(store.clone(), router, dispatch_wake, *clock);
            let stop = delivery_stop.clone();
            stages.spawn(async move { ("expectations".to_owned(), watcher.run(stop).await) });
        }
        let mailbox_stop = CancellationToken::new();
        let mut mailboxes: JoinSet<(String, Result<()>)> = JoinSet::new();
        for mailbox in sources {
            let stop = mailbox_stop.clone();
            mailboxes.spawn(async move {
                let name = format!("mailbox {}", mailbox.id());
                (name, mailbox.run(stop).await)
            });
        }
        Ok(Pipeline {
            mailboxes,
            mailbox_stop,
            stages,
            delivery_stop,
            sinks: all_sinks,
        })
    }

    /// Resolves when a stage ends, which is always an error before a stop.
    async fn failed(&mut self) -> anyhow::Error {
        tokio::select! {
            Some(result) = self.mailboxes.join_next() => stopped(result),
            Some(result) = self.stages.join_next() => stopped(result),
        }
    }

    /// Stops the stages source first: the mailboxes leave IDLE and log out, then dispatch
    /// and the workers finish what they are doing, each step bounded by `timeout`; then the
    /// sinks close.
    /// `why` names the deadline in the log (`shutdown`, `reload`).
    async fn stop(mut self, timeout: Duration, why: &str) {
        self.mailbox_stop.cancel();
        drain(
            &mut self.mailboxes,
            timeout,
            "The mailboxes did not stop in time; abandoning their sessions.",
        )
        .await;
        self.delivery_stop.cancel();
        drain(
            &mut self.stages,
            timeout,
            &format!("Deliveries still in flight at the {why} deadline; they stay queued."),
        )
        .await;
        // Long-lived connections (IRC) say goodbye; bounded, since the peer may be gone.
        for sink in &self.sinks {
            if tokio::time::timeout(CLOSE_TIMEOUT, sink.close())
                .await
                .is_err()
            {
                warn!("A sink did not close within 5 s.");
            }
        }
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
