//! Checks of the deploy/ folder with the real tools: the systemd unit
//! (`systemd-analyze verify` and `security --offline=true`, exposure <= 3.0),
//! the Prometheus files (`promtool check rules`, `test rules`, `check config`),
//! and the Grafana dashboard's metric names. Each test checks its tool first
//! and fails loudly without it. The Debian package is checked where it is
//! installed for real: the VM suite's `package` scenario (tests/vm/).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use t3pressure::outputs::metrics::SPEC_METRIC_NAMES as SPEC_METRICS;

/// Histograms of the spec: their `_bucket`, `_sum` and `_count` series exist.
const SPEC_HISTOGRAMS: &[&str] = &[
    "t3pressure_sched_runqueue_wait_seconds",
    "t3pressure_sched_blocked_seconds",
    "t3pressure_stall_window_seconds",
    "t3pressure_sample_duration_seconds",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn deploy(rel: &str) -> PathBuf {
    root().join("deploy").join(rel)
}

/// Fails the test, with the install hint, when a tool is missing.
fn require_tool(tool: &str, version_arg: &str, install: &str) {
    let ok = Command::new(tool)
        .arg(version_arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "{tool} is missing on this machine: {install}");
}

fn require_systemd_analyze() {
    require_tool("systemd-analyze", "--version", "apt-get install -y systemd");
}

fn require_promtool() {
    require_tool("promtool", "--version", "apt-get install -y prometheus");
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    eprintln!(
        "$ {cmd:?}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The unit with its ExecStart binary made checkable on a machine without
/// the package: `systemd-analyze verify` insists the executable exists, so
/// /usr/bin/t3pressure is replaced by /usr/bin/true unless it is installed.
fn unit_copy(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(deploy("systemd/t3pressure.service")).expect("read unit");
    let text = if Path::new("/usr/bin/t3pressure").exists() {
        text
    } else {
        text.replace("ExecStart=/usr/bin/t3pressure ", "ExecStart=/usr/bin/true ")
    };
    let path = dir.join("t3pressure.service");
    std::fs::write(&path, text).expect("write unit copy");
    path
}

#[test]
fn systemd_unit_verifies_clean() {
    require_systemd_analyze();
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_copy(dir.path());
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    // Warnings (unknown keys, bad values) do not change the exit code.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("t3pressure.service"))
        .collect();
    assert!(
        warnings.is_empty(),
        "systemd-analyze verify warns: {warnings:#?}"
    );
}

/// `Overall exposure level for t3pressure.service: 2.6 OK` -> 2.6
fn parse_exposure(text: &str) -> Option<f64> {
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let after = line.rsplit_once(':')?.1;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn exposure_parser_reads_systemd_output() {
    let out = "✗ UMask=  Files created by service are world-readable  0.1\n\n\
               → Overall exposure level for t3pressure.service: 2.6 OK 🙂\n";
    assert_eq!(parse_exposure(out), Some(2.6));
    assert_eq!(parse_exposure(""), None);
    assert_eq!(
        parse_exposure("→ Overall exposure level for x.service: high"),
        None
    );
}

#[test]
fn systemd_unit_exposure_at_most_3() {
    require_systemd_analyze();
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_copy(dir.path());
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let exposure = parse_exposure(&text).expect("an 'Overall exposure level' line");
    eprintln!("systemd-analyze security exposure: {exposure}");
    assert!(exposure <= 3.0, "exposure {exposure} > 3.0");
}

#[test]
fn promtool_check_rules() {
    require_promtool();
    let out = run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(deploy("prometheus/alerts.yml")));
    assert!(out.status.success(), "promtool check rules failed");
}

#[test]
fn promtool_test_rules() {
    require_promtool();
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy("prometheus/tests"))
        .expect("deploy/prometheus/tests")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no promtool unit tests found");
    let out = run(Command::new("promtool")
        .args(["test", "rules"])
        .args(&files));
    assert!(out.status.success(), "promtool test rules failed");
    // Every alert of alerts.yml is exercised by at least one test.
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).expect("alerts.yml");
    let tests: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("test file"))
        .collect();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tests.contains(&format!("alertname: {name}")),
                "alert {name} has no promtool unit test"
            );
        }
    }
}

