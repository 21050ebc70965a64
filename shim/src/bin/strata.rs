//! `strata`: the operator's tool for the Strata shim.
//!
//! One subcommand per verb, each a variant of [`Command`] and a small `run_*` function; the logic
//! lives in the `strata_shim` library (`strata check` in `strata_shim::check`).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use strata_backend::BackendKind;
use strata_shim::check::{self, Verdict};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Operator's tool for Strata, the containerd shim that runs each pod in its isolation tier"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report what this host supports for each tier (native, sentry, microvm, wasm).
    Check(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Exit with status 1 unless this tier is available or degraded (repeatable).
    #[arg(long, value_name = "TIER", value_parser = parse_tier)]
    require: Vec<BackendKind>,
}

fn parse_tier(s: &str) -> Result<BackendKind, String> {
    s.parse().map_err(|e| format!("{e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => run_check(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let report = check::run();
    if args.json {
        let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
        println!("{json}");
    } else {
        print!("{}", check::render_text(&report));
    }
    let mut code = ExitCode::SUCCESS;
    for tier in &args.require {
        let verdict = report.tier(*tier).map(|t| t.verdict);
        if verdict.is_none_or(|v| v == Verdict::Unavailable) {
            eprintln!("strata: required tier {tier} is unavailable on this host");
            code = ExitCode::from(1);
        }
    }
    Ok(code)
}
