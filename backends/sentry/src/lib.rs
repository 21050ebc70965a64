//! Strata's `sentry` tier: gVisor's idea, that the workload never talks to the host kernel
//! unwatched, at native speed. The workload is a native container (this crate composes
//! `strata_native`), and its sensitive system calls (opens, exec, sockets, `uname`, and the
//! calls it may never make) are trapped with seccomp user notification to a supervisor in the
//! shim, which decides them by policy, performs allowed opens and IP connects itself, and
//! records each in a per-container audit log.
//!
//! What this crate must never do: answer CONTINUE to a decision that rests on memory the
//! workload can still change, unless the kernel itself enforces, on what the call really
//! reaches, a rule at least as strict as the decision (an `O_PATH` open gives no access to
//! data; exec is the one documented residual risk; see `docs/sentry.md`), or leave a trapped
//! call unanswered in a way that lets it run unchecked: when the supervisor is gone the kernel
//! fails every trapped call with ENOSYS.

pub mod audit;
mod confine;
mod cpu_cgroup;
mod exec_filter;
mod fdpass;
pub mod filter;
mod keeper;
mod names;
pub mod policy;
pub mod record;
mod supervisor;
mod sys;

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use strata_backend::{Backend, BackendKind, CreateOpts, Error, EventSink, ExecOpts, Result, Stats};
use strata_native::NativeBackend;

pub use exec_filter::ExecFilter;
pub use policy::{Policy, PolicyError, POLICY_ANNOTATION, RECORD_POLICY};
pub use supervisor::{EMULATED_RELEASE, EMULATED_VERSION};

/// Where sentry containers keep their rewritten spec and audit log.
pub const DEFAULT_STATE_ROOT: &str = "/run/strata/sentry";

struct Supervised {
    dir: PathBuf,
    listener: supervisor::Listener,
}

/// The sentry tier.
pub struct SentryBackend {
    native: NativeBackend,
    root: PathBuf,
    supervised: Mutex<HashMap<String, Supervised>>,
}

use strata_native::sanitize;

/// In a container's sentry directory: while this file exists, its supervisor records
/// (`strata policy record`; [`supervisor::Ctx::follow_record_control`]).
pub const RECORD_CONTROL_FILE: &str = "record";

/// The sentry directory of a container.
pub fn container_dir(root: &Path, namespace: &str, id: &str) -> PathBuf {
    root.join(sanitize(namespace)).join(sanitize(id))
}

/// The audit log of container `id`: in `namespace` if given, else in whichever namespace
/// has a container of that id.
pub fn find_audit_log(root: &Path, namespace: Option<&str>, id: &str) -> Option<PathBuf> {
    find_container_dir(root, namespace, id).map(|d| d.join(audit::FILE))
}

/// The sentry directory of container `id` (one holding its audit log): in `namespace` if
/// given, else in whichever namespace has a container of that id.
pub fn find_container_dir(root: &Path, namespace: Option<&str>, id: &str) -> Option<PathBuf> {
    let has_log = |d: &PathBuf| d.join(audit::FILE).exists();
    if let Some(ns) = namespace {
        let d = container_dir(root, ns, id);
        return has_log(&d).then_some(d);
    }
    std::fs::read_dir(root)
        .ok()?
        .flatten()
        .map(|e| e.path().join(sanitize(id)))
        .find(has_log)
}

impl SentryBackend {
    /// A backend whose containers are native ones under `native_root` (so that the shim's
    /// `delete` finds them as it finds native ones) with sentry state under `sentry_root`.
    pub fn new(
        native_root: impl Into<PathBuf>,
        sentry_root: impl Into<PathBuf>,
        events: EventSink,
    ) -> Self {
        SentryBackend {
            native: NativeBackend::new(native_root, events)
                .with_pre_exec(Arc::new(exec_filter::ExecFilter)),
            root: sentry_root.into(),
            supervised: Mutex::new(HashMap::new()),
        }
    }

    /// Removes what a container of a dead shim left in the sentry's state directory (its
    /// processes and cgroup are the native tier's to clean up).
    pub fn cleanup_orphan(sentry_root: &Path, namespace: &str, id: &str) -> Result<()> {
        let dir = container_dir(sentry_root, namespace, id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", dir.display()), e)),
        }
    }

