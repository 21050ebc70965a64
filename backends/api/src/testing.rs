//! How every crate's tests tell CI from a developer's machine, and how they say that a test
//! was skipped. One rule for the whole workspace:
//!
//! - [`on_ci`]: `CI=true` (or `CI=1`), as `.ci/run` and GitHub-style runners set it.
//! - [`skip`]: a prerequisite is missing (root, a package, a built guest kernel). On CI that is a
//!   failure: CI installs everything, so a missing piece is a broken set-up, not a skip.
//! - [`not_applicable`]: the test cannot apply here for a reason the project cannot change on
//!   this host (PVM instead of VT-x) or by design (a WASI module has no terminal). Counted as
//!   skipped everywhere, CI included.
//!
//! Both print `SKIP <test>: <reason>` and, when `STRATA_TEST_SKIP_LOG` names a file, append
//! `<kind>\t<test>\t<reason>` to it, so `scripts/test-all` can list every skip at its end.

use std::io::Write;

/// True on CI (`CI=true` or `CI=1`), where a missing prerequisite fails instead of skipping.
pub fn on_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// A prerequisite of `test` is missing: prints why and records the skip, or panics on CI.
pub fn skip(test: &str, reason: &str) {
    if on_ci() {
        panic!("{test}: cannot run on CI: {reason}");
    }
    record("missing", test, reason);
}

/// `test` does not apply on this host or tier, for `reason`: printed and recorded, on CI too.
pub fn not_applicable(test: &str, reason: &str) {
    record("n/a", test, reason);
}

fn record(kind: &str, test: &str, reason: &str) {
    eprintln!("SKIP {test}: {reason}");
    let Some(path) = std::env::var_os("STRATA_TEST_SKIP_LOG") else {
        return;
    };
    let line = format!("{kind}\t{test}\t{}\n", reason.replace(['\n', '\t'], " "));
    // One write of a short line to an O_APPEND file: lines of parallel tests do not mix.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
