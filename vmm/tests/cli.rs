//! `strata vm run` as a library call: a clean guest gives 0, a bad kernel a clear error.

mod common;

use std::time::Duration;

use common::*;
use strata_vmm::cli::{vm_run, VmRunArgs};

#[test]
fn vm_run_returns_zero_on_a_clean_shutdown() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new("cli");
    let kernel = bzimage_from_asm(
        &dir,
        "cli",
        r#"
    lea msg(%rip), %rsi
    call puts
    call reset
msg: .asciz "hello from vm run\n"
"#,
    );
    let img = dir.path("d.img");
    write(&img, &[0u8; 4096]);
    let mut args = VmRunArgs::new(&kernel);
    args.mem_mib = 32;
    args.vcpus = 2;
    args.disks = vec![format!("{}:ro", img.display())];
    args.vsock = Some(dir.path("v.sock"));
    args.timeout = Some(Duration::from_secs(60));
    args.console_input = false;
    assert_eq!(vm_run(&args).unwrap(), 0);
    assert!(!dir.path("v.sock").exists());
}

#[test]
fn vm_run_reports_a_corrupt_kernel() {
    let dir = TempDir::new("cli-bad");
    let k = dir.path("vmlinux");
    write(
        &k,
        b"\x7fELF\x02\x01\x01garbage-garbage-garbage-garbage-garbage-garbage-garbage",
    );
    let e = vm_run(&VmRunArgs::new(&k)).unwrap_err().to_string();
    assert!(e.contains("vmlinux"), "{e}");
}

#[test]
fn vm_run_refuses_a_bad_net_spec_or_a_descriptor_that_is_not_a_tap() {
    let dir = TempDir::new("cli-net");
    let k = dir.path("vmlinux");
    write(&k, b"not booted: the devices fail first");
    let mut args = VmRunArgs::new(&k);
    args.nets = vec!["3,01:00:5e:00:00:01".into()];
    let e = vm_run(&args).unwrap_err().to_string();
    assert!(e.contains("multicast"), "{e}");
    args.nets = vec!["tap=3".into()];
    let e = vm_run(&args).unwrap_err().to_string();
    assert!(e.contains("FD,MAC"), "{e}");
    let f = std::fs::File::open(&k).unwrap();
    args.nets = vec![format!(
        "tap={},mac=02:00:00:00:00:01",
        std::os::fd::AsRawFd::as_raw_fd(&f)
    )];
    let e = vm_run(&args).unwrap_err().to_string();
    assert!(e.contains("not a tun/tap device"), "{e}");
}
