//! `cargo xtask`: project automation. One module per command; commands shell
//! out plainly and say what they do, one line per step.
//!
//! - `cargo xtask setup [--test]`: install what is missing to build (and test).
//! - `cargo xtask run [ARGS...]`: setup, build, run the agent (`t3pressure run`).
//! - `cargo xtask test`: setup, then the whole test suite (what `.ci/run` runs).
//! - `cargo xtask deb`: the Debian package (binary, unit, config, man page).
//! - `cargo xtask vm`: the real-system scenario suite in a QEMU VM.

mod deb;
mod setup;
mod suite;
mod util;
mod vm;

use anyhow::Result;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  setup [--test]     install what is missing to build t3pressure (with --test: also
                     what the test suite needs); idempotent, fast when all is there
  run [ARGS...]      setup, build (release), and run `t3pressure run ARGS...` as root
  test [--no-vm]     setup --test, then fmt, clippy, unit, root/BPF, tmux and VM tests
  deb [--skip-build] [--profile release|dev] [--fast] [-- ARGS]
                     build target/debian/t3pressure_*.deb with cargo-deb (installed if missing;
                     dev packages go to target/debian/dev/)
  vm [--scenario NAME]... [--keep] [--rebuild] [--release] [--deb PATH]
                     boot a systemd + cgroup v2 VM (QEMU), install the agent's .deb (dev
                     profile unless --release) and run the scenario suite
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = dispatch(&args) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => {
            eprint!("{USAGE}");
            std::process::exit(2);
        }
    };
    match cmd {
        "setup" => setup::run(rest),
        "run" => suite::run_agent(rest),
        "test" => suite::test(rest),
        "deb" => deb::run(rest),
        "vm" => vm::run(rest),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("unknown command {other:?}\n\n{USAGE}");
            std::process::exit(2);
        }
    }
}