#[test]
fn promtool_check_config_with_scrape_job() {
    require_promtool();
    let dir = tempfile::tempdir().expect("tempdir");
    let scrape = std::fs::read_to_string(deploy("prometheus/scrape.yml")).expect("scrape.yml");
    assert!(
        scrape.contains("job_name: t3pressure"),
        "scrape.yml has the t3pressure job"
    );
    let alerts = deploy("prometheus/alerts.yml");
    // A minimal prometheus.yml: the rules, the t3pressure job from scrape.yml
    // and, next to it, the existing `devvm` node_exporter job.
    let config = format!(
        "global:\n  scrape_interval: 15s\n  evaluation_interval: 5s\n\
         rule_files:\n  - {}\n{}\n  - job_name: devvm\n    static_configs:\n      - targets: [\"devvm:9100\"]\n",
        alerts.display(),
        scrape.trim_end()
    );
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, config).expect("write prometheus.yml");
    let out = run(Command::new("promtool")
        .args(["check", "config"])
        .arg(&path));
    assert!(out.status.success(), "promtool check config failed");
}

/// Every `t3pressure_*` name in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("t3pressure_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn is_spec_metric(name: &str) -> bool {
    if SPEC_METRICS.contains(&name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|base| SPEC_HISTOGRAMS.contains(&base))
    })
}

/// Collects every PromQL string of a dashboard: panel targets' `expr` and
/// the template variables' queries.
fn collect_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) if s.contains('(') => {
                        out.push(s.clone())
                    }
                    _ => collect_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_queries(i, out)),
        _ => {}
    }
}

#[test]
fn grafana_dashboard_uses_only_spec_metrics() {
    let text = std::fs::read_to_string(deploy("grafana/t3pressure.json")).expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is valid JSON");
    assert!(
        dash["title"].is_string() && dash["panels"].is_array(),
        "dashboard shape"
    );
    let mut queries = Vec::new();
    collect_queries(&dash, &mut queries);
    assert!(queries.len() >= 10, "only {} queries", queries.len());
    for q in &queries {
        let names = metric_names(q);
        assert!(!names.is_empty(), "query uses no t3pressure metric: {q}");
        for n in names {
            assert!(
                is_spec_metric(&n),
                "dashboard uses {n}, not a metric of the spec: {q}"
            );
        }
    }
    // What the issue asks the dashboard to show.
    let all = queries.join("\n");
    for needed in [
        "t3pressure_memory_current_bytes",
        "t3pressure_memory_max_bytes",
        "t3pressure_pressure_memory_stalled_seconds_total",
        "t3pressure_pressure_io_stalled_seconds_total",
        "t3pressure_pressure_cpu_waiting_seconds_total",
        "t3pressure_stall_windows_total",
        "t3pressure_runaway_actions_total",
        "t3pressure_oom_kills_total",
    ] {
        assert!(all.contains(needed), "dashboard shows no {needed}");
    }
    assert!(all.contains("class"), "stall windows are shown by class");
}

#[test]
fn alert_rules_use_only_spec_metrics() {
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).expect("alerts.yml");
    let exprs: String = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let names = metric_names(&exprs);
    assert!(!names.is_empty());
    for n in names {
        assert!(
            is_spec_metric(&n),
            "alerts.yml uses {n}, not a metric of the spec"
        );
    }
}

/// `CapabilityBoundingSet=` of the shipped unit, as setpriv names
/// (`CAP_BPF` -> `bpf`).
fn unit_capabilities(key: &str) -> Vec<String> {
    let unit = std::fs::read_to_string(deploy("systemd/t3pressure.service")).expect("read unit");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("unit has no {key}="));
    line.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// Capability numbers setpriv knows, for reading CapBnd.
fn cap_number(name: &str) -> Option<u32> {
    Some(match name {
        "dac_read_search" => 2,
        "kill" => 5,
        "ipc_lock" => 14,
        "sys_ptrace" => 19,
        "sys_resource" => 24,
        "perfmon" => 38,
        "bpf" => 39,
        _ => return None,
    })
}

