//! The host's side of the protocol: connect (Unix socket, a ttrpc address, or Strata's hybrid
//! vsock socket), exchange versions, call. Every call has a deadline.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::proto::agent::{
    CloseStdinRequest, ConfigureNetworkRequest, CreateContainerRequest, CreateContainerResponse,
    DeleteRequest, ExecRequest, KillRequest, MountBundleRequest, MountBundleResponse,
    OomEventRequest, PauseRequest, PidsRequest, PingRequest, PingResponse, ResizePtyRequest,
    ResumeRequest, ShutdownRequest, StartRequest, StatsRequest, StatsResponse, Stdio, StdioPorts,
    UpdateRequest, VersionRequest, WaitRequest,
};
use crate::proto::agent_ttrpc::AgentClient;
use crate::PROTOCOL_VERSION;

/// The longest `OK <port>` line accepted from the hybrid vsock socket.
const MAX_CONNECT_REPLY: usize = 64;

/// Errors talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to the agent at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the vsock socket refused port {port}: {reply:?}")]
    VsockRefused { port: u32, reply: String },
    #[error("setting up the ttrpc client")]
    Client(#[source] ttrpc::Error),
    #[error("agent call {call} failed")]
    Call {
        call: &'static str,
        #[source]
        source: ttrpc::Error,
    },
    #[error("the agent speaks protocol version {agent}, this host {host}")]
    Incompatible { agent: u32, host: u32 },
}

/// A call's result, its error named by `call`.
fn called<T>(call: &'static str, r: ttrpc::Result<T>) -> Result<T, ClientError> {
    r.map_err(|source| ClientError::Call { call, source })
}

/// How this connection reached the agent, so that stdio ports can be reached the same way.
#[derive(Clone, Debug)]
enum Transport {
    /// The agent as a host process on this Unix socket: port P is `PATH_P`.
    Unix(PathBuf),
    /// The VMM's hybrid vsock socket: `CONNECT <port>`.
    Hybrid(PathBuf),
    /// AF_VSOCK to this CID.
    Vsock(u32),
    /// A ttrpc address of another kind: no streams.
    Other(String),
}

/// One of a process's standard streams, connected.
pub struct StdioStream(std::fs::File);

impl StdioStream {
    /// Ends the stream in this direction (stdin: the process reads end-of-file).
    pub fn close_write(&self) -> std::io::Result<()> {
        nix::sys::socket::shutdown(self.0.as_raw_fd(), nix::sys::socket::Shutdown::Write)
            .map_err(std::io::Error::from)
    }

    /// Bounds each read (None: block).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        nix::sys::socket::setsockopt(
            &self.0,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::from(libc::timeval {
                tv_sec: t.map_or(0, |t| t.as_secs() as libc::time_t),
                tv_usec: t.map_or(0, |t| t.subsec_micros() as libc::suseconds_t),
            }),
        )
        .map_err(std::io::Error::from)
    }
}

impl Read for StdioStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for StdioStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A connection to the agent, after the version exchange.
pub struct Agent {
    client: AgentClient,
    timeout: Duration,
    transport: Transport,
}

/// Sends `CONNECT <port>\n` on `s` and reads the `OK <host port>` line, byte by byte (what
/// follows the newline belongs to the stream), at most [`MAX_CONNECT_REPLY`] bytes.
fn hybrid_connect(s: &mut UnixStream, port: u32, timeout: Duration) -> Result<(), ClientError> {
    let io = |source| ClientError::Connect {
        addr: format!("vsock port {port}"),
        source,
    };
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(io)?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(1) if b[0] == b'\n' => break,
            Ok(1) if line.len() < MAX_CONNECT_REPLY => line.push(b[0]),
            Ok(_) => {
                return Err(ClientError::VsockRefused {
                    port,
                    reply: String::from_utf8_lossy(&line).into_owned(),
                })
            }
            Err(e) => return Err(io(e)),
        }
    }
    if !line.starts_with(b"OK ") {
        return Err(ClientError::VsockRefused {
            port,
            reply: String::from_utf8_lossy(&line).into_owned(),
        });
    }
    s.set_read_timeout(None).map_err(io)
}

