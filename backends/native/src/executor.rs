//! What runs in the container's init right before it execs the user's program.
//!
//! The program is found as runc finds it (see `program`: an absolute `args[0]` needs no
//! `PATH`, a bare name without `PATH` fails at create with runc's error), not by
//! libcontainer's default executor, and exec'd by the path found. Before the exec the program
//! gets the signal dispositions a program expects. The shim ignores SIGPIPE (Rust's runtime
//! does so for every binary), and an ignored disposition survives execve: without this,
//! `yes | head` in a container would behave differently than under runc.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use libcontainer::oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, Spec};
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use crate::program;

/// Something another tier runs in the container's process (init or exec) right before the
/// exec of the user's program, after libcontainer's own set-up (the sentry installs its
/// filter in exec'd processes here). An error fails the process instead of exec'ing.
///
/// The hook runs in a helper process that the shim starts from its own binary (see
/// `creator`), which finds it by [`PreExec::name`] among those its `main` passes to
/// [`crate::creator::run`]; so a hook keeps no state of its own: what it needs
/// travels in the spec or in inherited descriptors.
pub trait PreExec: Send + Sync {
    /// A name unique among the hooks of one binary.
    fn name(&self) -> &'static str;
    /// Descriptors of the calling process that the container's processes must inherit at
    /// the same numbers, as the hook finds them in the container's spec (the creating helper
    /// is handed exactly these; every other descriptor the shim holds is close-on-exec).
    fn inherited_fds(&self, _spec: &Spec) -> Vec<i32> {
        Vec::new()
    }

    /// In the creating helper, for a container's init only, before libcontainer makes
    /// anything: work done with the host's view (the bundle, host paths) whose result the
    /// container's process inherits in memory. An error fails the create with its text.
    fn before_create(&self, _bundle: &std::path::Path) -> Result<(), String> {
        Ok(())
    }

    /// `role` tells the container's init from a process joining it (an exec).
    fn before_exec(&self, spec: &Spec, role: Role) -> Result<(), String>;

    /// Whether [`PreExec::before_exec`] runs the workload itself, in the container's process,
    /// and ends that process (the wasm tier's runner): then no program is looked up or
    /// exec'd, and a `before_exec` that returns is an error.
    fn runs_the_workload(&self) -> bool {
        false
    }

    /// The name (argv[0]) of the creating helper, which the container's process inherits when
    /// it runs the workload in place; None keeps the binary's own.
    fn process_name(&self, _container_id: &str) -> Option<String> {
        None
    }
}

/// Which process of a container a hook runs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// The container's init.
    #[default]
    Init,
    /// A process joining the container (`ctr task exec`, CRI ExecSync).
    Exec,
}

/// The native tier's executor.
#[derive(Clone, Default)]
pub struct NativeExecutor {
    /// The process this executor runs in.
    pub(crate) role: Role,
    pub(crate) pre_exec: Option<std::sync::Arc<dyn PreExec>>,
    /// For exec'd processes: the container's seccomp profile, which libcontainer's tenant
    /// builder drops.
    pub(crate) exec_seccomp: Option<LinuxSeccomp>,
    /// The binary started as the creating helper (`creator`); None: this process's own.
    pub(crate) creator_exe: Option<std::path::PathBuf>,
}

/// Gives this container process HOME=/ where it has none. The environment is the spec's by
/// now (libcontainer's `setup_envs`), with HOME from the container's passwd; for a user it
/// has no entry for, runc gives HOME=/.
pub fn default_home() {
    if std::env::var_os("HOME").is_none_or(|h| h.is_empty()) {
        std::env::set_var("HOME", "/");
    }
}

/// Whether a profile hands calls to a supervisor (the sentry's); such a filter is the
/// sentry's to install, not ours.
pub fn has_notify(s: &LinuxSeccomp) -> bool {
    s.default_action() == LinuxSeccompAction::ScmpActNotify
        || s.syscalls()
            .iter()
            .flatten()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActNotify)
}

