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

fn setup_logging(debug: bool) {
    // containerd reads the shim's log from the FIFO named `log` in the bundle.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("log");
    let filter = if debug { "debug" } else { "info" };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("STRATA_LOG").unwrap_or_else(|_| filter.to_string()),
        ))
        .with_ansi(false);
    match file {
        Ok(f) => {
            let _ = builder.with_writer(std::sync::Mutex::new(f)).try_init();
        }
        Err(_) => {
            let _ = builder.with_writer(std::io::sink).try_init();
        }
    }
}

/// Runs the daemon.
pub fn serve(flags: &Flags) -> Result<()> {
    setup_logging(flags.debug);
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
    let mut server = Server::new()
        .add_listener(listen_fd)
        .context("serve on the listening socket")?
        .register_service(task_methods(service.clone()));
    server.start().context("start the ttrpc server")?;
    tracing::info!(namespace = %flags.namespace, id = %flags.id, "strata shim serving");

    exit.wait();
    service.flush_events();
    server.shutdown();
    let path = flags
        .socket
        .strip_prefix("unix://")
        .unwrap_or(&flags.socket);
    let _ = std::fs::remove_file(path);
    tracing::info!("strata shim exiting");
    Ok(())
}
