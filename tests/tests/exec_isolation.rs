//! An exec'd process is confined like the container's init: same seccomp filter.
//!
//! youki's libcontainer gives processes started through its tenant builder no seccomp
//! filter at all; the native tier installs the container's profile in them itself.

use strata_tests::{harness, Runtime, Tier};

#[test]
fn exec_gets_the_containers_seccomp_profile() {
    let h = harness!();
    let c = h.container("execseccomp");
    c.start(&["--seccomp"], &["sleep", "1000"]);
    // Under containerd's default profile, unshare is refused without CAP_SYS_ADMIN; without
    // any filter, root may create a user namespace with no capability at all.
    let script = "grep '^Seccomp:' /proc/self/status; \
        unshare -U true 2>/dev/null && echo unshare-allowed || echo unshare-refused";
    let out = c.exec("e1", &["sh", "-c", script]);
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.contains("Seccomp:\t2"),
        "exec'd process has no filter: {out}"
    );
    assert!(
        out.stdout.contains("unshare-refused"),
        "the profile does not bind the exec: {out}"
    );
    // Control: the same exec in a container without a profile may unshare. Not on the
    // sentry, which filters every process whatever the spec says and always refuses unshare
    // (by design): there the control must be filtered all the same.
    let d = h.container("execnoseccomp");
    d.start(&[], &["sleep", "1000"]);
    let out = d.exec("e1", &["sh", "-c", script]);
    if h.runtime == Runtime::Strata && h.tier == Tier::Sentry {
        assert!(out.stdout.contains("Seccomp:\t2"), "{out}");
        assert!(out.stdout.contains("unshare-refused"), "{out}");
    } else {
        assert!(out.stdout.contains("Seccomp:\t0"), "{out}");
        assert!(
            out.stdout.contains("unshare-allowed"),
            "control must be able to unshare: {out}"
        );
    }
    c.remove_and_check();
    d.remove_and_check();
}
