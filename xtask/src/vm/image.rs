//! The VM image (kernel, initramfs, rootfs) under `target/vm/image`, cached:
//! rebuilt only when its inputs change (the hash of every file in
//! `tests/vm/image/`: the package list, the build script, the seed unit,
//! the stand-in `t3` and the units).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};

use super::host::{run, step};
use super::Paths;

pub struct Image {
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
    /// Reused from an earlier build.
    pub cached: bool,
}

/// sha256 over the image inputs' names and contents (via `sha256sum`, to keep
/// xtask's dependencies few).
fn inputs_hash(dir: &Path) -> anyhow::Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no image inputs in {}", dir.display());
    }
    let out = Command::new("sha256sum")
        .args(&files)
        .current_dir(dir)
        .output()
        .context("run sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    // The listing holds "<hash>  <path>" per file: hash the listing itself.
    let listing = String::from_utf8_lossy(&out.stdout).replace(&dir.display().to_string(), "");
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("run sha256sum")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("sha256sum stdin")?;
        stdin
            .write_all(listing.as_bytes())
            .context("write to sha256sum")?;
    }
    let out = child.wait_with_output().context("wait for sha256sum")?;
    let hash = String::from_utf8_lossy(&out.stdout);
    Ok(hash
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// Returns the image, building it first when missing or stale.
pub fn ensure(paths: &Paths, rebuild: bool) -> anyhow::Result<Image> {
    let src = paths.vm_src.join("image");
    let dir = paths.out.join("image");
    let img = Image {
        vmlinuz: dir.join("vmlinuz"),
        initrd: dir.join("initrd.cpio.gz"),
        rootfs: dir.join("rootfs.img"),
        cached: true,
    };
    let hash = inputs_hash(&src)?;
    let stamp = dir.join("inputs.sha256");
    let have = std::fs::read_to_string(&stamp).unwrap_or_default();
    let complete = img.vmlinuz.is_file() && img.initrd.is_file() && img.rootfs.is_file();
    if !rebuild && complete && have.trim() == hash {
        step(&format!(
            "image cached ({}), inputs {}",
            dir.display(),
            &hash[..12]
        ));
        return Ok(img);
    }
    step(&format!(
        "building image in {} (inputs {}{})",
        dir.display(),
        &hash[..12.min(hash.len())],
        if complete { ", changed" } else { "" }
    ));
    let t = Instant::now();
    let _ = std::fs::remove_file(&stamp);
    run(Command::new("sh")
        .arg(src.join("build.sh"))
        .arg(&dir)
        .arg(src.join("t3-serve@.service")))?;
    std::fs::write(&stamp, format!("{hash}\n"))
        .with_context(|| format!("write {}", stamp.display()))?;
    step(&format!(
        "image built in {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(Image {
        cached: false,
        ..img
    })
}
