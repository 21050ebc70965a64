//! The VMM threads' seccomp filters really trap: a child process loads a role's filter and makes
//! a forbidden system call (`openat`), and is killed with SIGSYS; a control child that makes only
//! allowed calls exits normally.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use strata_vmm::seccomp::{apply, ThreadRole};

const CHILD_ENV: &str = "STRATA_SECCOMP_CHILD";
const TEST_NAME: &str = "forbidden_syscall_is_fatal_allowed_ones_are_not";

fn child(mode: &str) -> ! {
    let role = if mode.starts_with("vcpu") {
        ThreadRole::Vcpu
    } else if mode.starts_with("net") {
        ThreadRole::NetWorker
    } else {
        ThreadRole::VsockWorker
    };
    apply(role).expect("filter loads");
    let _ = std::io::stderr().write_all(b"filter loaded\n");
    if mode.ends_with("-forbidden") {
        let _ = std::fs::File::open("/etc/hostname");
        let _ = std::io::stderr().write_all(b"openat was allowed\n");
        std::process::exit(3);
    }
    std::process::exit(0);
}

#[test]
fn forbidden_syscall_is_fatal_allowed_ones_are_not() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        child(&mode);
    }
    let exe = std::env::current_exe().unwrap();
    for role in ["vcpu", "vsock", "net"] {
        for forbidden in [true, false] {
            let mode = format!("{role}-{}", if forbidden { "forbidden" } else { "allowed" });
            let out = Command::new(&exe)
                .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, &mode)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("filter loaded"), "{mode}: {stderr}");
            if forbidden {
                assert_eq!(
                    out.status.signal(),
                    Some(libc::SIGSYS),
                    "{mode}: {:?} {stderr}",
                    out.status
                );
            } else {
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{mode}: {:?} {stderr}",
                    out.status
                );
            }
        }
    }
}
