//! An image registry on loopback for clients that insist on pulling (critest): Debian's
//! `docker-registry` (the CNCF distribution registry) run with a config file of its own, on a
//! free port of 127.0.0.1, storing under a directory the caller owns; and a small push client
//! for the OCI distribution API over plain HTTP that uploads an image built by
//! [`ImageBuilder`] (monolithic blob uploads, then the manifest).
//!
//! The registry process is the test's child, started under `setpriv --pdeathsig KILL`, so it
//! dies with the thread that started it even when the test process is killed; [`Registry`]'s
//! Drop stops it and waits for it. It never listens on anything but 127.0.0.1.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd::{poll, wait_deadline};
use crate::harness::HarnessError;
use crate::image::ImageBuilder;

/// Debian's `docker-registry` package installs the registry as this program.
pub const REGISTRY_BIN: &str = "docker-registry";
/// How long one HTTP exchange with the registry may take.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A `docker-registry serve` process on `127.0.0.1:<port>`.
pub struct Registry {
    /// `127.0.0.1:<port>`: the host part of the references it serves.
    pub host: String,
    pub addr: SocketAddr,
    /// Its config file, storage and log live here (`config.yml`, `storage/`, `registry.log`).
    pub dir: PathBuf,
    child: Option<Child>,
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// A port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn config_yml(storage: &Path, addr: SocketAddr) -> String {
    format!(
        r#"version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
"#,
        storage = storage.display()
    )
}

