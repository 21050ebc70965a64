//! `strata-testenv`: the private containerd the tests, the demo and the benchmark run on.
//!
//! - `strata-testenv supervise OPTIONS_JSON`: starts containerd and imports the busybox image,
//!   prints where it is as one JSON line, and tears everything down when its stdin closes.
//! - `strata-testenv sweep`: tears down daemons whose supervisor is gone.
//! - `strata-testenv shell [CMD...]`: starts a daemon, runs CMD (default `$SHELL`) with
//!   `STRATA_SOCK`, `STRATA_NS` and `STRATA_IMAGE` set, then tears down.

use std::process::Command;

use anyhow::{bail, Context, Result};
use strata_tests::daemon::{self, Daemon, DaemonOptions};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("supervise") => {
            let opts: DaemonOptions = match args.get(1) {
                Some(json) => serde_json::from_str(json).context("parsing the options")?,
                None => DaemonOptions::default(),
            };
            std::process::exit(daemon::supervise(&opts));
        }
        Some("sweep") => {
            for name in daemon::sweep_stale() {
                eprintln!("strata-testenv: removed the leftovers of {name}");
            }
            Ok(())
        }
        Some("shell") => {
            let exe = std::env::current_exe()?;
            let opts = DaemonOptions {
                shim_dir: std::env::var_os("STRATA_SHIM_DIR")
                    .map(Into::into)
                    .or_else(|| exe.parent().map(Into::into)),
                ..Default::default()
            };
            let d = Daemon::start(&opts)?;
            let mut cmd = match args.get(1) {
                Some(prog) => {
                    let mut c = Command::new(prog);
                    c.args(&args[2..]);
                    c
                }
                None => Command::new(std::env::var("SHELL").unwrap_or_else(|_| "sh".into())),
            };
            let status = cmd
                .env("STRATA_SOCK", &d.info.socket)
                .env("STRATA_NS", &d.info.namespace)
                .env("STRATA_IMAGE", &d.info.image)
                .status();
            d.stop();
            std::process::exit(status.map(strata_tests::cmd::exit_code).unwrap_or(127));
        }
        _ => bail!("usage: strata-testenv supervise [OPTIONS_JSON] | sweep | shell [CMD...]"),
    }
}
