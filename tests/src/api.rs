//! Calls to containerd's gRPC API for what `ctr` 1.6 cannot do: update a running task's
//! resources, and hand a runtime a config.json that `ctr` would refuse to write.

use anyhow::{Context, Result};
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::MountsRequest;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CreateTaskRequest, GetContainerRequest, UpdateContainerRequest, UpdateTaskRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Request, Status};
use containerd_client::with_namespace;
use prost_types::{Any, FieldMask};

use crate::Harness;

/// The type URL containerd registers for the OCI `LinuxResources` (JSON-encoded).
pub const LINUX_RESOURCES_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
/// The type URL containerd registers for the OCI runtime `Spec` (JSON-encoded).
pub const SPEC_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

async fn channel(h: &Harness) -> Result<Channel> {
    containerd_client::connect(&h.info.socket)
        .await
        .with_context(|| format!("connecting to {}", h.info.socket.display()))
}

/// Tasks.Update with new resources as the OCI `LinuxResources` JSON `resources`.
/// The outer error is the harness failing; the inner one is containerd's (and the shim's) answer.
pub fn update_resources(
    h: &Harness,
    id: &str,
    resources: &serde_json::Value,
) -> Result<Result<(), Status>> {
    block_on(async {
        let mut tasks = TasksClient::new(channel(h).await?);
        let req = UpdateTaskRequest {
            container_id: id.to_string(),
            resources: Some(Any {
                type_url: LINUX_RESOURCES_URL.to_string(),
                value: serde_json::to_vec(resources)?,
            }),
            annotations: Default::default(),
        };
        Ok(tasks
            .update(with_namespace!(req, h.info.namespace.as_str()))
            .await
            .map(|_| ()))
    })
}

/// Rewrites the spec of the existing container `id` (made with `ctr containers create`) with
/// `edit` (given the current spec's JSON bytes), then asks containerd to create its task: the
/// runtime finds the edited bytes, byte for byte, as its bundle's config.json (containerd 1.6
/// only checks that they unmarshal into Go's `specs.Spec`). Returns containerd's answer.
pub fn create_task_with_raw_spec(
    h: &Harness,
    id: &str,
    edit: impl FnOnce(Vec<u8>) -> Vec<u8>,
) -> Result<Result<u32, Status>> {
    block_on(async {
        let ch = channel(h).await?;
        let ns = h.info.namespace.as_str();
        let mut containers = ContainersClient::new(ch.clone());
        let got = containers
            .get(with_namespace!(
                GetContainerRequest { id: id.to_string() },
                ns
            ))
            .await
            .with_context(|| format!("getting container {id}"))?
            .into_inner()
            .container
            .context("containerd returned no container")?;
        let mut updated = got.clone();
        let current = got.spec.clone().context("the container has no spec")?.value;
        updated.spec = Some(Any {
            type_url: SPEC_URL.to_string(),
            value: edit(current),
        });
        containers
            .update(with_namespace!(
                UpdateContainerRequest {
                    container: Some(updated),
                    update_mask: Some(FieldMask {
                        paths: vec!["spec".to_string()],
                    }),
                },
                ns
            ))
            .await
            .context("replacing the container's spec")?;
        let mut snapshots = SnapshotsClient::new(ch.clone());
        let mounts = snapshots
            .mounts(with_namespace!(
                MountsRequest {
                    snapshotter: got.snapshotter.clone(),
                    key: got.snapshot_key.clone(),
                },
                ns
            ))
            .await
            .context("getting the rootfs mounts")?
            .into_inner()
            .mounts;
        let mut tasks = TasksClient::new(ch);
        let req = CreateTaskRequest {
            container_id: id.to_string(),
            rootfs: mounts,
            ..Default::default()
        };
        Ok(tasks
            .create(with_namespace!(req, ns))
            .await
            .map(|r| r.into_inner().pid))
    })
}

/// How a task run through [`run_task_of_image`] ended.
#[derive(Debug)]
pub struct TaskRun {
    pub exit_status: u32,
    pub stdout: String,
    pub stderr: String,
}

