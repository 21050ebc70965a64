//! The agent's side of the protocol: the ttrpc service and the server loop.

use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ttrpc::TtrpcContext;

use crate::proto::agent::{
    PingRequest, PingResponse, ShutdownRequest, ShutdownResponse, VersionRequest, VersionResponse,
};
use crate::proto::agent_ttrpc::{create_agent, Agent};
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
}

/// Serves the protocol on `addr` (`unix:///path` or `vsock://-1:1024`) until a `Shutdown`
/// request, then returns.
pub fn serve(addr: &str) -> Result<(), ServeError> {
    let (tx, rx) = mpsc::channel();
    let service = create_agent(Arc::new(AgentService {
        started: Instant::now(),
        shutdown: Mutex::new(Some(tx)),
    }));
    let mut server = ttrpc::Server::new()
        .bind(addr)
        .map_err(|source| ServeError::Listen {
            addr: addr.to_string(),
            source,
        })?
        .register_service(service);
    server.start().map_err(ServeError::Start)?;
    let _ = rx.recv();
    // Let the Shutdown reply reach the host before the transport goes away.
    std::thread::sleep(Duration::from_millis(100));
    server.shutdown();
    Ok(())
}
