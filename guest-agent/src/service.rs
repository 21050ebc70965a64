//! The agent's side of the protocol: the ttrpc service and the server loop.

use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ttrpc::TtrpcContext;

use crate::containers::{to_ttrpc, Containers};
use crate::proto::agent::{
    CreateContainerRequest, CreateContainerResponse, DeleteRequest, DeleteResponse, ExecRequest,
    ExecResponse, KillRequest, KillResponse, MountBundleRequest, MountBundleResponse,
    OomEventRequest, OomEventResponse, PingRequest, PingResponse, ShutdownRequest,
    ShutdownResponse, StartRequest, StartResponse, StatsRequest, StatsResponse, VersionRequest,
    VersionResponse, WaitRequest, WaitResponse,
};
use crate::proto::agent_ttrpc::{create_agent, Agent};
use crate::streams::StreamTransport;
use crate::PROTOCOL_VERSION;

/// Errors serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listening on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: ttrpc::Error,
    },
    #[error("starting the ttrpc server")]
    Start(#[source] ttrpc::Error),
}

struct AgentService {
    started: Instant,
    shutdown: Mutex<Option<Sender<()>>>,
    containers: Containers,
    /// Where `MountBundle` mounts: `bundles/` beside the state root.
    bundles: std::path::PathBuf,
}

fn deadline(ctx: &TtrpcContext) -> Option<Instant> {
    (ctx.timeout_nano > 0).then(|| Instant::now() + Duration::from_nanos(ctx.timeout_nano as u64))
}

impl Agent for AgentService {
    fn version(&self, _ctx: &TtrpcContext, req: VersionRequest) -> ttrpc::Result<VersionResponse> {
        Ok(VersionResponse {
            agent_version: PROTOCOL_VERSION,
            compatible: req.host_version == PROTOCOL_VERSION,
            ..Default::default()
        })
    }

    fn ping(&self, _ctx: &TtrpcContext, _req: PingRequest) -> ttrpc::Result<PingResponse> {
        Ok(PingResponse {
            pid: std::process::id(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            mounts: crate::pid1::mounted_basics()
                .into_iter()
                .map(String::from)
                .collect(),
            ..Default::default()
        })
    }

    fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: ShutdownRequest,
    ) -> ttrpc::Result<ShutdownResponse> {
        if let Some(tx) = self
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
        Ok(ShutdownResponse::default())
    }

    fn mount_bundle(
        &self,
        _ctx: &TtrpcContext,
        req: MountBundleRequest,
    ) -> ttrpc::Result<MountBundleResponse> {
        let (bundle, fs_type) =
            crate::bundle::mount(&req.device, &req.name, &self.bundles).map_err(to_ttrpc)?;
        Ok(MountBundleResponse {
            bundle: bundle.display().to_string(),
            fs_type: fs_type.to_string(),
            ..Default::default()
        })
    }

