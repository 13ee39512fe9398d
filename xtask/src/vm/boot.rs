//! Boots the scenario VM: QEMU TCG (`/dev/kvm` here is a PVM device that
//! does not run a stock kernel), -smp 2 -m 3072, the rootfs as a snapshot,
//! `target/vm/share` over 9p, the serial console to `target/vm/serial.log`,
//! all under `timeout` so a hung boot fails instead of hanging CI.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use super::host::{run, step};
use super::image::Image;
use super::Paths;

/// Fills `target/vm/share`: the agent's .deb (`pkg/t3pressure.deb`), the
/// scenario scripts, the scenario list; clears the previous run's results.
pub fn prepare_share(paths: &Paths, deb: &Path, scenarios: &[String]) -> anyhow::Result<PathBuf> {
    let share = paths.out.join("share");
    if share.exists() {
        std::fs::remove_dir_all(&share).with_context(|| format!("remove {}", share.display()))?;
    }
    for d in ["pkg", "out"] {
        std::fs::create_dir_all(share.join(d))
            .with_context(|| format!("create {}/{d}", share.display()))?;
    }
    std::fs::copy(deb, share.join("pkg/t3pressure.deb"))
        .with_context(|| format!("copy {} into the share", deb.display()))?;
    run(Command::new("cp")
        .arg("-r")
        .arg(&paths.vm_src)
        .arg(share.join("vm")))?;
    let config = serde_json::json!({ "scenarios": scenarios });
    std::fs::write(
        share.join("config.json"),
        serde_json::to_vec_pretty(&config)?,
    )
    .context("write share/config.json")?;
    Ok(share)
}

/// Guest memory. 3 GiB: two full runs of 2026-11-23 froze in the last
/// scenarios with 2 GiB (units capped at 512M each, Prometheus, the agent
/// mlocked, a journal in RAM).
const MEMORY_MIB: u32 = 3072;
/// Longest silence on the serial console before the VM counts as hung;
/// the slowest normal step (installing the package, which waits for the
/// agent's READY) prints within about 2 minutes.
const SILENCE_S: u64 = 420;

/// Boots once; returns when the VM powered itself off. Fails when QEMU
/// fails, times out, or the runner did not finish (no `out/done.json`).
pub fn boot(
    paths: &Paths,
    img: &Image,
    share: &Path,
    budget_s: u64,
    keep: bool,
) -> anyhow::Result<()> {
    let serial = paths.out.join("serial.log");
    let log = File::create(&serial).with_context(|| format!("create {}", serial.display()))?;
    let drive = if keep {
        let kept = paths.out.join("last-rootfs.img");
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(&img.rootfs)
            .arg(&kept))?;
        format!("file={},format=raw,if=virtio", kept.display())
    } else {
        format!(
            "file={},format=raw,if=virtio,snapshot=on",
            img.rootfs.display()
        )
    };
    step(&format!(
        "booting the VM (TCG, -smp 2 -m {MEMORY_MIB}, timeout {budget_s} s, silence limit \
         {SILENCE_S} s), serial log {}",
        serial.display()
    ));
    let mut child = Command::new("timeout")
        .args([
            "--kill-after=15",
            &budget_s.to_string(),
            "qemu-system-x86_64",
        ])
        .args([
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-m",
            &MEMORY_MIB.to_string(),
            "-smp",
            "2",
        ])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&img.vmlinuz)
        .arg("-initrd")
        .arg(&img.initrd)
        .args(["-drive", &drive])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=share,security_model=none,id=share",
            share.display()
        ))
        .args([
            "-append",
            "console=ttyS0 root=/dev/vda rw panic=-1 quiet systemd.unified_cgroup_hierarchy=1 \
             systemd.show_status=error",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("dup serial log")?)
        .stderr(log)
        .spawn()
        .context("run qemu-system-x86_64 under timeout")?;
    // A VM that prints nothing for SILENCE_S has hung (twice seen in the
    // `restart` scenario on 2026-11-23: no output, the runner's own alarm
    // never fired, QEMU spinning): stop it then instead of at the budget.
    let mut last_len = 0u64;
    let mut last_change = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("wait for qemu")? {
            break status;
        }
        let len = std::fs::metadata(&serial).map(|m| m.len()).unwrap_or(0);
        if len != last_len {
            last_len = len;
            last_change = std::time::Instant::now();
        } else if last_change.elapsed().as_secs() >= SILENCE_S {
            let _ = child.kill();
            let _ = child.wait();
            let tail = std::fs::read_to_string(&serial).unwrap_or_default();
            let last = tail
                .lines()
                .rev()
                .find(|l| l.contains("[runner"))
                .unwrap_or("");
            bail!(
                "the VM printed nothing for {SILENCE_S} s and was stopped: it hung (last runner \
                 line: {last}); see {}",
                serial.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    };
    match status.code() {
        Some(0) => {}
        Some(124) | Some(137) => bail!("the VM did not power off within {budget_s} s (timeout)"),
        _ => bail!("qemu-system-x86_64 failed: {status}"),
    }
    if !share.join("out/boot.json").is_file() {
        bail!("the VM powered off before the scenario runner started (no out/boot.json)");
    }
    if !share.join("out/done.json").is_file() {
        bail!("the scenario runner did not finish (no out/done.json)");
    }
    Ok(())
}