    fn prepare(
        &self,
        opts: &CreateOpts,
        dir: &Path,
    ) -> Result<(supervisor::Listener, PathBuf, bool)> {
        let annotations = opts.spec.annotations().clone().unwrap_or_default();
        let policy_dir = policy::policy_dir_for(opts.config_path.as_deref());
        let policy = policy::select(&policy_dir, &annotations)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        // Opens the kernel decides (docs/sentry.md, "Opens the kernel decides"): where the
        // policy allows it, Landlock confines the workload to the container, and the masks and
        // emulated files can be mounted in a mount namespace of the container's own (not one
        // it joins by path).
        let own_mounts = strata_native::creates_namespace(
            &opts.spec,
            oci_spec::runtime::LinuxNamespaceType::Mount,
        );
        let kernel_opens = policy
            .kernel_opens()
            .filter(|_| sys::landlock_abi().is_some() && own_mounts);

        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let log = audit::AuditLog::open(
            dir.join(audit::FILE),
            policy.audit_max_bytes,
            policy.audit_per_second,
        )
        .map_err(|e| Error::io("open the audit log", e))?;
        log.record(audit::Record {
            syscall: "-".into(),
            decision: "start".into(),
            args: [
                ("policy".to_string(), policy.name.clone()),
                (
                    "landlock_abi".to_string(),
                    sys::landlock_abi().map_or("none".into(), |v| v.to_string()),
                ),
                (
                    "opens".to_string(),
                    if kernel_opens.is_some() {
                        "kernel"
                    } else {
                        "supervisor"
                    }
                    .to_string(),
                ),
            ]
            .into(),
            ..Default::default()
        });
        // What the container's UTS namespace holds: the spec's names, or, where it sets none
        // (runc sets only non-empty ones), those of the namespace it joins (a CRI container
        // joins its pod's, named by the sandbox's spec) or the copy of the host's that a new
        // namespace starts with. The workload cannot change them (no CAP_SYS_ADMIN under the
        // sentry).
        let host = joined_uts(&opts.spec)
            .map_err(|e| Error::io("read the names of the UTS namespace the spec joins", e))?
            .or_else(|| nix::sys::utsname::uname().ok());
        let name = |set: &Option<String>, host_value: Option<&std::ffi::OsStr>| {
            set.clone()
                .filter(|s| !s.is_empty())
                .or_else(|| host_value.map(|v| v.to_string_lossy().into_owned()))
                .unwrap_or_default()
        };
        let uts = supervisor::Uts {
            nodename: name(opts.spec.hostname(), host.as_ref().map(|u| u.nodename())),
            domainname: name(
                opts.spec.domainname(),
                host.as_ref().map(|u| u.domainname()),
            ),
        };

        let mut spec = serde_json::to_value(&opts.spec)
            .map_err(|e| Error::InvalidArgument(format!("spec: {e}")))?;
        let applied = filter::apply(&mut spec, &policy, kernel_opens.is_some())
            .map_err(Error::InvalidArgument)?;
        if let Some(k) = &kernel_opens {
            kernel_decides_opens(&mut spec, k, dir)?;
        }
        // For every container process (see exec_filter): a socket it inherits, the filter,
        // and what Landlock lets it execute.
        let (exec_ours, exec_theirs) = fdpass::seqpacket_pair()
            .map_err(|e| Error::io("socketpair for exec'd processes", e.into()))?;
        // The filter is the pre-exec hook's to install (after Landlock), in the init as in
        // every exec'd process: libcontainer must not install it itself.
        let seccomp_json = spec
            .pointer_mut("/linux")
            .and_then(serde_json::Value::as_object_mut)
            .and_then(|l| l.remove("seccomp"))
            .unwrap_or_default()
            .to_string();
        let ann = object_at(&mut spec, "annotations")
            .ok_or_else(|| Error::InvalidArgument("spec annotations are not an object".into()))?;
        ann.insert(
            exec_filter::EXEC_FD_ANNOTATION.into(),
            serde_json::json!(exec_theirs.as_raw_fd().to_string()),
        );
        // One Landlock domain per container (keeper.rs): a socket slot for the keeper's
        // requests, which the supervisor fills once the init has forked it.
        let keeper_slot = if keeper::possible(&opts.spec) {
            let slot = std::fs::File::open("/dev/null")
                .map_err(|e| Error::io("open /dev/null for the keeper's slot", e))?;
            ann.insert(
                keeper::KEEPER_FD_ANNOTATION.into(),
                serde_json::json!(slot.as_raw_fd().to_string()),
            );
            Some(std::os::fd::OwnedFd::from(slot))
        } else {
            None
        };
        ann.insert(
            exec_filter::EXEC_FILTER_ANNOTATION.into(),
            serde_json::json!(seccomp_json),
        );
        ann.insert(
            confine::EXEC_ANNOTATION.into(),
            serde_json::json!(confine::exec_annotation(policy.exec_prefixes().as_deref())),
        );
        if kernel_opens.is_some() {
            ann.insert(
                confine::KERNEL_OPENS_ANNOTATION.into(),
                serde_json::json!("1"),
            );
        }
        // Where the kernel decides opens, the rules from the spec (the container's root and
        // mounts) are what it needs; a compiled ruleset grants reads and writes only on the
        // policy's trees, for the opens the supervisor leaves to the kernel one by one.
        if let Some(compiled) = confine::compile(&policy).filter(|_| kernel_opens.is_none()) {
            ann.insert(
                confine::COMPILED_ANNOTATION.into(),
                serde_json::json!(serde_json::to_string(&compiled).unwrap_or_default()),
            );
        }
        if keeper_slot.is_some() {
            keeper::rewrite_init_user(&mut spec, &opts.spec).map_err(Error::InvalidArgument)?;
        }
        // The rewritten spec lives in the sentry directory, which becomes the bundle
        // libcontainer reads (also for every exec): the root must not be relative to it.
        if let Some(p) = spec.pointer_mut("/root/path") {
            let rel = PathBuf::from(p.as_str().unwrap_or("rootfs"));
            if rel.is_relative() {
                *p = serde_json::json!(opts.bundle.join(rel));
            }
        }
        let config = dir.join("config.json");
        std::fs::write(&config, serde_json::to_vec(&spec).unwrap_or_default())
            .map_err(|e| Error::io(format!("write {}", config.display()), e))?;
        let ctx = Arc::new(
            supervisor::Ctx::new(opts.id.clone(), policy, log, uts, applied)
                .with_record_control(dir.join(RECORD_CONTROL_FILE)),
        );
        let listener = supervisor::Listener::start(exec_ours, exec_theirs, keeper_slot, ctx)
            .map_err(|e| Error::io("start the supervisor", e))?;
        tracing::info!(id = %opts.id, policy = %listener.ctx().policy.name, "sentry supervisor ready");
        Ok((listener, config, kernel_opens.is_some()))
    }