/// Runs deploy/tests/caps_probe.py as uid/gid 65534 (like the unit's
/// DynamicUser) with exactly `caps`, against a fresh root-owned victim.
/// Returns the probe's results and whether the victim was killed.
fn probe_with(caps: &[String]) -> (serde_json::Map<String, serde_json::Value>, bool) {
    let mut victim = Command::new("sleep")
        .arg("120")
        .spawn()
        .expect("spawn victim");
    let set = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let out = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--no-new-privs",
        ])
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg("/usr/bin/python3")
        .arg(deploy("tests/caps_probe.py"))
        .arg(victim.id().to_string()));
    assert!(out.status.success(), "probe failed to run");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let killed = matches!(victim.try_wait(), Ok(Some(_)));
    if !killed {
        let _ = victim.kill();
        let _ = victim.wait();
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("probe JSON");
    (v.as_object().expect("probe object").clone(), killed)
}

/// Operations that failed. Debian and Ubuntu kernels carry a
/// perf_event_paranoid level 3 under which perf_event_open needs
/// CAP_SYS_ADMIN whatever CAP_PERFMON says: there the classic (perf-based)
/// tracepoint attach is expected to fail and only the raw tracepoint attach
/// (BPF_RAW_TRACEPOINT_OPEN, no perf event) has to work.
fn failed_ops(r: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let paranoid: i32 = r
        .get("_perf_event_paranoid")
        .and_then(|v| v.as_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    r.iter()
        .filter(|(k, v)| !k.starts_with('_') && v.as_str() != Some("ok"))
        .filter(|(k, v)| {
            !(paranoid >= 3
                && k.as_str() == "perf_event_attach_tracepoint"
                && v.as_str() == Some("EACCES"))
        })
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
        .collect()
}

/// The unit's capability set is enough for what the agent does (load and
/// attach a tracepoint BPF program, read tracefs and other users' /proc,
/// SIGKILL another user's process through a pidfd, process_mrelease,
/// mlockall) as a non-root user, and each capability is needed by at least
/// one of those. Needs root (to hand out capabilities), setpriv, python3.
#[test]
fn unit_capabilities_suffice_and_each_is_needed() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    require_tool("setpriv", "--version", "apt-get install -y util-linux");
    require_tool(
        "/usr/bin/python3",
        "--version",
        "apt-get install -y python3",
    );
    let caps = unit_capabilities("CapabilityBoundingSet");
    assert_eq!(
        caps,
        unit_capabilities("AmbientCapabilities"),
        "ambient = bounding set"
    );

    // A container may lack some capability in its own bounding set (here:
    // CAP_SYS_RESOURCE); those cannot be handed out, so they are left out
    // and named.
    let status = std::fs::read_to_string("/proc/self/status").expect("own status");
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .expect("CapBnd");
    let (grantable, missing): (Vec<String>, Vec<String>) = caps
        .into_iter()
        .partition(|c| cap_number(c).is_some_and(|n| bnd & (1 << n) != 0));
    if !missing.is_empty() {
        eprintln!("NOT TESTED (absent from this host's bounding set): {missing:?}");
    }

    let (all, killed) = probe_with(&grantable);
    eprintln!("with {grantable:?}: {all:?}");
    assert!(
        failed_ops(&all).is_empty(),
        "with the unit's capabilities: {:?}",
        failed_ops(&all)
    );
    assert!(killed, "the victim survived pidfd_send_signal(SIGKILL)");

    // CAP_SYS_RESOURCE has no probe: on >= 5.11 BPF memory is charged to
    // the memcg, not RLIMIT_MEMLOCK; it stays for older kernels.
    for cap in grantable.iter().filter(|c| *c != "sys_resource") {
        let without: Vec<String> = grantable.iter().filter(|c| *c != cap).cloned().collect();
        let (r, _) = probe_with(&without);
        let failed = failed_ops(&r);
        eprintln!("without {cap}: {failed:?}");
        assert!(
            !failed.is_empty(),
            "nothing needs {cap}: drop it from the unit"
        );
    }
}