/// Reads what is in the FIFO now, without waiting.
fn drain(f: &mut std::fs::File) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What `ctr run IMAGE` does, without a snapshot: creates container `id` with image `image`,
/// runtime `runtime` and `spec` (its root is the bundle's own empty `rootfs`), creates its
/// task with no rootfs mounts and stdout/stderr on FIFOs, starts it, waits for its exit,
/// and removes task and container. The way to run an image whose layers containerd cannot
/// unpack (wasm layers on containerd 1.6 before 1.6.25). The outer error is the harness
/// failing; the inner one is containerd's (and the shim's) answer.
pub fn run_task_of_image(
    h: &Harness,
    id: &str,
    image: &str,
    runtime: &str,
    spec: &serde_json::Value,
) -> Result<Result<TaskRun, Status>> {
    use std::os::unix::fs::OpenOptionsExt;

    use containerd_client::services::v1::container::Runtime;
    use containerd_client::services::v1::{
        Container, CreateContainerRequest, DeleteContainerRequest, DeleteTaskRequest, StartRequest,
        WaitRequest,
    };

    let fifos = h.fifo_dir().join(format!("{id}-api"));
    std::fs::create_dir_all(&fifos)?;
    let (out_path, err_path) = (fifos.join("stdout"), fifos.join("stderr"));
    let mut readers = Vec::new();
    for p in [&out_path, &err_path] {
        let _ = std::fs::remove_file(p);
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
        readers.push(
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(p)?,
        );
    }
    let result = block_on(async {
        let ch = channel(h).await?;
        let ns = h.info.namespace.as_str();
        let mut containers = ContainersClient::new(ch.clone());
        let container = Container {
            id: id.to_string(),
            image: image.to_string(),
            runtime: Some(Runtime {
                name: runtime.to_string(),
                options: None,
            }),
            spec: Some(Any {
                type_url: SPEC_URL.to_string(),
                value: serde_json::to_vec(spec)?,
            }),
            ..Default::default()
        };
        containers
            .create(with_namespace!(
                CreateContainerRequest {
                    container: Some(container)
                },
                ns
            ))
            .await
            .context("creating the container")?;
        let mut tasks = TasksClient::new(ch);
        let run = async {
            tasks
                .create(with_namespace!(
                    CreateTaskRequest {
                        container_id: id.to_string(),
                        stdout: out_path.to_string_lossy().into_owned(),
                        stderr: err_path.to_string_lossy().into_owned(),
                        ..Default::default()
                    },
                    ns
                ))
                .await?;
            // Wait is asked before Start so that the exit cannot be missed.
            let mut waiter = tasks.clone();
            let wait = tokio::spawn({
                let req = with_namespace!(
                    WaitRequest {
                        container_id: id.to_string(),
                        exec_id: String::new(),
                    },
                    ns
                );
                async move { waiter.wait(req).await }
            });
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            tasks
                .start(with_namespace!(
                    StartRequest {
                        container_id: id.to_string(),
                        exec_id: String::new(),
                    },
                    ns
                ))
                .await?;
            let status = wait
                .await
                .map_err(|e| Status::unknown(e.to_string()))??
                .into_inner()
                .exit_status;
            Ok::<u32, Status>(status)
        }
        .await;
        let _ = tasks
            .delete(with_namespace!(
                DeleteTaskRequest {
                    container_id: id.to_string()
                },
                ns
            ))
            .await;
        let _ = containers
            .delete(with_namespace!(
                DeleteContainerRequest { id: id.to_string() },
                ns
            ))
            .await;
        Ok::<_, anyhow::Error>(run)
    });
    let (stdout, stderr) = (drain(&mut readers[0]), drain(&mut readers[1]));
    drop(readers);
    let _ = std::fs::remove_dir_all(&fifos);
    Ok(result?.map(|exit_status| TaskRun {
        exit_status,
        stdout,
        stderr,
    }))
}
