//! The agent's side of the protocol: the ttrpc service and the server.
//!
//! On vsock only the host may talk to the agent: ttrpc's accept hook looks at each connection's
//! peer and closes it at once unless its CID is the host's (2). Processes in the guest could
//! reach port 1024 through vsock loopback otherwise. The in-guest self-test alone also admits
//! the guest's own CID (1), by [`StreamTransport::Vsock`]'s `allow_local`, which nothing but
//! [`crate::selftest`] sets.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ttrpc::{AcceptHook, HookError, HookOutput, TtrpcContext};

use crate::containers::{to_ttrpc, Containers};
use crate::proto::agent::{
    CloseStdinRequest, CloseStdinResponse, ConfigureNetworkRequest, ConfigureNetworkResponse,
    CreateContainerRequest, CreateContainerResponse, DeleteRequest, DeleteResponse, ExecRequest,
    ExecResponse, KillRequest, KillResponse, MountBundleRequest, MountBundleResponse,
    OomEventRequest, OomEventResponse, PauseRequest, PauseResponse, PidsRequest, PidsResponse,
    PingRequest, PingResponse, ResizePtyRequest, ResizePtyResponse, ResumeRequest, ResumeResponse,
    ShutdownRequest, ShutdownResponse, StartRequest, StartResponse, StatsRequest, StatsResponse,
    UpdateRequest, UpdateResponse, VersionRequest, VersionResponse, WaitRequest, WaitResponse,
};
use crate::proto::agent_ttrpc::{create_agent, Agent};
use crate::streams::{peer_allowed, StreamTransport};
use crate::{vsock, PROTOCOL_VERSION};

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