    /// Waits until the keeper of container `id` (keeper.rs) takes requests: the init's hook
    /// forks it after `start` has returned, and an exec'd process inherits the keeper's
    /// socket when it is made (a CRI ExecSync may come right after StartContainer).
    fn await_keeper(&self, id: &str) -> Result<()> {
        let ready = self
            .supervised
            .lock()
            .unwrap()
            .get(id)
            .and_then(|s| s.listener.keeper_ready());
        let Some(ready) = ready else {
            return Ok(());
        };
        let deadline = std::time::Instant::now() + KEEPER_WAIT;
        while !ready.load(std::sync::atomic::Ordering::SeqCst) {
            if std::time::Instant::now() > deadline {
                return Err(Error::FailedPrecondition(format!(
                    "container {id}: its keeper did not start within {KEEPER_WAIT:?} (the \
                     init's pre-exec hook never ran or failed)"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Ok(())
    }

    /// Mounts the emulated files ([`kernel_decides_opens`] wrote them) read-only over their
    /// paths in the mount namespace of the created container `pid`, before anything of the
    /// workload runs; a path the container does not have (no `/proc`) is skipped.
    fn mount_emulated(dir: &Path, pid: u32) -> Result<()> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let mut trees = Vec::new();
        for path in supervisor::EMULATED_PATHS {
            let source = dir.join(EMULATED_DIR).join(emulated_name(path));
            let c = CString::new(source.as_os_str().as_bytes())
                .map_err(|_| Error::InvalidArgument(format!("{}", source.display())))?;
            let tree = sys::read_only_tree(&c)
                .map_err(|e| Error::io(format!("open_tree {}", source.display()), e))?;
            trees.push((tree, CString::new(path).expect("no NUL in a literal")));
        }
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
            .map_err(|e| Error::io("open the container's mount namespace", e))?;
        sys::attach_in_namespace(&ns.into(), &trees)
            .map_err(|e| Error::io("mount the emulated files in the container", e))?;
        Ok(())
    }
}

/// The object at `key` of the JSON object `v`, made empty if missing; None if either is no
/// object.
pub(crate) fn object_at<'a>(
    v: &'a mut serde_json::Value,
    key: &str,
) -> Option<&'a mut serde_json::Map<String, serde_json::Value>> {
    v.as_object_mut()?
        .entry(key)
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
}

/// How long an exec waits for its container's keeper.
const KEEPER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// In a container's sentry directory: the emulated files mounted over `/proc/version`...
/// where the kernel decides opens.
const EMULATED_DIR: &str = "emulated";

/// The file name in [`EMULATED_DIR`] for the emulated file at container path `path`.
fn emulated_name(path: &str) -> String {
    path.trim_start_matches('/').replace('/', "-")
}

/// Rewrites `spec` (JSON) so that the kernel decides every open as the policy does, where the
/// filter traps none (docs/sentry.md, "Opens the kernel decides"): the policy's denied paths
/// masked (`linux.maskedPaths`, as runc masks `/proc/kcore`), the device cgroup narrowed to
/// the supervisor's device list (a privileged spec allows every device); and the emulated
/// files written to `dir`, for [`SentryBackend::mount_emulated`] once the container exists.
/// (`prepare` also tells the hook, by annotation, to refuse a process that Landlock does not
/// restrict.)
fn kernel_decides_opens(
    spec: &mut serde_json::Value,
    k: &policy::KernelOpens,
    dir: &Path,
) -> Result<()> {
    use serde_json::{json, Value};
    let linux = object_at(spec, "linux")
        .ok_or_else(|| Error::InvalidArgument("spec linux is not an object".into()))?;
    let masked = linux
        .entry("maskedPaths")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or_else(|| Error::InvalidArgument("spec maskedPaths is not a list".into()))?;
    for m in &k.masks {
        if !masked.iter().any(|v| v.as_str() == Some(m)) {
            masked.push(json!(m));
        }
    }
    let mut devices = vec![json!({ "allow": false, "access": "rwm" })];
    devices.extend(supervisor::DEFAULT_DEVICES.iter().map(|(major, minor)| {
        json!({ "allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm" })
    }));
    devices.extend(
        supervisor::PTY_MAJORS
            .map(|major| json!({ "allow": true, "type": "c", "major": major, "access": "rwm" })),
    );
    let resources = linux
        .entry("resources")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| Error::InvalidArgument("spec resources is not an object".into()))?;
    resources.insert("devices".into(), Value::Array(devices));
    let emulated = dir.join(EMULATED_DIR);
    std::fs::create_dir_all(&emulated)
        .map_err(|e| Error::io(format!("create {}", emulated.display()), e))?;
    for path in supervisor::EMULATED_PATHS {
        let file = emulated.join(emulated_name(path));
        let text = supervisor::emulated_text(path).unwrap_or_default();
        std::fs::write(&file, text)
            .map_err(|e| Error::io(format!("write {}", file.display()), e))?;
    }
    Ok(())
}

/// The names (`uname`) of the UTS namespace the spec joins by path, if it joins one: read by
/// a short-lived thread that enters it (a UTS namespace is per thread; the shim's other
/// threads stay where they are).
fn joined_uts(
    spec: &oci_spec::runtime::Spec,
) -> std::io::Result<Option<nix::sys::utsname::UtsName>> {
    use oci_spec::runtime::LinuxNamespaceType;
    let Some(path) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| {
            ns.iter()
                .find(|n| n.typ() == LinuxNamespaceType::Uts)
                .and_then(|n| n.path().clone())
        })
    else {
        return Ok(None);
    };
    let ns = std::fs::File::open(&path)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWUTS)?;
            nix::sys::utsname::uname()
        })
        .join()
        .unwrap_or(Err(nix::errno::Errno::EIO))
    })
    .map(Some)
    .map_err(std::io::Error::from)
}

