//! `t3pressure run`: the agent. One tokio runtime; discovery feeds the unit
//! set; a sampling loop with a per-unit "next due" time reads units (and the
//! host at the normal interval), updates the model and the metrics, and
//! builds the snapshot when the HTTP endpoint asks for one (see
//! outputs/http.rs). SIGTERM/SIGINT stop it cleanly.

mod bpf;
mod detect;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::sync::mpsc;

use crate::actions::killer::PidfdKiller;
use crate::config::Config;
use crate::detectors::runaway::UnitInput;
use crate::detectors::stall::{Episode as StallEpisode, StallTick};
use crate::detectors::{Detectors, UnitTick};
use crate::model::event::{unix_seconds, Event, EventBody};
use crate::model::sample::{Unit, UnitSample};
use crate::model::serve::ServeMatcher;
use crate::model::state::Model;
use crate::outputs::eventlog::EventLog;
use crate::outputs::http::{self, HttpState};
use crate::outputs::metrics::Metrics;
use crate::outputs::snapshot::{build, AgentInfo};
use crate::outputs::systemd::Notifier;
use crate::sources::discovery::{self, Change};
use crate::sources::sampler::Sampler;

/// How often discovery rescans the whole tree in case inotify missed
/// something; not the mechanism (inotify is).
const SAFETY_RESCAN: Duration = Duration::from_secs(30);

