//! Root + BPF: the embedded object loads, every program attaches, the ring
//! buffers are readable, and `probe()` (for `t3pressure check`) agrees.

use std::time::Duration;

use t3pressure::sources::bpf::{probe::probe, Bpf, BpfConfig};
use t3pressure_tests::env::{require_root_bpf, serial};

#[test]
fn loads_attaches_and_streams() {
    require_root_bpf();
    let _serial = serial();
    let started = std::time::Instant::now();
    let mut bpf = Bpf::load(&BpfConfig::default()).expect("load and attach all programs");
    eprintln!("load+verify+attach: {:?}", started.elapsed());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut rx = bpf.events().expect("ring buffers readable");
        // Nothing watched: nothing arrives.
        let got = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
        assert!(got.is_err(), "unexpected event: {got:?}");
    });
    assert!(matches!(
        bpf.events(),
        Err(t3pressure::sources::bpf::BpfError::EventsTaken)
    ));
    assert_eq!(bpf.stats().ringbuf_full, 0);
}

#[test]
fn probe_reports_a_loadable_host() {
    require_root_bpf();
    let _serial = serial();
    let report = probe();
    for item in &report.items {
        eprintln!(
            "{:<20} {} {}",
            item.name,
            if item.ok { "ok" } else { "FAIL" },
            item.detail
        );
    }
    assert!(report.loaded, "probe could not load: {report:?}");
    assert!(report.items.iter().all(|i| i.ok), "{report:?}");
}