impl Backend for SentryBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Sentry
    }

    fn create(&self, opts: CreateOpts) -> Result<u32> {
        if self.supervised.lock().unwrap().contains_key(&opts.id) {
            return Err(Error::AlreadyExists(format!("container {}", opts.id)));
        }
        let dir = container_dir(&self.root, &opts.namespace, &opts.id);
        // Left by a shim that died before `delete` could run.
        let _ = std::fs::remove_dir_all(&dir);
        let (mut listener, config, kernel_opens) = match self.prepare(&opts, &dir) {
            Ok(x) => x,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let spec = oci_spec::runtime::Spec::load(&config)
            .map_err(|e| Error::InvalidArgument(format!("rewritten spec: {e}")));
        let created = spec.and_then(|spec| {
            self.native.create(CreateOpts {
                bundle: dir.clone(),
                spec,
                ..opts.clone()
            })
        });
        let created = match created {
            Ok(pid) if kernel_opens => match Self::mount_emulated(&dir, pid) {
                Ok(()) => Ok(pid),
                Err(e) => {
                    // Nothing of the workload has run: the created container goes.
                    let _ = self.native.kill(&opts.id, None, libc::SIGKILL, true);
                    let _ = self.native.delete(&opts.id, None);
                    Err(e)
                }
            },
            other => other,
        };
        match created {
            Ok(pid) => {
                self.supervised
                    .lock()
                    .unwrap()
                    .insert(opts.id, Supervised { dir, listener });
                Ok(pid)
            }
            Err(e) => {
                listener.stop();
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn start(&self, id: &str, exec_id: Option<&str>) -> Result<u32> {
        if exec_id.is_some() {
            self.await_keeper(id)?;
        }
        self.native.start(id, exec_id)
    }

    fn exec(&self, opts: ExecOpts) -> Result<()> {
        self.native.exec(opts)
    }

    fn kill(&self, id: &str, exec_id: Option<&str>, signal: i32, all: bool) -> Result<()> {
        self.native.kill(id, exec_id, signal, all)
    }

    fn delete(&self, id: &str, exec_id: Option<&str>) -> Result<()> {
        if exec_id.is_none() {
            // The supervisor threads leave the container's CPU cgroups before they are removed.
            if let Some(s) = self.supervised.lock().unwrap().get(id) {
                s.listener.ctx().release_cpu_cgroups();
            }
        }
        self.native.delete(id, exec_id)?;
        if exec_id.is_none() {
            if let Some(mut s) = self.supervised.lock().unwrap().remove(id) {
                s.listener.stop();
                let _ = std::fs::remove_dir_all(&s.dir);
            }
        }
        Ok(())
    }

    fn pids(&self, id: &str) -> Result<Vec<u32>> {
        self.native.pids(id)
    }

    fn pause(&self, id: &str) -> Result<()> {
        self.native.pause(id)
    }

    fn resume(&self, id: &str) -> Result<()> {
        self.native.resume(id)
    }

    fn stats(&self, id: &str) -> Result<Stats> {
        self.native.stats(id)
    }

    fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        // The device rules stay as created (as runc's `update` leaves them): they are the
        // supervisor's device list, which backs the opens the kernel decides.
        let mut resources = resources.clone();
        resources.set_devices(None);
        self.native.update(id, &resources)
    }

    fn resize_pty(&self, id: &str, exec_id: Option<&str>, width: u32, height: u32) -> Result<()> {
        self.native.resize_pty(id, exec_id, width, height)
    }

    fn close_stdin(&self, id: &str, exec_id: Option<&str>) -> Result<()> {
        self.native.close_stdin(id, exec_id)
    }
}

/// The sentry tier in the shim's registry.
pub struct SentryTier;

/// The registry's entry for this tier.
pub static TIER: SentryTier = SentryTier;

impl strata_backend::Tier for SentryTier {
    fn kind(&self) -> BackendKind {
        BackendKind::Sentry
    }

    /// Containers are native ones under the native state root (the native tier's cleanup
    /// finds them), with the sentry's state (rewritten spec, supervisor socket, audit log) in
    /// [`DEFAULT_STATE_ROOT`].
    fn build(&self, ctx: &strata_backend::TierContext) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(SentryBackend::new(
            ctx.state_root.clone(),
            DEFAULT_STATE_ROOT,
            ctx.sink.clone(),
        )))
    }

    fn cleanup_orphan(&self, orphan: &strata_backend::Orphan<'_>) -> Result<()> {
        SentryBackend::cleanup_orphan(Path::new(DEFAULT_STATE_ROOT), orphan.namespace, orphan.id)
    }
}
