//! Which shared-suite tests cannot apply to which tier, and why: the one place a tier says
//! "not this test", instead of a test that silently does nothing.
//!
//! The shared suites (lifecycle, isolation, robustness, bad_input, exec_isolation, user_specs,
//! cri) run on every tier. A test listed here for a tier is reported as skipped on it, with the
//! reason, by `harness!()` (and by the CRI tests' own gate); every other test must pass there.

use crate::Tier;

/// Tests that cannot apply on the wasm tier: `(test function name, reason)`.
///
/// A WASI module has no shell, no terminal, no processes of its own and no Linux namespaces to
/// look at; where WASI can do what a test checks (exit codes, stdio, env, args, signals, stats,
/// OOM, bad input, leaks), the test runs a WASI module doing the same thing instead of busybox.
pub const WASM: &[(&str, &str)] = &[];

/// Why `test` (a function name) cannot apply on `tier`, if it is listed.
pub fn not_applicable_on(tier: Tier, test: &str) -> Option<&'static str> {
    let table = match tier {
        Tier::Wasm => WASM,
        Tier::Native | Tier::Sentry | Tier::Microvm => &[],
    };
    table.iter().find(|(t, _)| *t == test).map(|(_, why)| *why)
}
