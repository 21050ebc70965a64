//! Builds OCI image tarballs locally (no registry can be reached): a busybox image made
//! from Debian's `busybox-static`, in the OCI image layout that `ctr images import` reads.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Where Debian's `busybox-static` puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The uid/gid of the unprivileged user the image's /etc/passwd names `strata`.
pub const TEST_UID: u32 = 1000;
/// A supplementary group (`audio`, 2000) that `strata` belongs to in the image's /etc/group.
pub const TEST_EXTRA_GID: u32 = 2000;

/// A file in a layer.
enum Entry {
    Dir { mode: u32, uid: u64 },
    File { data: Vec<u8>, mode: u32 },
    Symlink { target: String },
}

/// An image with one layer, written as an OCI image layout tarball.
pub struct ImageBuilder {
    name: String,
    entries: BTreeMap<String, Entry>,
    cmd: Vec<String>,
    env: Vec<String>,
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OCI name of this machine's architecture.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// `pgrep PATTERN`: the pids of the processes whose name contains PATTERN, not its own.
const PGREP: &str = r#"#!/bin/sh
[ $# -eq 1 ] || { echo "usage: pgrep PATTERN" >&2; exit 2; }
found=1
for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = "$$" ] && continue
    name=$(cat "$d/comm" 2>/dev/null) || continue
    case "$name" in *"$1"*) echo "$pid"; found=0 ;; esac
done
exit $found
"#;

impl ImageBuilder {
    /// A busybox image: `/bin/busybox` from the host, a symlink in `/bin` for every applet, an
    /// `/etc/passwd` with root and `strata` (1000:1000, also in group `audio` 2000), `/tmp`.
    pub fn busybox(name: &str) -> Result<Self> {
        let busybox = fs::read(BUSYBOX).with_context(|| {
            format!("reading {BUSYBOX}: install Debian's busybox-static (apt-get install busybox-static)")
        })?;
        let out = Command::new(BUSYBOX)
            .arg("--list")
            .output()
            .with_context(|| format!("running {BUSYBOX} --list"))?;
        if !out.status.success() {
            bail!(
                "{BUSYBOX} --list failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut b = ImageBuilder {
            name: name.to_string(),
            entries: BTreeMap::new(),
            cmd: vec!["/bin/sh".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        };
        for d in [
            "bin", "dev", "etc", "proc", "sys", "root", "mnt", "run", "var", "usr", "home",
        ] {
            b.dir(d, 0o755, 0);
        }
        b.dir("tmp", 0o1777, 0);
        b.dir("home/strata", 0o755, u64::from(TEST_UID));
        b.file("bin/busybox", busybox, 0o755);
        let applets = String::from_utf8_lossy(&out.stdout).into_owned();
        for applet in applets.split_whitespace() {
            if applet != "busybox" {
                b.symlink(&format!("bin/{applet}"), "busybox");
            }
        }
        // Debian's busybox-static has no pgrep, which critest's busybox:1.29 image has and its
        // "execSync with timeout" spec runs (`sh -c "pgrep sleep || true"`, which must print
        // nothing once the timed-out exec is gone): a script with pgrep's plain form stands in.
        if !applets.split_whitespace().any(|a| a == "pgrep") {
            b.file("bin/pgrep", PGREP.as_bytes().to_vec(), 0o755);
        }
        b.file(
            "etc/passwd",
            format!(
                "root:x:0:0:root:/root:/bin/sh\nstrata:x:{TEST_UID}:{TEST_UID}:strata:/home/strata:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
            )
            .into_bytes(),
            0o644,
        );
        b.file(
            "etc/group",
            format!("root:x:0:\nstrata:x:{TEST_UID}:\naudio:x:{TEST_EXTRA_GID}:strata\nnogroup:x:65534:\n").into_bytes(),
            0o644,
        );
        Ok(b)
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, mode: u32, uid: u64) -> &mut Self {
        self.entries
            .insert(path.to_string(), Entry::Dir { mode, uid });
        self
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) -> &mut Self {
        self.entries
            .insert(path.to_string(), Entry::File { data, mode });
        self
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entries.insert(
            path.to_string(),
            Entry::Symlink {
                target: target.to_string(),
            },
        );
        self
    }

    /// Sets the image's default command.
    pub fn cmd(&mut self, cmd: &[&str]) -> &mut Self {
        self.cmd = cmd.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The image reference it is imported as.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The image's one layer, as an uncompressed tar.
    pub fn layer(&self) -> Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, entry) in &self.entries {
            let mut h = tar::Header::new_ustar();
            h.set_mtime(0);
            match entry {
                Entry::Dir { mode, uid } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_uid(*uid);
                    h.set_gid(*uid);
                    h.set_size(0);
                    tar.append_data(&mut h, format!("{path}/"), std::io::empty())?;
                }
                Entry::File { data, mode } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_uid(0);
                    h.set_gid(0);
                    h.set_size(data.len() as u64);
                    tar.append_data(&mut h, path, data.as_slice())?;
                }
                Entry::Symlink { target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_uid(0);
                    h.set_gid(0);
                    h.set_size(0);
                    tar.append_link(&mut h, path, target)?;
                }
            }
        }
        Ok(tar.into_inner()?)
    }

    /// Unpacks the image's files into `dir` (a root filesystem for `ctr run --rootfs` or a
    /// spec's `root.path`).
    pub fn unpack(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir)?;
        let layer = self.layer()?;
        let mut ar = tar::Archive::new(layer.as_slice());
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.unpack(dir)
            .with_context(|| format!("unpacking the image into {}", dir.display()))
    }

    /// Writes the image as an OCI image layout tarball at `out`.
    pub fn write_oci_tar(&self, out: &Path) -> Result<PathBuf> {
        let layer = self.layer()?;
        let layer_digest = format!("sha256:{}", sha256_hex(&layer));
        let config = serde_json::to_vec(&json!({
            "architecture": oci_arch(),
            "os": "linux",
            "config": { "Env": self.env, "Cmd": self.cmd, "WorkingDir": "/" },
            "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
            "history": [ { "created_by": "strata-tests ImageBuilder" } ],
        }))?;
        let bytes = oci_layout_tar(
            &self.name,
            (oci_arch(), "linux"),
            &config,
            "application/vnd.oci.image.layer.v1.tar",
            &layer,
        )?;
        let mut f = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        f.write_all(&bytes)?;
        Ok(out.to_path_buf())
    }
}

