//! `strata vm run` without the shim, for debugging the VMM alone:
//! `cargo run -p strata-microvm --example vm_run -- KERNEL [INITRD] [CMDLINE] [TIMEOUT_SECS]`.

use std::time::Duration;

use strata_vmm::cli::{vm_run, VmRunArgs};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let Some(kernel) = a.first() else {
        eprintln!("usage: vm_run KERNEL [INITRD] [CMDLINE] [TIMEOUT_SECS]");
        std::process::exit(2);
    };
    let mut args = VmRunArgs::new(kernel);
    args.initrd = a.get(1).filter(|s| !s.is_empty()).map(Into::into);
    args.cmdline = a.get(2).cloned();
    args.timeout = a
        .get(3)
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs);
    match vm_run(&args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("vm_run: {e}");
            std::process::exit(2);
        }
    }
}
