//! The shipped devvm configuration (`deploy/config.toml`) parses with the
//! agent's own `Config` (deny_unknown_fields) and documents every key.

use t3pressure::config::{Config, Mode};

const DEPLOY_CONFIG: &str = include_str!("../../deploy/config.toml");

#[test]
fn deploy_config_parses_and_enforces() {
    let c = Config::from_toml(DEPLOY_CONFIG).expect("deploy/config.toml must parse and validate");
    assert_eq!(c.mode, Mode::Enforce, "the devvm runs enforce");
    assert_eq!(c.listen.port(), 9773, "scrape.yml targets :9773");
    assert!(
        c.listen.ip().is_unspecified(),
        "the in-cluster Prometheus scrapes over the network"
    );
    assert!(!c.no_bpf);
}

/// Every key of `Config` (from its serialized defaults) is set or shown,
/// commented, in the shipped file, so the file documents them all.
#[test]
fn deploy_config_mentions_every_key() {
    let defaults = toml::to_string(&Config::default()).expect("serialize defaults");
    let table: toml::Table = toml::from_str(&defaults).expect("parse defaults");
    let mut keys = vec!["serve_match".to_string()]; // None: not serialized
    for (k, v) in &table {
        match v {
            toml::Value::Table(sub) => keys.extend(sub.keys().cloned()),
            _ => keys.push(k.clone()),
        }
    }
    for key in keys {
        let shown = DEPLOY_CONFIG.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{key} ="))
        });
        assert!(shown, "deploy/config.toml does not document key {key:?}");
    }
}
