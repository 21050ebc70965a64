//! The shim daemon: serves the task API on the socket `start` bound, until containerd
//! shuts it down after its last container.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Arc;

use anyhow::{Context, Result};
use containerd_shim::protos::shim_sync::create_task;
use containerd_shim::protos::ttrpc::{MethodHandler, Server};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, Flags};

use crate::bootstrap::LISTEN_FD_ENV;
use crate::events::Events;
use crate::service::TaskService;

type Methods = HashMap<String, Box<dyn MethodHandler + Send + Sync>>;

/// The task service under both names containerd uses: `containerd.task.v2.Task`
/// (containerd 1.6 to 2.2 with a plain-address shim) and `containerd.task.v3.Task`.
/// The messages of the two are the same on the wire.
pub fn task_methods(service: TaskService) -> Methods {
    let svc: Arc<dyn containerd_shim::protos::shim_sync::Task + Send + Sync> = Arc::new(service);
    let mut methods = create_task(svc.clone());
    for (name, handler) in create_task(svc) {
        methods.insert(
            name.replace("containerd.task.v3.", "containerd.task.v2."),
            handler,
        );
    }
    methods
}

/// Writes each formatted line with ` pod=<id>` before its newline, in one write(2): every line
/// in containerd's log then names the pod the shim serves (the shim's id: the pod's sandbox id
/// under CRI, the container's under `ctr run`) beside the container's own `id=`.
struct Tagged {
    file: &'static std::fs::File,
    tag: &'static str,
}

impl std::io::Write for Tagged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(line) = buf.strip_suffix(b"\n").filter(|_| !self.tag.is_empty()) else {
            return (&*self.file).write(buf);
        };
        let mut out = Vec::with_capacity(buf.len() + self.tag.len() + 1);
        out.extend_from_slice(line);
        out.extend_from_slice(self.tag.as_bytes());
        out.push(b'\n');
        (&*self.file).write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) fn setup_logging(debug: bool, pod: Option<&str>) {
    // containerd reads the shim's log from the FIFO named `log` in the bundle.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("log");
    // A plain level (STRATA_LOG=trace|debug|info|warn|error), not an EnvFilter: parsing
    // directives compiles regexes, code and heap every shim process would pay for.
    let level = std::env::var("STRATA_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(if debug {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        });
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false);
    // No Mutex around the writer, which would not order anything anyway: the native tier's
    // creating helpers, other processes, log to the same FIFO. Each event is formatted
    // first, then written with one write(2), which is atomic on the FIFO for lines under
    // PIPE_BUF.
    let file: &'static std::fs::File = match file {
        Ok(f) => Box::leak(Box::new(f)),
        Err(_) => match std::fs::OpenOptions::new().write(true).open("/dev/null") {
            Ok(f) => Box::leak(Box::new(f)),
            Err(_) => return,
        },
    };
    let tag: &'static str = match pod {
        Some(id) if !id.is_empty() => Box::leak(format!(" pod={id}").into_boxed_str()),
        _ => "",
    };
    let _ = builder.with_writer(move || Tagged { file, tag }).try_init();
}

/// For scripts/order-shim-text only: makes each page of the shim's code its own mapping, so
/// the kernel's fault-around (which stays within one mapping) maps only the pages this process
/// runs from then on, and /proc/PID/pagemap then tells exactly which those are. Neighbouring
/// pages get different protections (writable or not; nothing writes them), which keeps them
/// apart.
#[allow(unsafe_code)]
fn split_text_per_page() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let page = 4096usize;
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || !f[1].starts_with("r-x") || std::path::Path::new(f[5]) != exe {
            continue;
        }
        let Some((lo, hi)) = f[0].split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        else {
            continue;
        };
        for (i, addr) in (lo..hi).step_by(page).enumerate() {
            let mut prot = libc::PROT_READ | libc::PROT_EXEC;
            if i % 2 == 1 {
                prot |= libc::PROT_WRITE;
            }
            // SAFETY: the range is this process's own code mapping, page-aligned; the
            // protections keep it readable and executable.
            unsafe { libc::mprotect(addr as *mut libc::c_void, page, prot) };
        }
        // Forget what start-up mapped 64 KiB at a time; what runs from here maps page by page.
        // SAFETY: unmodified private file pages: each comes back from the file when touched.
        unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_DONTNEED) };
    }
}

/// Runs the daemon.
pub fn serve(flags: &Flags) -> Result<()> {
    if std::env::var_os("STRATA_PROFILE_TEXT").is_some() {
        split_text_per_page();
    }
    setup_logging(flags.debug, Some(&flags.id));
    // Become the reaper before anything forks. containerd-shim's mount_rootfs forks and
    // waits through the crate's own monitor: feed it the statuses nobody else claimed.
    strata_backend::reaper::Reaper::global().set_unclaimed_hook(|pid, status| {
        let _ = containerd_shim::monitor::monitor_notify_by_pid(pid, status as i32);
    });

    let ttrpc_address = std::env::var("TTRPC_ADDRESS").context("TTRPC_ADDRESS is not set")?;
    let publisher =
        RemotePublisher::new(&ttrpc_address).context("connect to containerd's event service")?;
    let exit = Arc::new(ExitSignal::default());
    let service = TaskService::new(
        flags.namespace.clone(),
        Events::start(publisher, flags.namespace.clone()),
        exit.clone(),
    );
    service.set_containerd_address(flags.address.clone());

    let listen_fd: RawFd = match std::env::var(LISTEN_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(fd) => fd,
        None => {
            let path = flags
                .socket
                .strip_prefix("unix://")
                .unwrap_or(&flags.socket);
            let l = std::os::unix::net::UnixListener::bind(path)
                .with_context(|| format!("listen on {path}"))?;
            std::os::fd::IntoRawFd::into_raw_fd(l)
        }
    };
    std::env::remove_var(LISTEN_FD_ENV);
    // Two idle workers per connection instead of ttrpc's three: a shim mostly sleeps, and each
    // worker thread keeps a stack and a malloc arena. ttrpc starts another worker whenever
    // fewer than one is idle, so blocking calls (Wait) cannot starve the others.
    let mut server = Server::new()
        .set_thread_count_min(1)
        .set_thread_count_default(2)
        .set_thread_count_max(3)
        .add_listener(listen_fd)
        .context("serve on the listening socket")?
        .register_service(task_methods(service.clone()));
    server.start().context("start the ttrpc server")?;
    tracing::info!(namespace = %flags.namespace, id = %flags.id, "strata shim serving");

    exit.wait();
    service.flush_events();
    // A handler blocked for good (a Wait nobody will answer) must not keep the shim alive:
    // give the server a moment to stop cleanly, then leave anyway.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        server.shutdown();
        let _ = done_tx.send(());
    });
    if done_rx
        .recv_timeout(std::time::Duration::from_secs(2))
        .is_err()
    {
        tracing::warn!("ttrpc server did not stop within 2 s; exiting anyway");
    }
    let path = flags
        .socket
        .strip_prefix("unix://")
        .unwrap_or(&flags.socket);
    let _ = std::fs::remove_file(path);
    tracing::info!("strata shim exiting");
    Ok(())
}