/// Writes an OCI image layout tarball at `out` whose one layer is the WebAssembly binary
/// `wasm` with media type `media_type` (a wasm OCI image: no tar layer, so the config's
/// `rootfs.diff_ids` is empty; platform `wasip1/wasm`). Import it with `ctr images import
/// --all-platforms --no-unpack` on containerd 1.6 (see docs/wasm.md).
pub fn write_wasm_image_tar(name: &str, media_type: &str, wasm: &[u8], out: &Path) -> Result<()> {
    let config = serde_json::to_vec(&json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [] },
    }))?;
    let bytes = oci_layout_tar(name, ("wasm", "wasip1"), &config, media_type, wasm)?;
    fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))
}

/// An OCI image layout tarball of image `name` (tagged with its tag, else `latest`) for
/// `platform` (architecture, os): `config` and the one layer `layer` of media type
/// `layer_type`.
fn oci_layout_tar(
    name: &str,
    platform: (&str, &str),
    config: &[u8],
    layer_type: &str,
    layer: &[u8],
) -> Result<Vec<u8>> {
    let layer_digest = format!("sha256:{}", sha256_hex(layer));
    let config_digest = format!("sha256:{}", sha256_hex(config));
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [ { "mediaType": layer_type, "digest": layer_digest, "size": layer.len() } ],
    }))?;
    let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [ {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": { "architecture": platform.0, "os": platform.1 },
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        } ],
    }))?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path, data)?;
        Ok(())
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    for (digest, data) in [
        (&layer_digest, layer),
        (&config_digest, config),
        (&manifest_digest, manifest.as_slice()),
    ] {
        add(
            &format!("blobs/sha256/{}", &digest["sha256:".len()..]),
            data,
        )?;
    }
    Ok(tar.into_inner()?)
}
