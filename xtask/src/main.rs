//! `cargo xtask`: project automation.

mod vm;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("vm") => vm::run(&args[1..]),
        _ => anyhow::bail!("usage: cargo xtask vm [--scenario NAME]... [--keep]"),
    }
}