impl Registry {
    /// Starts a registry storing under `dir` (created; the caller removes it).
    /// [`HarnessError::Missing`] when `docker-registry` or `setpriv` is not installed.
    pub fn start(dir: &Path) -> Result<Registry, HarnessError> {
        let failed = |e: anyhow::Error| HarnessError::Failed(format!("{e:#}"));
        if find_program(REGISTRY_BIN).is_none() {
            return Err(HarnessError::Missing(format!(
                "`{REGISTRY_BIN}` is not on PATH: apt-get install docker-registry (scripts/install-deps)"
            )));
        }
        if find_program("setpriv").is_none() {
            return Err(HarnessError::Missing(
                "`setpriv` is not on PATH: apt-get install util-linux".into(),
            ));
        }
        let storage = dir.join("storage");
        fs::create_dir_all(&storage)
            .with_context(|| format!("creating {}", storage.display()))
            .map_err(failed)?;
        // The port is free when looked at; another process may take it before the registry
        // binds it, so a registry that exits at once is retried on another port.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port().map_err(failed)?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let config = dir.join("config.yml");
            fs::write(&config, config_yml(&storage, addr))
                .with_context(|| format!("writing {}", config.display()))
                .map_err(failed)?;
            let log_path = dir.join("registry.log");
            let log = fs::File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))
                .map_err(failed)?;
            let log2 = log.try_clone().map_err(|e| failed(e.into()))?;
            let mut cmd = Command::new("setpriv");
            cmd.args(["--pdeathsig", "KILL", "--", REGISTRY_BIN, "serve"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2);
            let child = cmd
                .spawn()
                .with_context(|| format!("starting {REGISTRY_BIN}"))
                .map_err(failed)?;
            let mut reg = Registry {
                host: addr.to_string(),
                addr,
                dir: dir.to_path_buf(),
                child: Some(child),
            };
            match reg.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return Ok(reg),
                Err(e) => {
                    last = format!(
                        "{e:#}; its log:\n{}",
                        fs::read_to_string(&log_path).unwrap_or_default()
                    );
                    reg.stop();
                }
            }
        }
        Err(HarnessError::Failed(format!(
            "the registry did not start: {last}"
        )))
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits until `GET /v2/` answers 200.
    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let mut last = String::from("no answer");
        let ok = poll(timeout, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                last = format!("it exited: {status}");
                return Some(false);
            }
            match self.request("GET", "/v2/", &[], &[]) {
                Ok(r) if r.status == 200 => Some(true),
                Ok(r) => {
                    last = format!("GET /v2/ answered {}", r.status);
                    None
                }
                Err(e) => {
                    last = format!("{e:#}");
                    None
                }
            }
        });
        match ok {
            Some(true) => Ok(()),
            _ => bail!("registry on {} not ready: {last}", self.addr),
        }
    }

    /// Stops the registry (SIGTERM, then SIGKILL after 5 s) and reaps it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // setpriv execs the registry: the child's pid is the registry's.
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        // Past the deadline, wait_deadline kills and reaps it.
        let _ = wait_deadline(&mut child, Duration::from_secs(5));
    }

    /// One HTTP/1.1 exchange with the registry (`Connection: close`, the whole answer read).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        let mut s = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)
            .with_context(|| format!("connecting to {}", self.addr))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .with_context(|| format!("reading the answer to {method} {path}"))?;
        Response::parse(&raw).with_context(|| format!("the answer to {method} {path}"))
    }

    /// Whether the repository `repo` has blob `digest`.
    fn has_blob(&self, repo: &str, digest: &str) -> Result<bool> {
        let r = self.request("HEAD", &format!("/v2/{repo}/blobs/{digest}"), &[], &[])?;
        Ok(r.status == 200)
    }

    /// Uploads one blob into `repo` (POST an upload, then PUT it whole with its digest).
    fn put_blob(&self, repo: &str, digest: &str, data: &[u8]) -> Result<()> {
        if self.has_blob(repo, digest)? {
            return Ok(());
        }
        let r = self.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[])?;
        if r.status != 202 {
            bail!("starting an upload to {repo}: {r}");
        }
        let location = r
            .header("location")
            .ok_or_else(|| anyhow!("upload to {repo}: no Location in {r}"))?;
        // The Location may be absolute (http://host/v2/...) or a path.
        let path = match location.split_once("://") {
            Some((_, rest)) => rest
                .find('/')
                .map(|i| rest[i..].to_string())
                .unwrap_or_else(|| "/".into()),
            None => location.to_string(),
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{path}{sep}digest={}", digest.replace(':', "%3A"));
        let r = self.request(
            "PUT",
            &url,
            &[("Content-Type", "application/octet-stream")],
            data,
        )?;
        if r.status != 201 {
            bail!("uploading blob {digest} to {repo}: {r}");
        }
        Ok(())
    }

    /// Pushes `image` as `<host>/<repo>:<tag>`; returns that reference.
    pub fn push(&self, image: &ImageBuilder, repo: &str, tag: &str) -> Result<String> {
        let tar_path = self.dir.join(format!("push-{}.tar", std::process::id()));
        image.write_oci_tar(&tar_path)?;
        let result = fs::read(&tar_path)
            .with_context(|| format!("reading {}", tar_path.display()))
            .and_then(|bytes| self.push_oci_layout(&bytes, repo, tag));
        let _ = fs::remove_file(&tar_path);
        result
    }

    /// Pushes the (single-manifest) OCI image layout tarball `layout` as `<host>/<repo>:<tag>`:
    /// every blob its manifest names, then the manifest. Returns the reference.
    pub fn push_oci_layout(&self, layout: &[u8], repo: &str, tag: &str) -> Result<String> {
        let mut files = HashMap::new();
        let mut ar = tar::Archive::new(layout);
        for entry in ar.entries()? {
            let mut entry = entry?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            files.insert(name, data);
        }
        let blob = |digest: &str| -> Result<&Vec<u8>> {
            let hex = digest
                .strip_prefix("sha256:")
                .ok_or_else(|| anyhow!("digest {digest} is not sha256"))?;
            files
                .get(&format!("blobs/sha256/{hex}"))
                .ok_or_else(|| anyhow!("the layout has no blob {digest}"))
        };
        let index: serde_json::Value = serde_json::from_slice(
            files
                .get("index.json")
                .ok_or_else(|| anyhow!("the layout has no index.json"))?,
        )?;
        let desc = &index["manifests"][0];
        let manifest_digest = desc["digest"]
            .as_str()
            .ok_or_else(|| anyhow!("index.json names no manifest: {index}"))?;
        let manifest_bytes = blob(manifest_digest)?;
        let manifest: serde_json::Value = serde_json::from_slice(manifest_bytes)?;
        let media_type = manifest["mediaType"]
            .as_str()
            .or_else(|| desc["mediaType"].as_str())
            .unwrap_or("application/vnd.oci.image.manifest.v1+json")
            .to_string();
        let mut digests = vec![manifest["config"]["digest"].clone()];
        digests.extend(manifest["layers"].as_array().cloned().unwrap_or_default());
        for d in digests {
            let d = d
                .as_str()
                .or_else(|| d["digest"].as_str())
                .ok_or_else(|| anyhow!("a descriptor without digest in {manifest}"))?
                .to_string();
            self.put_blob(repo, &d, blob(&d)?)?;
        }
        let r = self.request(
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", &media_type)],
            manifest_bytes,
        )?;
        if r.status != 201 {
            bail!("putting the manifest of {repo}:{tag}: {r}");
        }
        Ok(format!("{}/{repo}:{tag}", self.host))
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Writes a containerd registry hosts directory for this registry under `dir`
    /// (`<dir>/127.0.0.1:<port>/hosts.toml`: plain HTTP, pull and resolve), the directory the
    /// CRI plugin's registry `config_path` names.
    pub fn write_hosts_dir(&self, dir: &Path) -> Result<()> {
        let host_dir = dir.join(&self.host);
        fs::create_dir_all(&host_dir)
            .with_context(|| format!("creating {}", host_dir.display()))?;
        let url = format!("http://{}", self.host);
        fs::write(
            host_dir.join("hosts.toml"),
            format!(
                "server = \"{url}\"\n\n[host.\"{url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n"
            ),
        )
        .with_context(|| format!("writing {}/hosts.toml", host_dir.display()))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a registry started for `dir` still runs: the pid of a `docker-registry serve` whose
/// config is under `dir` (for the sweep of a killed run's leftovers).
pub fn registry_pids_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    crate::daemon::pids_with_cmdline(&needle)
        .into_iter()
        .filter(|(_, cmdline)| cmdline.contains(REGISTRY_BIN))
        .map(|(pid, _)| pid)
        .collect()
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn parse(raw: &[u8]) -> Result<Response> {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| anyhow!("no end of headers in {} bytes", raw.len()))?;
        let head = String::from_utf8_lossy(&raw[..end]);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok(Response {
            status,
            headers,
            body: raw[end + 4..].to_vec(),
        })
    }

    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(400).collect();
        write!(f, "HTTP {} {}", self.status, body.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_answer() {
        let r = Response::parse(
            b"HTTP/1.1 202 Accepted\r\nLocation: /v2/a/blobs/uploads/x?_state=y\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 202);
        assert_eq!(r.header("location"), Some("/v2/a/blobs/uploads/x?_state=y"));
        assert!(r.body.is_empty());
    }

    #[test]
    fn config_listens_on_loopback_only() {
        let c = config_yml(
            Path::new("/tmp/x"),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 5123)),
        );
        assert!(c.contains("addr: 127.0.0.1:5123"), "{c}");
        assert!(c.contains("rootdirectory: /tmp/x"), "{c}");
    }
}
