//! Boots the scenario VM: QEMU TCG (`/dev/kvm` here is a PVM device that
//! does not run a stock kernel), -smp 2 -m 2048, the rootfs as a snapshot,
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
        "booting the VM (TCG, -smp 2 -m 2048, timeout {budget_s} s), serial log {}",
        serial.display()
    ));
    let status = Command::new("timeout")
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
            "2048",
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
        .status()
        .context("run qemu-system-x86_64 under timeout")?;
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