impl Agent {
    /// Connects to a ttrpc address (`unix:///path`, `vsock://cid:port`).
    pub fn connect(addr: &str, timeout: Duration) -> Result<Self, ClientError> {
        let c = ttrpc::Client::connect(addr).map_err(|e| ClientError::Connect {
            addr: addr.to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let transport = if let Some(p) = addr.strip_prefix("unix://") {
            Transport::Unix(p.into())
        } else if let Some(cid) = addr
            .strip_prefix("vsock://")
            .and_then(|r| r.split(':').next())
            .and_then(|c| c.parse().ok())
        {
            Transport::Vsock(cid)
        } else {
            Transport::Other(addr.to_string())
        };
        Self::handshake(AgentClient::new(c), timeout, transport)
    }

    /// Connects through Strata's hybrid vsock socket: `CONNECT <port>\n`, `OK <host port>\n`,
    /// then ttrpc on the same stream.
    pub fn connect_hybrid_vsock(
        uds: &Path,
        port: u32,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let mut s = UnixStream::connect(uds).map_err(|source| ClientError::Connect {
            addr: uds.display().to_string(),
            source,
        })?;
        hybrid_connect(&mut s, port, timeout)?;
        let c = ttrpc::Client::new(s.into_raw_fd()).map_err(ClientError::Client)?;
        Self::handshake(AgentClient::new(c), timeout, Transport::Hybrid(uds.into()))
    }

    /// This connection with `timeout` as every later call's deadline (the connect may have used
    /// a shorter one: a boot-time probe that must not wait long for a guest not yet up).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects to a Unix socket path (the agent run as a host process).
    pub fn connect_unix(path: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let s = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            addr: path.display().to_string(),
            source,
        })?;
        let c = ttrpc::Client::new(s.into_raw_fd()).map_err(ClientError::Client)?;
        Self::handshake(AgentClient::new(c), timeout, Transport::Unix(path.into()))
    }

    fn ctx(timeout: Duration) -> ttrpc::context::Context {
        ttrpc::context::with_timeout(timeout.as_nanos().min(i64::MAX as u128) as i64)
    }

    /// A call's context with this connection's deadline.
    fn call_ctx(&self) -> ttrpc::context::Context {
        Self::ctx(self.timeout)
    }

    fn handshake(
        client: AgentClient,
        timeout: Duration,
        transport: Transport,
    ) -> Result<Self, ClientError> {
        let r = client
            .version(
                Self::ctx(timeout),
                &VersionRequest {
                    host_version: PROTOCOL_VERSION,
                    ..Default::default()
                },
            )
            .map_err(|source| ClientError::Call {
                call: "Version",
                source,
            })?;
        if !r.compatible {
            return Err(ClientError::Incompatible {
                agent: r.agent_version,
                host: PROTOCOL_VERSION,
            });
        }
        Ok(Agent {
            client,
            timeout,
            transport,
        })
    }

    /// `Ping`: the agent's PID, uptime and mounts.
    pub fn ping(&self) -> Result<PingResponse, ClientError> {
        self.ping_within(self.timeout)
    }

    /// `Ping` with a deadline of its own (a health check's, shorter than the calls').
    pub fn ping_within(&self, timeout: Duration) -> Result<PingResponse, ClientError> {
        let r = self
            .client
            .ping(Self::ctx(timeout), &PingRequest::default());
        called("Ping", r)
    }

    /// `Shutdown`: the agent answers, then powers the VM off.
    pub fn shutdown(&self) -> Result<(), ClientError> {
        self.shutdown_within(self.timeout)
    }

    /// `Shutdown` with a deadline of its own (the caller stops the VM anyway after it).
    pub fn shutdown_within(&self, timeout: Duration) -> Result<(), ClientError> {
        let r = self
            .client
            .shutdown(Self::ctx(timeout), &ShutdownRequest::default());
        called("Shutdown", r).map(drop)
    }