/// Installs `profile` in this process (a tier's hook adding its own filter to a container's
/// process), setting no_new_privs if the kernel asks for it. The error says why it failed.
pub fn install_seccomp(profile: &LinuxSeccomp) -> Result<(), String> {
    install_exec_seccomp(profile).map_err(|e| e.to_string())
}

/// Installs `profile` in this (exec'd) process. Without CAP_SYS_ADMIN, which the process
/// has dropped by now, the kernel accepts a filter only under no_new_privs; runc installs
/// the filter before dropping capabilities instead. Setting no_new_privs is the price of a
/// filter at all (documented in docs/native.md).
fn install_exec_seccomp(profile: &LinuxSeccomp) -> Result<(), ExecutorError> {
    if libcontainer::seccomp::initialize_seccomp(profile).is_ok() {
        return Ok(());
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| {
        ExecutorError::Other(format!("set no_new_privs for the seccomp filter: {e}"))
    })?;
    libcontainer::seccomp::initialize_seccomp(profile)
        .map(|_| ())
        .map_err(|e| ExecutorError::Other(format!("install the container's seccomp profile: {e}")))
}

impl NativeExecutor {
    /// The hook, when it runs the workload in place of an exec'd program.
    fn in_place(&self) -> Option<&std::sync::Arc<dyn PreExec>> {
        self.pre_exec.as_ref().filter(|h| h.runs_the_workload())
    }
}

impl Executor for NativeExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(hook) = self.in_place() {
            signals::reset_ignored();
            if let Some(profile) = &self.exec_seccomp {
                install_exec_seccomp(profile)?;
            }
            hook.before_exec(spec, self.role)
                .map_err(ExecutorError::Other)?;
            return Err(ExecutorError::Other(format!(
                "the {} hook returned instead of running the workload",
                hook.name()
            )));
        }
        // Found before any filter is installed (the sentry's would trap each look).
        let path = program::find(spec).map_err(ExecutorError::Other)?;
        let c = |s: &[u8]| CString::new(s).map_err(|_| ExecutorError::InvalidArg);
        let path = c(path.as_os_str().as_bytes())?;
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .ok_or(ExecutorError::InvalidArg)?
            .iter()
            .map(|a| c(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        signals::reset_ignored();
        if let Some(profile) = &self.exec_seccomp {
            install_exec_seccomp(profile)?;
        }
        if let Some(hook) = &self.pre_exec {
            hook.before_exec(spec, self.role)
                .map_err(ExecutorError::Other)?;
        }
        default_home();
        let err = nix::unistd::execv(&path, &args).unwrap_err();
        Err(ExecutorError::Other(format!(
            "exec {:?}: {}",
            path,
            err.desc().to_lowercase()
        )))
    }

    /// Runs in the container (after its root is set up, before `start`): a program that
    /// cannot be found fails the create, as with runc.
    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        if self.in_place().is_some() {
            return Ok(());
        }
        program::find(spec)
            .map(|_| ())
            .map_err(ExecutorValidationError::ArgValidationError)
    }
}

#[allow(unsafe_code)]
mod signals {
    /// The kernel's `struct sigaction` on x86_64 and aarch64 (not glibc's, which differs and
    /// whose wrappers refuse the real-time signals glibc reserves for itself).
    #[repr(C)]
    #[derive(Default)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }

    /// Sets every ignored catchable signal, real-time ones included, back to SIG_DFL.
    pub fn reset_ignored() {
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old = KernelSigaction::default();
            // SAFETY: rt_sigaction with a null new action only writes the current one into
            // `old`, a properly sized and aligned kernel sigaction; 8 is the kernel sigset size.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    std::ptr::null::<KernelSigaction>(),
                    &mut old,
                    8,
                )
            };
            if rc != 0 || old.handler != libc::SIG_IGN {
                continue;
            }
            let dfl = KernelSigaction::default();
            // SAFETY: installs SIG_DFL (handler 0) from a valid kernel sigaction; no code of
            // ours runs in signal context, and this single-threaded init is about to exec.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8,
                )
            };
        }
    }
}