/// When a blocking call answers "not yet": a tenth before the caller's own timeout (which
/// runs from when it sent the request), so that the answer reaches the caller before its
/// client gives up on the call.
fn deadline(ctx: &TtrpcContext) -> Option<Instant> {
    (ctx.timeout_nano > 0)
        .then(|| Instant::now() + Duration::from_nanos(ctx.timeout_nano as u64 / 10 * 9))
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
            mounts: crate::pid1::mounts()
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
        Ok(StatsResponse::from(&s))
    }

    fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<PauseResponse> {
        self.containers.pause(&req.id).map_err(to_ttrpc)?;
        Ok(PauseResponse::default())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<ResumeResponse> {
        self.containers.resume(&req.id).map_err(to_ttrpc)?;
        Ok(ResumeResponse::default())
    }

    fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let pids = self.containers.pids(&req.id).map_err(to_ttrpc)?;
        Ok(PidsResponse {
            pids,
            ..Default::default()
        })
    }

    fn update(&self, _ctx: &TtrpcContext, req: UpdateRequest) -> ttrpc::Result<UpdateResponse> {
        self.containers
            .update(&req.id, &req.resources_json)
            .map_err(to_ttrpc)?;
        Ok(UpdateResponse::default())
    }

    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: ResizePtyRequest,
    ) -> ttrpc::Result<ResizePtyResponse> {
        self.containers
            .resize_pty(&req.id, &req.exec_id, req.width, req.height)
            .map_err(to_ttrpc)?;
        Ok(ResizePtyResponse::default())
    }

    fn close_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: CloseStdinRequest,
    ) -> ttrpc::Result<CloseStdinResponse> {
        self.containers
            .close_stdin(&req.id, &req.exec_id)
            .map_err(to_ttrpc)?;
        Ok(CloseStdinResponse::default())
    }

    fn configure_network(
        &self,
        _ctx: &TtrpcContext,
        req: ConfigureNetworkRequest,
    ) -> ttrpc::Result<ConfigureNetworkResponse> {
        let names = crate::network::configure(&req).map_err(to_ttrpc)?;
        Ok(ConfigureNetworkResponse {
            names,
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

/// ttrpc's accept hook on vsock: closes a connection whose peer is not allowed
/// ([`peer_allowed`]) before ttrpc reads a byte of it.
#[derive(Debug)]
struct HostOnly {
    allow_local: bool,
    refused: AtomicU64,
}

impl AcceptHook for HostOnly {
    fn on_accept(&self, fd: RawFd) -> Result<HookOutput, HookError> {
        let cid = vsock::peer_cid(fd).map_err(HookError::Io)?;
        if peer_allowed(cid, self.allow_local) {
            return Ok(HookOutput {
                data: Default::default(),
                payload_transform: None,
            });
        }
        // On the console, without letting a guest process flood it: the 1st, 2nd, 4th, ...
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            println!(
                "strata-guest-agent: refused a connection from CID {cid} (only the host's, \
                 {}, may connect); {n} so far",
                vsock::CID_HOST
            );
        }
        Err(HookError::Rejected(format!("CID {cid}")))
    }
}

/// The agent serving: its ttrpc server, and what `Shutdown` signals.
pub struct Serving {
    server: ttrpc::Server,
    shutdown: Receiver<()>,
    /// The vsock listener, the agent's own: ttrpc's server never closes a listener, so the
    /// port is free again only when this drops, after the server stopped.
    listener: Option<OwnedFd>,
}

/// The backlog of port 1024 (ttrpc's own listeners take 10).
const BACKLOG: i32 = 10;

impl Serving {
    /// Serves the protocol on `addr` (`unix:///path` or `vsock://-1:1024`). Container state is
    /// kept under `state_root`; stdio streams listen on `transport` (`/path_<port>` for a Unix
    /// socket, vsock ports otherwise); on vsock the peers are checked ([`peer_allowed`], with
    /// `transport`'s `allow_local`); `MountBundle` mounts under `bundles/` beside `state_root`.
    pub fn start(
        addr: &str,
        state_root: &std::path::Path,
        transport: StreamTransport,
    ) -> Result<Serving, ServeError> {
        // Every child of the agent (container processes, orphans) is reaped in one place.
        let _ = strata_backend::reaper::Reaper::global();
        let (tx, rx) = mpsc::channel();
        let allow_local = matches!(transport, StreamTransport::Vsock { allow_local: true });
        let service = create_agent(Arc::new(AgentService {
            started: Instant::now(),
            shutdown: Mutex::new(Some(tx)),
            containers: Containers::with_transport(state_root, transport),
            bundles: state_root
                .parent()
                .unwrap_or(std::path::Path::new("/"))
                .join("bundles"),
        }));
        let listen_err = |source| ServeError::Listen {
            addr: addr.to_string(),
            source,
        };
        let (server, listener) = match vsock_port(addr) {
            Some(port) => {
                let fd = vsock::listen(port, BACKLOG)
                    .map_err(|e| listen_err(ttrpc::Error::Others(e.to_string())))?;
                let server = ttrpc::Server::new()
                    .add_listener(fd.as_raw_fd())
                    .map_err(listen_err)?
                    .set_accept_hook(HostOnly {
                        allow_local,
                        refused: AtomicU64::new(0),
                    });
                (server, Some(fd))
            }
            None => (ttrpc::Server::new().bind(addr).map_err(listen_err)?, None),
        };
        let mut server = server.register_service(service);
        server.start().map_err(ServeError::Start)?;
        Ok(Serving {
            server,
            shutdown: rx,
            listener,
        })
    }

    /// Serves until a `Shutdown` request, then stops.
    pub fn until_shutdown(self) {
        let _ = self.shutdown.recv();
        // Let the Shutdown reply reach the host before the transport goes away.
        std::thread::sleep(Duration::from_millis(100));
        self.stop();
    }

    /// Stops serving now; the port is free again.
    pub fn stop(self) {
        self.server.shutdown();
        drop(self.listener);
    }
}

/// The port of a `vsock://CID:PORT` address (any CID: the agent listens on all).
fn vsock_port(addr: &str) -> Option<u32> {
    addr.strip_prefix("vsock://")?
        .rsplit_once(':')?
        .1
        .parse()
        .ok()
}

/// Serves the protocol on `addr` (`unix:///path` or `vsock://-1:1024`, from the host's CID
/// only) until a `Shutdown` request, then returns. See [`Serving::start`].
pub fn serve(addr: &str, state_root: &std::path::Path) -> Result<(), ServeError> {
    let transport = match addr.strip_prefix("unix://") {
        Some(path) => StreamTransport::Unix(path.into()),
        None => StreamTransport::Vsock { allow_local: false },
    };
    Serving::start(addr, state_root, transport)?.until_shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_of_a_vsock_address() {
        assert_eq!(vsock_port("vsock://-1:1024"), Some(1024));
        assert_eq!(vsock_port("vsock://3:1025"), Some(1025));
        assert_eq!(vsock_port("vsock://-1"), None);
        assert_eq!(vsock_port("vsock://-1:x"), None);
        assert_eq!(vsock_port("unix:///run/a.sock"), None);
    }
}
