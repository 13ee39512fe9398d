//! `cargo xtask`: project automation.
mod deb;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("deb") => deb::run(&args[1..]),
        _ => anyhow::bail!("usage: cargo xtask deb [--skip-build] [-- <cargo-deb args>]"),
    }
}
