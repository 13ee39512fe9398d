//! `t3pressure run`: the agent. One tokio runtime; discovery feeds the unit
//! set; a sampling loop with a per-unit "next due" time reads units (and the
//! host at the normal interval), updates the model, the metrics and the
//! snapshot, which the HTTP endpoint serves. SIGTERM/SIGINT stop it cleanly.

use std::future::Future;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::model::sample::{Unit, UnitSample};
use crate::model::state::Model;
use crate::outputs::http::{self, HttpState};
use crate::outputs::metrics::Metrics;
use crate::outputs::snapshot::{build, AgentInfo};
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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

    // HOOK(bpf): load and attach the eBPF programs here (unless --no-bpf),
    // feed their events into the loop below, and set `bpf_error` on failure.
    let bpf_error = if config.no_bpf {
        Some("disabled by --no-bpf".to_string())
    } else {
        Some("eBPF loader not built into this agent yet".to_string())
    };
    if let Some(why) = &bpf_error {
        tracing::warn!("BPF not loaded ({why}): stall windows come from PSI alone");
    }
    metrics.set_bpf_loaded(bpf_error.is_none());

    // HOOK(eventlog): open the event log in `config.state_dir`, write
    // agent_start here and agent_stop after the loop.

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(
        "serving /metrics, /healthz and /api/v1/snapshot on http://{}",
        config.listen
    );
    let http_state = HttpState::new(config.sample_interval() * 10 + Duration::from_secs(5));
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
        model: Model::default(),
        sampler: Some(Sampler::new(&config.cgroup_root, &config.proc_root)),
        metrics,
        http: http_state,
        agent,
        interval: config.sample_interval(),
        host_due: Instant::now(),
        last_host_pass: None,
    };
    sampling.run(changes, shutdown).await;

    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("HTTP server: {e}"),
        Err(e) => tracing::warn!("HTTP server task: {e}"),
    }
    drop(stop_rx);
    Ok(())
}

struct Loop {
    model: Model,
    /// Moved into the blocking pool for each pass and back.
    sampler: Option<Sampler>,
    metrics: Arc<Metrics>,
    http: HttpState,
    agent: AgentInfo,
    interval: Duration,
    host_due: Instant,
    last_host_pass: Option<Instant>,
}

impl Loop {
    async fn run(
        &mut self,
        mut changes: mpsc::UnboundedReceiver<Change>,
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
        loop {
            let next = self
                .model
                .next_due()
                .map_or(self.host_due, |d| d.min(self.host_due));
            tokio::select! {
                _ = &mut shutdown => break,
                c = changes.recv() => match c {
                    Some(c) => {
                        self.apply(c);
                        while let Ok(c) = changes.try_recv() {
                            self.apply(c);
                        }
                        continue;
                    }
                    None => {
                        tracing::error!("unit discovery stopped; the unit set is frozen");
                        changes = mpsc::unbounded_channel().1;
                        continue;
                    }
                },
                _ = tokio::time::sleep_until(next.into()) => {}
            }
            self.pass().await;
        }
    }

    fn apply(&mut self, c: Change) {
        let now = Instant::now();
        match c {
            Change::Added(u) => {
                tracing::info!(user = %u.user, cgroup_id = u.cgroup_id, "watching {}", u.path.display());
                self.metrics.add_unit(&u.user, &u.name);
                // HOOK(bpf): add u.cgroup_id at u.level to the BPF filter map.
                // HOOK(eventlog): unit_start.
                self.model.add_unit(u, self.interval, now);
            }
            Change::Removed(u) => self.drop_unit(&u),
        }
        self.metrics.set_units_watched(self.model.units.len());
        self.agent.units_watched = self.model.units.len();
    }

    fn drop_unit(&mut self, u: &Unit) {
        if self.model.remove_unit(&u.path).is_some() {
            tracing::info!(user = %u.user, "unit stopped: {}", u.path.display());
            self.metrics.remove_unit(&u.user, &u.name);
            if let Some(s) = self.sampler.as_mut() {
                s.errors.forget_unit(&u.name);
            }
            // HOOK(bpf): remove the cgroup id from the filter map.
            // HOOK(eventlog): unit_stop.
        }
        self.metrics.set_units_watched(self.model.units.len());
        self.agent.units_watched = self.model.units.len();
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
            let samples: Vec<(Unit, Option<UnitSample>)> = due
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
        for (unit, sample) in samples {
            match sample {
                Some(s) => {
                    self.model.update_unit(&unit.path, s, now);
                    if let Some(state) = self.model.units.get(&unit.path) {
                        self.metrics.update_unit(state);
                    }
                }
                // Vanished mid-read: the unit stopped (discovery confirms).
                None => self.drop_unit(&unit),
            }
        }
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

        // HOOK(detectors): run the stall-window and runaway detectors on
        // `self.model` here; they may call `self.model.set_interval(path,
        // fast, now)` for units near their limit and record through
        // `self.metrics` (record_stall_window, set_serve_stall, ...).
        // HOOK(eventlog): append what the detectors concluded.

        let snapshot = build::snapshot(&self.model, self.agent.clone());
        self.http.publish(self.metrics.render(), snapshot);
    }
}
