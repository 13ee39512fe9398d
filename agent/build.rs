//! Builds the eBPF programs (`agent-ebpf`) with aya-build and Debian's
//! `rustc-web` toolchain (linked as rustup toolchain `debweb`, see
//! ../shared/docs/toolchain.md); `src/sources/bpf` embeds the object.

use aya_build::{build_ebpf, Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow::anyhow!("agent crate has no parent directory"))?;
    let ebpf_dir = root.join("agent-ebpf");
    let common_dir = root.join("agent-common");
    // aya-build watches the eBPF crate; the shared types change it too.
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    build_ebpf(
        [Package {
            name: "agent-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        Toolchain::Custom("debweb"),
    )
}
