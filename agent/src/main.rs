//! The `t3pressure` binary: parses the command line and hands over to the
//! library. `anyhow` lives here, at the edge.

use std::process::ExitCode;

use clap::Parser;
use t3pressure::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => t3pressure::run::main(args),
        Command::Top(args) => t3pressure::clients::top::main(args),
        Command::Events(args) => t3pressure::clients::events::main(args),
        Command::Check(args) => t3pressure::check::main(args),
        Command::Manpage => {
            print!("{}", t3pressure::clients::manpage::render());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("t3pressure: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