pub fn main(args: crate::cli::RunArgs) -> anyhow::Result<ExitCode> {
    let config = args.effective_config()?;
    if args.print_config {
        print!("{}", toml::to_string(&config)?);
        return Ok(ExitCode::SUCCESS);
    }
    init_tracing();
    // The sampler keeps a descriptor open per cgroup file and per process
    // (see sources/fdcache.rs): lift the soft limit to the hard one.
    match crate::sources::fdcache::raise_nofile_limit() {
        Ok(n) => tracing::info!(
            "RLIMIT_NOFILE soft limit {n}: up to {} descriptors cached by the sampler",
            n / 2
        ),
        Err(e) => tracing::warn!("cannot raise RLIMIT_NOFILE ({e}); fewer files stay open"),
    }
    // glibc gives threads that allocate their own malloc arena and keeps
    // freed memory there: with rendering on a blocking thread that was
    // +5 MiB RSS (22 MiB vs 17 MiB at 100 units). Two arenas are plenty here.
    // SAFETY: mallopt only sets an allocator parameter; no thread exists yet.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // Before any thread exists, so every later mapping is covered too.
    crate::outputs::systemd::lock_memory();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .thread_stack_size(512 * 1024)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(run(config, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// Human format on a terminal; under systemd (JOURNAL_STREAM set) no ANSI
/// colours and no timestamps (journald adds its own). `T3PRESSURE_LOG`
/// takes an EnvFilter (default `info`).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("T3PRESSURE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot install a SIGTERM handler ({e}); only SIGINT stops the agent");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The agent until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let started = SystemTime::now();
    let metrics = Arc::new(Metrics::new(crate::VERSION).context("cannot register metrics")?);
    tracing::info!(
        version = crate::VERSION,
        mode = %config.mode,
        cgroup_root = %config.cgroup_root.display(),
        unit_glob = %config.unit_glob,
        "t3pressure starting"
    );

    let (bpf, bpf_rx, bpf_error) = match bpf::load(&config) {
        Ok((feed, rx)) => {
            tracing::info!("eBPF programs loaded: scheduler stalls and OOM kills are traced");
            (Some(feed), Some(rx), None)
        }
        Err(why) => {
            tracing::warn!("BPF not loaded ({why}): stall windows come from PSI alone");
            (None, None, Some(why))
        }
    };
    metrics.set_bpf_loaded(bpf_error.is_none());

    // The log must never stop the agent from protecting the host: if it
    // cannot be opened, say so loudly and go on.
    let mut events = match EventLog::open(&config.state_dir, &config.event_log) {
        Ok(log) => Some(log),
        Err(e) => {
            tracing::error!("event log unavailable, events go to this log only: {e}");
            None
        }
    };
    let killer = PidfdKiller::new(&config.proc_root);
    let detectors = Detectors::new(&config, bpf_error.is_none(), Box::new(killer));
    append(
        &mut events,
        EventBody::AgentStart {
            version: crate::VERSION.to_string(),
            config_hash: config.hash(),
            mode: config.mode.to_string(),
            bpf_loaded: bpf_error.is_none(),
        },
    );

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(
        "serving /metrics, /healthz and /api/v1/snapshot on http://{}",
        config.listen
    );
    let (http_state, snapshot_rx) = HttpState::new(
        config.sample_interval() * 10 + Duration::from_secs(5),
        Arc::clone(&metrics),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let server = tokio::spawn(http::serve(listener, http_state.clone(), async move {
        let _ = http_stop.changed().await;
    }));

    let changes = discovery::spawn(&config.cgroup_root, &config.unit_glob, SAFETY_RESCAN)
        .with_context(|| format!("cannot watch {}", config.cgroup_root.display()))?;

    let agent = AgentInfo {
        version: crate::VERSION.to_string(),
        mode: config.mode.to_string(),
        bpf_loaded: bpf_error.is_none(),
        bpf_error,
        units_watched: 0,
        sample_interval_ms: config.sample_interval_ms,
        started_at: build::unix(started),
        from_agent: true,
    };
    let mut sampling = Loop {
        model: Model {
            serve_matcher: config.serve_match.as_deref().and_then(ServeMatcher::new),
            ..Model::default()
        },
        detectors,
        bpf,
        events,
        history: BTreeMap::new(),
        inputs: BTreeMap::new(),
        sampler: Some(Sampler::new(&config.cgroup_root, &config.proc_root)),
        metrics,
        http: http_state,
        agent,
        interval: config.sample_interval(),
        notifier: Notifier::from_env(),
        host_due: Instant::now(),
        last_host_pass: None,
        last_ongoing: Vec::new(),
    };
    sampling.run(changes, bpf_rx, snapshot_rx, shutdown).await;

    tracing::info!("shutting down");
    append(
        &mut sampling.events,
        EventBody::AgentStop {
            reason: "SIGTERM or SIGINT".into(),
        },
    );
    let _ = stop_tx.send(true);
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("HTTP server: {e}"),
        Err(e) => tracing::warn!("HTTP server task: {e}"),
    }
    drop(stop_rx);
    Ok(())
}

/// The next BPF event; never resolves without BPF.
async fn recv_bpf(
    rx: &mut Option<mpsc::Receiver<crate::sources::bpf::BpfEvent>>,
) -> Option<crate::sources::bpf::BpfEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Appends one event to the log, if there is one; a failed write is logged
/// and the event is not lost from the agent's own log.
fn append(log: &mut Option<EventLog>, body: EventBody) {
    let event = Event::new(unix_seconds(SystemTime::now()), body);
    match log {
        Some(l) => {
            if let Err(e) = l.append(&event) {
                tracing::error!(kind = event.body.kind(), "cannot write event: {e}");
            }
        }
        None => {
            tracing::info!(event = %serde_json::to_string(&event).unwrap_or_default(), "event (no event log)")
        }
    }
}

struct Loop {
    model: Model,
    /// READY=1 after the first pass, WATCHDOG=1 from every pass.
    notifier: Notifier,
    detectors: Detectors,
    /// `None` without BPF (PSI alone).
    bpf: Option<bpf::BpfFeed>,
    events: Option<EventLog>,
    history: BTreeMap<String, detect::UserHistory>,
    /// The runaway policy's view of each unit at its last sample.
    inputs: BTreeMap<String, UnitInput>,
    /// Moved into the blocking pool for each pass and back.
    sampler: Option<Sampler>,
    metrics: Arc<Metrics>,
    http: HttpState,
    agent: AgentInfo,
    interval: Duration,
    host_due: Instant,
    last_host_pass: Option<Instant>,
    /// BPF waits in progress at the last pass, for the snapshot.
    last_ongoing: Vec<crate::sources::bpf::Episode>,
}

impl Loop {
    async fn run(
        &mut self,
        mut changes: mpsc::UnboundedReceiver<Change>,
        mut bpf_rx: Option<mpsc::Receiver<crate::sources::bpf::BpfEvent>>,
        mut snapshot_rx: mpsc::Receiver<http::SnapshotRequest>,
        shutdown: impl Future<Output = ()>,
    ) {
        // Discovery sent the units present at start before returning.
        while let Ok(c) = changes.try_recv() {
            self.apply(c);
        }
        if self.model.units.is_empty() {
            tracing::warn!("watching 0 units: no cgroup directory matches the unit glob yet; waiting for one to start");
        } else {
            tracing::info!("watching {} units", self.model.units.len());
        }
        tokio::pin!(shutdown);
        self.pass().await;
        self.notifier.ready(&format!(
            "watching {} units, {}",
            self.model.units.len(),
            if self.agent.bpf_loaded {
                "BPF on"
            } else {
                "BPF off (PSI only)"
            }
        ));
        loop {
            let next = self
                .model
                .next_due()
                .map_or(self.host_due, |d| d.min(self.host_due));
            tokio::select! {
                _ = &mut shutdown => break,
                c = changes.recv() => match c {
                    Some(c) => {
                        let mut removed = matches!(c, Change::Removed(_));
                        self.apply(c);
                        while let Ok(c) = changes.try_recv() {
                            removed |= matches!(c, Change::Removed(_));
                            self.apply(c);
                        }
                        // A new unit is due at once (the loop samples and
                        // publishes it next); a stopped one leaves the
                        // metrics and the snapshot now, not at the next
                        // sampling pass.
                        if !removed {
                            continue;
                        }
                    }
                    None => {
                        tracing::error!("unit discovery stopped; the unit set is frozen");
                        changes = mpsc::unbounded_channel().1;
                        continue;
                    }
                },
                e = recv_bpf(&mut bpf_rx) => {
                    match e {
                        Some(e) => {
                            self.bpf_event(e);
                            self.http.changed();
                        }
                        None => {
                            tracing::error!("the eBPF event feed stopped; episodes and OOM kills are no longer seen");
                            bpf_rx = None;
                        }
                    }
                    continue;
                }
                Some(reply) = snapshot_rx.recv() => {
                    let _ = reply.send(self.snapshot());
                    continue;
                }
                _ = tokio::time::sleep_until(next.into()) => {}
            }
            self.pass().await;
            self.notifier.tick();
        }
        self.notifier.stopping();
    }

    fn apply(&mut self, c: Change) {
        let now = Instant::now();
        match c {
            Change::Added(u) => {
                tracing::info!(user = %u.user, cgroup_id = u.cgroup_id, "watching {}", u.path.display());
                self.metrics.add_unit(&u.user, &u.name);
                if let Some(b) = self.bpf.as_mut() {
                    b.watch(&u);
                }
                append(
                    &mut self.events,
                    EventBody::UnitStart {
                        user: u.user.clone(),
                        unit: u.name.clone(),
                    },
                );
                self.model.add_unit(u, self.interval, now);
            }
            Change::Removed(u) => self.drop_unit(&u),
        }
        self.metrics.set_units_watched(self.model.units.len());
        self.agent.units_watched = self.model.units.len();
        self.http.changed();
    }

    fn drop_unit(&mut self, u: &Unit) {
        if self.model.remove_unit(&u.path).is_some() {
            tracing::info!(user = %u.user, "unit stopped: {}", u.path.display());
            // A window cut by the stop is logged; its series go with the
            // unit's below.
            let now = unix_seconds(SystemTime::now());
            for body in self.detectors.unit_removed(&u.user, now) {
                self.record(body);
            }
            // The count first: a scrape that no longer sees the unit's
            // series then also sees it uncounted.
            self.metrics.set_units_watched(self.model.units.len());
            self.metrics.remove_unit(&u.user, &u.name);
            if let Some(s) = self.sampler.as_mut() {
                s.errors.forget_unit(&u.name);
                s.forget_unit(&u.path);
            }
            if let Some(b) = self.bpf.as_mut() {
                b.unwatch(u);
            }
            self.inputs.remove(&u.user);
            self.history.remove(&u.user);
            append(
                &mut self.events,
                EventBody::UnitStop {
                    user: u.user.clone(),
                    unit: u.name.clone(),
                },
            );
        }
        self.metrics.set_units_watched(self.model.units.len());
        self.agent.units_watched = self.model.units.len();
        self.http.changed();
    }

    /// One pass over the due units (and the host when due).
    async fn pass(&mut self) {
        let now = Instant::now();
        let due = self.model.due_with_procs(now, self.interval);
        let host_due = self.host_due <= now;
        let Some(mut sampler) = self.sampler.take() else {
            return;
        };
        let started = Instant::now();
        let joined = tokio::task::spawn_blocking(move || {
            let samples: Vec<(Arc<Unit>, Option<UnitSample>)> = due
                .into_iter()
                .map(|(u, with_procs)| {
                    let s = sampler.sample_unit_with(&u, with_procs);
                    (u, s)
                })
                .collect();
            let host = host_due.then(|| sampler.sample_host());
            sampler.end_pass();
            (sampler, samples, host)
        })
        .await;
        let (sampler, samples, host) = match joined {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("sampling pass failed: {e}");
                return;
            }
        };
        self.metrics
            .observe_sample_duration(started.elapsed().as_secs_f64());
        self.metrics.set_read_errors(sampler.errors.counts());
        self.sampler = Some(sampler);
        let mut sampled = Vec::new();
        for (unit, sample) in samples {
            match sample {
                Some(s) => {
                    if let Some(state) = self.model.update_unit(&unit.path, s, now) {
                        self.metrics.update_unit(state);
                    }
                    sampled.push(unit);
                }
                // Vanished mid-read: the unit stopped (discovery confirms).
                None => self.drop_unit(&unit),
            }
        }
        let host_sampled = host.is_some();
        if let Some(h) = host {
            self.model.update_host(h);
            if let Some(last) = self.last_host_pass {
                let achieved = now.saturating_duration_since(last);
                self.metrics.set_sample_interval(achieved.as_secs_f64());
                tracing::debug!(
                    achieved_ms = achieved.as_millis() as u64,
                    "sampling interval"
                );
            }
            self.last_host_pass = Some(now);
            let next = self.host_due + self.interval;
            self.host_due = if next <= now {
                now + self.interval
            } else {
                next
            };
        }

        // In-progress waits, read once per pass for the detectors and the
        // snapshot.
        let walk = self.bpf.as_ref().map(|b| b.walk()).unwrap_or_default();
        self.detect(&sampled, host_sampled, now, &walk);

        if let Some(b) = &self.bpf {
            if host_sampled {
                b.export_histograms(&self.model, &self.metrics);
            }
        }
        self.last_ongoing = walk.ongoing;
        self.http.pass_done();
    }

    /// The snapshot of the model as it is now (kept until it changes).
    fn snapshot(&mut self) -> Arc<crate::outputs::snapshot::Snapshot> {
        let http = self.http.clone();
        http.snapshot_for(|| {
            let mut snapshot = build::snapshot(&self.model, self.agent.clone());
            detect::annotate(
                &mut snapshot,
                &mut self.detectors,
                &self.inputs,
                &self.history,
            );
            if let Some(b) = &self.bpf {
                b.annotate(&mut snapshot, &self.model, &self.last_ongoing);
            }
            snapshot
        })
    }

    /// Runs the detectors on the units sampled in this pass, acts on their
    /// decisions, logs and counts what they concluded, and sets each unit's
    /// next sampling interval.
    fn detect(
        &mut self,
        sampled: &[Arc<Unit>],
        host_sampled: bool,
        now: Instant,
        walk: &crate::sources::bpf::TaskWalk,
    ) {
        let wall = unix_seconds(SystemTime::now());
        // The serve main thread's scheduler episodes, per sampled unit.
        let episodes: Vec<Vec<StallEpisode>> = sampled
            .iter()
            .map(|unit| {
                let serve = self.model.units.get(&unit.path).and_then(|s| s.serve_pid);
                self.bpf
                    .as_mut()
                    .map(|b| {
                        b.note_serve(unit, serve);
                        b.serve_episodes(unit, serve, &walk.ongoing)
                    })
                    .unwrap_or_default()
            })
            .collect();
        let mut ticks = Vec::with_capacity(sampled.len());
        // The unit of each tick, in the same order.
        let mut tick_units = Vec::with_capacity(sampled.len());
        for (unit, episodes) in sampled.iter().zip(&episodes) {
            let Some(state) = self.model.units.get(&unit.path) else {
                continue;
            };
            let last = self.inputs.remove(&unit.user);
            let Some(input) = detect::unit_input(state, wall, last) else {
                continue;
            };
            ticks.push(UnitTick {
                stall: StallTick {
                    now: wall,
                    interval_s: state.pressure.dt_s,
                    shares: detect::stall_shares(&state.pressure),
                    episodes,
                    culprit: None,
                    serve_wait: self
                        .bpf
                        .is_some()
                        .then(|| bpf::BpfFeed::serve_wait(unit, state.serve_pid, walk))
                        .flatten(),
                },
                runaway: input,
            });
            tick_units.push(unit);
        }
        let host = if host_sampled {
            self.model.host.as_ref().map(detect::host_input)
        } else {
            None
        };
        for body in self.detectors.on_tick(wall, &ticks, host.as_ref()) {
            self.record(body);
        }
        for (t, unit) in ticks.into_iter().zip(tick_units) {
            let user = t.runaway.user.clone();
            let stall = self.detectors.ongoing(&user).map_or(0.0, |w| w.duration_s);
            self.metrics.set_serve_stall(&user, stall);
            let interval = self.detectors.sample_interval_for(&t.runaway);
            self.model.set_interval(&unit.path, interval, now);
            self.inputs.insert(user, t.runaway);
        }
    }

    fn bpf_event(&mut self, e: crate::sources::bpf::BpfEvent) {
        use crate::sources::bpf::BpfEvent;
        match e {
            BpfEvent::Episode(ep) => {
                if let Some(b) = self.bpf.as_mut() {
                    b.episode(ep);
                }
            }
            BpfEvent::Oom(v) => {
                let Some(b) = self.bpf.as_mut() else {
                    return;
                };
                let kill = b.oom_kill(&v, &self.model);
                tracing::warn!(
                    user = ?kill.user, pid = kill.pid, comm = %kill.comm, scope = kill.scope.as_str(),
                    anon_rss = kill.anon_rss, "kernel OOM kill"
                );
                self.record(EventBody::OomKill(kill));
            }
        }
    }

    /// Counts an event in the metrics, remembers it for the snapshot and
    /// appends it to the event log.
    fn record(&mut self, body: EventBody) {
        let wall = unix_seconds(SystemTime::now());
        match &body {
            EventBody::StallWindow(w) => {
                self.metrics
                    .record_stall_window(&w.user, w.class, w.cause, w.duration_s);
            }
            EventBody::Runaway(a) => {
                self.metrics.inc_runaway_action(&a.user, a.action.as_str());
                self.history.entry(a.user.clone()).or_default().last_action =
                    Some((wall, a.clone()));
            }
            EventBody::OomKill(o) => {
                if let Some(user) = &o.user {
                    self.metrics.inc_oom_kill(user, o.scope);
                    self.history.entry(user.clone()).or_default().last_oom =
                        Some((wall, o.clone()));
                }
            }
            _ => {}
        }
        append(&mut self.events, body);
    }
}