    /// Connects to a stdio port the agent announced (`StdioPorts`), the way this connection
    /// reached the agent.
    pub fn open_stream(&self, port: u32) -> Result<StdioStream, ClientError> {
        let fail = |addr: String, source| ClientError::Connect { addr, source };
        let fd: OwnedFd = match &self.transport {
            Transport::Unix(base) => {
                let p = format!("{}_{port}", base.display());
                UnixStream::connect(&p).map_err(|e| fail(p, e))?.into()
            }
            Transport::Hybrid(uds) => {
                let mut s =
                    UnixStream::connect(uds).map_err(|e| fail(uds.display().to_string(), e))?;
                hybrid_connect(&mut s, port, self.timeout)?;
                s.into()
            }
            Transport::Vsock(cid) => crate::vsock::connect(*cid, port)
                .map_err(|e| fail(format!("vsock://{cid}:{port}"), e))?,
            Transport::Other(addr) => {
                return Err(fail(
                    addr.clone(),
                    std::io::Error::other("no stdio streams on this transport"),
                ))
            }
        };
        Ok(StdioStream(fd.into()))
    }

    /// `MountBundle`: mounts the bundle image on the guest's disk `device` (`/dev/vdX`) as
    /// `name`; the reply names the bundle directory for `CreateContainer`.
    pub fn mount_bundle(
        &self,
        device: &str,
        name: &str,
    ) -> Result<MountBundleResponse, ClientError> {
        let req = MountBundleRequest {
            device: device.to_string(),
            name: name.to_string(),
            ..Default::default()
        };
        called(
            "MountBundle",
            self.client.mount_bundle(self.call_ctx(), &req),
        )
    }

    /// `CreateContainer`: the container from the bundle directory `bundle` in the guest
    /// ([`Agent::mount_bundle`]'s, or `/run/strata/shared/<id>` on the pod's virtio-fs share),
    /// not started; the reply has its PID and stream ports.
    pub fn create_container(
        &self,
        id: &str,
        bundle: &str,
        stdio: Stdio,
    ) -> Result<CreateContainerResponse, ClientError> {
        let req = CreateContainerRequest {
            id: id.to_string(),
            bundle: bundle.to_string(),
            stdio: Some(stdio).into(),
            ..Default::default()
        };
        called(
            "CreateContainer",
            self.client.create_container(self.call_ctx(), &req),
        )
    }

    /// `Start`: the container's init (`exec_id` empty) or an exec'd process; its PID.
    pub fn start(&self, id: &str, exec_id: &str) -> Result<u32, ClientError> {
        let req = StartRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        called("Start", self.client.start(self.call_ctx(), &req)).map(|r| r.pid)
    }

