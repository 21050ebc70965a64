//! The sentry's pre-exec hook: confines and filters every container process, the init and
//! each exec'd one (`ctr task exec`, CRI ExecSync), right before it execs the user's program.
//!
//! In this order, in the container's mount namespace: Landlock (`confine`, while the process
//! can still open the rule paths itself, untrapped), no_new_privs, then the seccomp filter,
//! whose notification fd goes to the supervisor over a socket the process inherited from the
//! shim (the supervisor's side is not reachable by path from inside the container's mount
//! namespace). The filter and the socket's fd number travel in the rewritten spec's
//! annotations, which libcontainer keeps for tenants too (libcontainer 0.7 gives a tenant only
//! the container's namespaces and cgroup, not its seccomp profile, so the sentry does not
//! leave its filter to libcontainer at all). The hook keeps no state: it runs in the native
//! tier's creating helper (a fresh process started from the shim's binary, which finds the
//! hook by name and inherits the socket because `inherited_fds` names it). Anything missing
//! fails the exec: never an unfiltered process.

use libcontainer::oci_spec::runtime::{LinuxSeccomp, Spec};
use strata_native::{PreExec, Role};

use crate::{fdpass, keeper};

/// Annotation: the inherited descriptor to send the notification fd on.
pub const EXEC_FD_ANNOTATION: &str = "strata.dev/sentry-exec-fd";
/// Annotation: the filter (OCI `linux.seccomp` JSON) to install.
pub const EXEC_FILTER_ANNOTATION: &str = "strata.dev/sentry-exec-filter";

/// The hook.
pub struct ExecFilter;

/// A descriptor number from the spec's annotations.
fn fd_of(spec: &Spec, annotation: &str) -> Option<i32> {
    spec.annotations().as_ref()?.get(annotation)?.parse().ok()
}

/// The supervisor socket's descriptor number, from the spec.
fn exec_fd(spec: &Spec) -> Option<i32> {
    fd_of(spec, EXEC_FD_ANNOTATION)
}

impl PreExec for ExecFilter {
    fn name(&self) -> &'static str {
        "sentry"
    }

    fn inherited_fds(&self, spec: &Spec) -> Vec<i32> {
        exec_fd(spec)
            .into_iter()
            .chain(fd_of(spec, keeper::KEEPER_FD_ANNOTATION))
            .collect()
    }

    fn before_exec(&self, spec: &Spec, role: Role) -> Result<(), String> {
        let ann = spec.annotations().clone().unwrap_or_default();
        let fd = exec_fd(spec).ok_or("sentry: no supervisor socket for this exec")?;
        let keeper_fd = fd_of(spec, keeper::KEEPER_FD_ANNOTATION);
        if let (Role::Exec, Some(k)) = (role, keeper_fd) {
            // Run by the keeper, in the init's Landlock domain and under its filter; this
            // process stands in for the program (see keeper).
            let _ = nix::unistd::close(fd);
            return keeper::proxy(spec, k).map(|never| match never {});
        }
        // The init's real credentials, applied once the keeper is forked; its HOME, found
        // while the container's passwd can still be read untrapped.
        let init_creds: Option<keeper::Creds> = keeper_fd
            .map(|_| {
                ann.get(keeper::INIT_CREDS_ANNOTATION)
                    .and_then(|v| serde_json::from_str(v).ok())
                    .ok_or("sentry: no credentials for the init")
            })
            .transpose()?;
        // As libcontainer looks it up (for the uid it was given: 0).
        let home = init_creds
            .as_ref()
            .filter(|_| ann.contains_key(keeper::INIT_HOME_ANNOTATION))
            .map(|c| libcontainer::utils::get_user_home(c.uid[0]));
        let filter: LinuxSeccomp = ann
            .get(EXEC_FILTER_ANNOTATION)
            .and_then(|v| serde_json::from_str(v).ok())
            .ok_or("sentry: no filter for this exec")?;
        let confined = crate::confine::apply(spec)?;
        if ann.contains_key(crate::confine::KERNEL_OPENS_ANNOTATION) && !confined.enforced {
            // Opens are not trapped: without Landlock nothing would keep them inside the
            // container's root and mounts (another process's `/proc/<pid>/root`).
            return Err(
                "sentry: opens are left to the kernel, but Landlock does not restrict \
                        this process"
                    .into(),
            );
        }
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("sentry: no_new_privs: {e}"))?;
        let notify = libcontainer::seccomp::initialize_seccomp(&filter)
            .map_err(|e| format!("sentry: install the filter: {e}"))?
            .ok_or("sentry: the filter has no notification fd")?;
        // The trees the supervisor may leave to the kernel: only those this very process's
        // Landlock domain grants (confine::Applied), told with the fd they belong to.
        let message = match &confined.kernel_trees {
            Some(trees) => format!("exec {}", serde_json::to_string(trees).unwrap_or_default()),
            None => "exec".to_string(),
        };
        let sent = fdpass::send(fd, message.as_bytes(), &[notify]);
        let _ = nix::unistd::close(notify);
        sent.map_err(|e| format!("sentry: send the notification fd: {e}"))?;
        if let Some(creds) = init_creds {
            keeper::start(fd)?;
            creds
                .apply()
                .map_err(|e| format!("sentry: the init's credentials: {e}"))?;
            match home {
                Some(Some(h)) => std::env::set_var("HOME", h),
                // The executor gives HOME=/ (strata_native::default_home), as runc does.
                Some(None) => std::env::remove_var("HOME"),
                None => {}
            }
        }
        Ok(())
    }
}
