//! The host's side of the protocol: connect (Unix socket, a ttrpc address, or Strata's hybrid
//! vsock socket), exchange versions, call. Every call has a deadline.

use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::proto::agent::{PingRequest, PingResponse, ShutdownRequest, VersionRequest};
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

/// A connection to the agent, after the version exchange.
pub struct Agent {
    client: AgentClient,
    timeout: Duration,
}

impl Agent {
    /// Connects to a ttrpc address (`unix:///path`, `vsock://cid:port`).
    pub fn connect(addr: &str, timeout: Duration) -> Result<Self, ClientError> {
        let c = ttrpc::Client::connect(addr).map_err(|e| ClientError::Connect {
            addr: addr.to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Self::handshake(AgentClient::new(c), timeout)
    }

    /// Connects through Strata's hybrid vsock socket: `CONNECT <port>\n`, `OK <host port>\n`,
    /// then ttrpc on the same stream.
    pub fn connect_hybrid_vsock(
        uds: &Path,
        port: u32,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let addr = uds.display().to_string();
        let io = |source| ClientError::Connect {
            addr: addr.clone(),
            source,
        };
        let mut s = UnixStream::connect(uds).map_err(io)?;
        s.set_read_timeout(Some(timeout)).map_err(io)?;
        s.write_all(format!("CONNECT {port}\n").as_bytes())
            .map_err(io)?;
        // Byte by byte: what follows the newline is ttrpc's.
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
        s.set_read_timeout(None).map_err(io)?;
        let c = ttrpc::Client::new(s.into_raw_fd()).map_err(ClientError::Client)?;
        Self::handshake(AgentClient::new(c), timeout)
    }

    /// Connects to a Unix socket path (the agent run as a host process).
    pub fn connect_unix(path: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let s = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            addr: path.display().to_string(),
            source,
        })?;
        let c = ttrpc::Client::new(s.into_raw_fd()).map_err(ClientError::Client)?;
        Self::handshake(AgentClient::new(c), timeout)
    }

    fn ctx(timeout: Duration) -> ttrpc::context::Context {
        ttrpc::context::with_timeout(timeout.as_nanos().min(i64::MAX as u128) as i64)
    }

    fn handshake(client: AgentClient, timeout: Duration) -> Result<Self, ClientError> {
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
        Ok(Agent { client, timeout })
    }

    /// `Ping`: the agent's PID, uptime and mounts.
    pub fn ping(&self) -> Result<PingResponse, ClientError> {
        self.client
            .ping(Self::ctx(self.timeout), &PingRequest::default())
            .map_err(|source| ClientError::Call {
                call: "Ping",
                source,
            })
    }

    /// `Shutdown`: the agent answers, then powers the VM off.
    pub fn shutdown(&self) -> Result<(), ClientError> {
        self.client
            .shutdown(Self::ctx(self.timeout), &ShutdownRequest::default())
            .map(|_| ())
            .map_err(|source| ClientError::Call {
                call: "Shutdown",
                source,
            })
    }

    /// The raw generated client, for calls this wrapper does not cover yet.
    pub fn raw(&self) -> &AgentClient {
        &self.client
    }
}