    /// `Exec`: adds the process `process_json` (an OCI runtime Process as JSON) to the
    /// running container `id` as `exec_id`, not started; the ports of its streamed stdio.
    pub fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process_json: &str,
        stdio: Stdio,
    ) -> Result<StdioPorts, ClientError> {
        let req = ExecRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            process_json: process_json.to_string(),
            stdio: Some(stdio).into(),
            ..Default::default()
        };
        called("Exec", self.client.exec(self.call_ctx(), &req))
            .map(|r| r.stdio_ports.into_option().unwrap_or_default())
    }

    /// `Kill`: `signal` to the init (`exec_id` empty) or an exec'd process; with `all` (and
    /// `exec_id` empty) to every process of the container.
    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<(), ClientError> {
        let req = KillRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            signal,
            all,
            ..Default::default()
        };
        called("Kill", self.client.kill(self.call_ctx(), &req)).map(drop)
    }

    /// `Wait`, at most `wait`: the exit status (128 + signal if killed).
    pub fn wait(&self, id: &str, exec_id: &str, wait: Duration) -> Result<u32, ClientError> {
        let req = WaitRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        called("Wait", self.client.wait(Self::ctx(wait), &req)).map(|r| r.exit_status)
    }

    /// `Delete`: the container (`exec_id` empty) or an exec'd process.
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<(), ClientError> {
        let req = DeleteRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        called("Delete", self.client.delete(self.call_ctx(), &req)).map(drop)
    }

    /// `Stats`: the container's cgroup figures inside the guest.
    pub fn stats(&self, id: &str) -> Result<StatsResponse, ClientError> {
        let req = StatsRequest {
            id: id.to_string(),
            ..Default::default()
        };
        called("Stats", self.client.stats(self.call_ctx(), &req))
    }

    /// `OomEvent`: the id of the next container whose cgroup saw an OOM kill, waiting at most
    /// `wait`; `Ok(None)` if none came.
    pub fn oom_event(&self, wait: Duration) -> Result<Option<String>, ClientError> {
        let req = OomEventRequest {
            wait_ms: wait.as_millis().min(u64::MAX as u128) as u64,
            ..Default::default()
        };
        match self.client.oom_event(Self::ctx(wait + self.timeout), &req) {
            Ok(r) => Ok(Some(r.container_id)),
            Err(ttrpc::Error::RpcStatus(s)) if s.code() == ttrpc::Code::DEADLINE_EXCEEDED => {
                Ok(None)
            }
            Err(source) => Err(ClientError::Call {
                call: "OomEvent",
                source,
            }),
        }
    }

    /// `Pause`: freezes every process of the container.
    pub fn pause(&self, id: &str) -> Result<(), ClientError> {
        let req = PauseRequest {
            id: id.to_string(),
            ..Default::default()
        };
        called("Pause", self.client.pause(self.call_ctx(), &req)).map(drop)
    }

    /// `Resume`: thaws a paused container.
    pub fn resume(&self, id: &str) -> Result<(), ClientError> {
        let req = ResumeRequest {
            id: id.to_string(),
            ..Default::default()
        };
        called("Resume", self.client.resume(self.call_ctx(), &req)).map(drop)
    }

    /// `Pids`: the PIDs (in the guest) of the container's processes.
    pub fn pids(&self, id: &str) -> Result<Vec<u32>, ClientError> {
        let req = PidsRequest {
            id: id.to_string(),
            ..Default::default()
        };
        called("Pids", self.client.pids(self.call_ctx(), &req)).map(|r| r.pids)
    }

    /// `Update`: applies `resources_json` (an OCI runtime LinuxResources as JSON) to the
    /// container's cgroup.
    pub fn update(&self, id: &str, resources_json: &str) -> Result<(), ClientError> {
        let req = UpdateRequest {
            id: id.to_string(),
            resources_json: resources_json.to_string(),
            ..Default::default()
        };
        called("Update", self.client.update(self.call_ctx(), &req)).map(drop)
    }

    /// `ResizePty`: the window size (columns, rows) of the terminal of the init (`exec_id`
    /// empty) or an exec'd process.
    pub fn resize_pty(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), ClientError> {
        let req = ResizePtyRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            width,
            height,
            ..Default::default()
        };
        called("ResizePty", self.client.resize_pty(self.call_ctx(), &req)).map(drop)
    }

    /// `CloseStdin`: the process reads end-of-file on stdin once what reached the agent is
    /// through (a stdin path or a streamed stdin alike).
    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), ClientError> {
        let req = CloseStdinRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        called("CloseStdin", self.client.close_stdin(self.call_ctx(), &req)).map(drop)
    }

    /// `ConfigureNetwork`: the guest's interfaces (found by MAC address) and routes; returns
    /// the guest's interface names in the request's order.
    pub fn configure_network(
        &self,
        req: &ConfigureNetworkRequest,
    ) -> Result<Vec<String>, ClientError> {
        called(
            "ConfigureNetwork",
            self.client.configure_network(self.call_ctx(), req),
        )
        .map(|r| r.names)
    }

    /// The raw generated client, for calls this wrapper does not cover yet.
    pub fn raw(&self) -> &AgentClient {
        &self.client
    }
}
