//! Results of a VM run: reads the runner's per-scenario JSON from the share,
//! applies `KNOWN_FAILURES`, prints the table (scenario, expected, measured,
//! pass/fail) and writes `target/vm/results.json`.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::{Paths, KNOWN_FAILURES};

pub struct Timings {
    pub image_s: f64,
    pub image_cached: bool,
    pub agent_build_s: f64,
    pub vm_s: f64,
    pub total_s: f64,
}

/// A scenario's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    /// Agent checks failed and the scenario is in KNOWN_FAILURES.
    KnownFailure,
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::KnownFailure => "KNOWN FAILURE",
            Status::Fail => "FAIL",
        }
    }
}

fn verdict(name: &str, r: &Value) -> (Status, Option<&'static str>) {
    let ok = r["ok"].as_bool().unwrap_or(false);
    let infra_ok = r["infra_ok"].as_bool().unwrap_or(false);
    let known = KNOWN_FAILURES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, why)| *why);
    if ok {
        (Status::Pass, known)
    } else if infra_ok && r["error"].is_null() && known.is_some() {
        (Status::KnownFailure, known)
    } else {
        (Status::Fail, known)
    }
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('~');
        t
    }
}

pub fn print_serial_tail(serial: &Path, lines: usize) {
    // Lossy: the firmware writes terminal escapes that are not UTF-8.
    let bytes = std::fs::read(serial).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    eprintln!("---- last {lines} lines of {} ----", serial.display());
    for l in &all[all.len().saturating_sub(lines)..] {
        eprintln!("{l}");
    }
    eprintln!("---- end of serial log ----");
}

pub fn finish(
    paths: &Paths,
    share: &Path,
    scenarios: &[String],
    t: &Timings,
    release: bool,
) -> anyhow::Result<()> {
    let out = share.join("out");
    let mut rows = Vec::new();
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for name in scenarios {
        let file = out.join(format!("{name}.json"));
        let r: Value = match std::fs::read(&file) {
            Ok(b) => {
                serde_json::from_slice(&b).with_context(|| format!("parse {}", file.display()))?
            }
            Err(_) => json!({"name": name, "ok": false, "infra_ok": false, "checks": [],
                             "error": "no result: the runner did not write one"}),
        };
        let (status, known) = verdict(name, &r);
        if status == Status::Fail {
            failed.push(name.clone());
        }
        for c in r["checks"].as_array().into_iter().flatten() {
            rows.push([
                name.clone(),
                c["kind"].as_str().unwrap_or("").to_owned(),
                c["name"].as_str().unwrap_or("").to_owned(),
                c["expected"].as_str().unwrap_or("").to_owned(),
                c["measured"].as_str().unwrap_or("").to_owned(),
                if c["ok"].as_bool().unwrap_or(false) {
                    "pass"
                } else {
                    "FAIL"
                }
                .to_owned(),
            ]);
        }
        if let Some(e) = r["error"].as_str() {
            let last = e.lines().last().unwrap_or(e);
            rows.push([
                name.clone(),
                "error".into(),
                "scenario raised".into(),
                "no error".into(),
                last.into(),
                "FAIL".into(),
            ]);
        }
        rows.push([
            name.clone(),
            "=".into(),
            "scenario".into(),
            String::new(),
            String::new(),
            status.as_str().into(),
        ]);
        let mut r = r;
        r["status"] = json!(status.as_str());
        r["known_failure_reason"] = json!(known);
        results.push(r);
    }

    let widths = [16, 5, 44, 40, 44, 13];
    let header = [
        "scenario", "kind", "check", "expected", "measured", "result",
    ];
    let line = |cols: &[String]| {
        cols.iter()
            .zip(widths)
            .map(|(c, w)| format!("{:<w$}", cut(c, w)))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    println!();
    println!("{}", line(&header.map(String::from)));
    println!("{}", widths.map(|w| "-".repeat(w)).join("-+-"));
    for r in &rows {
        println!("{}", line(r));
    }
    println!();
    for r in &results {
        if r["status"] == json!("KNOWN FAILURE") {
            println!(
                "known failure: {}: {}",
                r["name"].as_str().unwrap_or(""),
                r["known_failure_reason"].as_str().unwrap_or("")
            );
        }
    }
    println!(
        "wall time: {:.0} s total (image {:.0} s{}, agent package build {:.0} s, VM {:.0} s)",
        t.total_s,
        t.image_s,
        if t.image_cached { " cached" } else { " built" },
        t.agent_build_s,
        t.vm_s
    );

    let doc = json!({
        "scenarios": results,
        "failed": failed,
        "boot": read_json(&out.join("boot.json")),
        "agent_profile": if release { "release" } else { "debug" },
        "timings_s": {
            "total": t.total_s, "image": t.image_s, "image_cached": t.image_cached,
            "agent_build": t.agent_build_s, "vm": t.vm_s,
        },
        "artifacts": {
            "serial_log": paths.out.join("serial.log"),
            "scenario_json": out,
            "agent_journal": out.join("agent-journal.txt"),
            "events": out.join("events.jsonl"),
        },
    });
    let file = paths.out.join("results.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("write {}", file.display()))?;
    println!("results: {}", file.display());
    if !failed.is_empty() {
        print_serial_tail(&paths.out.join("serial.log"), 40);
        bail!("VM scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}

fn read_json(path: &Path) -> Value {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}