    fn create_container(
        &self,
        _ctx: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> ttrpc::Result<CreateContainerResponse> {
        let (pid, ports) = self
            .containers
            .create(&req.id, &req.bundle, req.stdio.as_ref())
            .map_err(to_ttrpc)?;
        Ok(CreateContainerResponse {
            pid,
            stdio_ports: Some(ports).into(),
            ..Default::default()
        })
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let pid = self
            .containers
            .start(&req.id, &req.exec_id)
            .map_err(to_ttrpc)?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn exec(&self, _ctx: &TtrpcContext, req: ExecRequest) -> ttrpc::Result<ExecResponse> {
        let ports = self
            .containers
            .exec(&req.id, &req.exec_id, &req.process_json, req.stdio.as_ref())
            .map_err(to_ttrpc)?;
        Ok(ExecResponse {
            stdio_ports: Some(ports).into(),
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<KillResponse> {
        self.containers
            .kill(&req.id, &req.exec_id, req.signal, req.all)
            .map_err(to_ttrpc)?;
        Ok(KillResponse::default())
    }

    fn wait(&self, ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        match self
            .containers
            .wait(&req.id, &req.exec_id, deadline(ctx))
            .map_err(to_ttrpc)?
        {
            Some(exit_status) => Ok(WaitResponse {
                exit_status,
                ..Default::default()
            }),
            None => Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::DEADLINE_EXCEEDED,
                format!("{} {} has not exited", req.id, req.exec_id),
            ))),
        }
    }

    fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        self.containers
            .delete(&req.id, &req.exec_id)
            .map_err(to_ttrpc)?;
        Ok(DeleteResponse::default())
    }

    fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let s = self.containers.stats(&req.id).map_err(to_ttrpc)?;
        Ok(StatsResponse {
            cgroup_version: s.cgroup_version.into(),
            memory_usage: s.memory_usage,
            memory_limit: s.memory_limit,
            memory_max_usage: s.memory_max_usage,
            memory_failcnt: s.memory_failcnt,
            memory_cache: s.memory_cache,
            memory_rss: s.memory_rss,
            memory_oom_kills: s.memory_oom_kills,
            cpu_usage_total_ns: s.cpu_usage_total_ns,
            cpu_usage_user_ns: s.cpu_usage_user_ns,
            cpu_usage_kernel_ns: s.cpu_usage_kernel_ns,
            cpu_periods: s.cpu_periods,
            cpu_throttled_periods: s.cpu_throttled_periods,
            cpu_throttled_ns: s.cpu_throttled_ns,
            pids_current: s.pids_current,
            pids_limit: s.pids_limit,
            io_read_bytes: s.io_read_bytes,
            io_write_bytes: s.io_write_bytes,
            ..Default::default()
        })
    }

    fn oom_event(
        &self,
        ctx: &TtrpcContext,
        req: OomEventRequest,
    ) -> ttrpc::Result<OomEventResponse> {
        let asked = Instant::now() + Duration::from_millis(req.wait_ms);
        let until = deadline(ctx).map_or(asked, |d| d.min(asked));
        match self.containers.next_oom(Some(until)) {
            Some(container_id) => Ok(OomEventResponse {
                container_id,
                ..Default::default()
            }),
            None => Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::DEADLINE_EXCEEDED,
                "no OOM kill yet",
            ))),
        }
    }
}

/// Serves the protocol on `addr` (`unix:///path` or `vsock://-1:1024`) until a `Shutdown`
/// request, then returns. Container state is kept under `state_root`; stdio streams listen on
/// the same transport (`/path_<port>` for a Unix socket; vsock ports from the host's CID only);
/// `MountBundle` mounts under `bundles/` beside `state_root`.
pub fn serve(addr: &str, state_root: &std::path::Path) -> Result<(), ServeError> {
    let transport = match addr.strip_prefix("unix://") {
        Some(path) => StreamTransport::Unix(path.into()),
        None => StreamTransport::Vsock { allow_local: false },
    };
    serve_with(addr, state_root, transport, None)
}

/// [`serve`] with the stream transport chosen, and `ready` told once the server listens.
pub fn serve_with(
    addr: &str,
    state_root: &std::path::Path,
    transport: StreamTransport,
    ready: Option<Sender<()>>,
) -> Result<(), ServeError> {
    // Every child of the agent (container processes, orphans) is reaped in one place.
    let _ = strata_backend::reaper::Reaper::global();
    let (tx, rx) = mpsc::channel();
    let service = create_agent(Arc::new(AgentService {
        started: Instant::now(),
        shutdown: Mutex::new(Some(tx)),
        containers: Containers::with_transport(state_root, transport),
        bundles: state_root
            .parent()
            .unwrap_or(std::path::Path::new("/"))
            .join("bundles"),
    }));
    let mut server = ttrpc::Server::new()
        .bind(addr)
        .map_err(|source| ServeError::Listen {
            addr: addr.to_string(),
            source,
        })?
        .register_service(service);
    server.start().map_err(ServeError::Start)?;
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    let _ = rx.recv();
    // Let the Shutdown reply reach the host before the transport goes away.
    std::thread::sleep(Duration::from_millis(100));
    server.shutdown();
    Ok(())
}
