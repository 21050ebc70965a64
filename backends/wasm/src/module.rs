//! Finding the task's WebAssembly binary in the container's rootfs and telling what it is.
//!
//! `process.args[0]` names the binary inside the rootfs (`/app.wasm`), optionally followed by
//! `#name` to call another export than the default. Paths are resolved inside the rootfs:
//! symbolic links (absolute ones too) and `..` never leave it.

use std::path::{Component, Path, PathBuf};

/// The default search path when the spec's environment names none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How many symbolic links one resolution may follow (Linux's own limit).
const MAX_LINKS: usize = 40;

/// What a WebAssembly binary is, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WasmKind {
    /// A core module (WASI preview 1): `\0asm`, version 1.
    Module,
    /// A component (WASI preview 2): `\0asm`, version 0x0d, layer 1.
    Component,
}

/// Why a file is not a WebAssembly binary Strata can run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("not a WebAssembly binary (it does not start with \\0asm)")]
    NotWasm,
    #[error("truncated WebAssembly binary ({0} bytes, shorter than its 8-byte header)")]
    Truncated(usize),
    #[error("unknown WebAssembly binary version {version:#x}, layer {layer}: expected a core module (version 1) or a component (layer 1)")]
    UnknownVersion { version: u16, layer: u16 },
}

/// Tells a core module from a component by the version and layer fields of the header.
pub fn kind_of(bytes: &[u8]) -> Result<WasmKind, HeaderError> {
    if bytes.len() >= 4 && &bytes[..4] != b"\0asm" {
        return Err(HeaderError::NotWasm);
    }
    if bytes.len() < 8 {
        if bytes.len() >= 4 || b"\0asm".starts_with(bytes) {
            return Err(HeaderError::Truncated(bytes.len()));
        }
        return Err(HeaderError::NotWasm);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
    match (version, layer) {
        (1, 0) => Ok(WasmKind::Module),
        (_, 1) => Ok(WasmKind::Component),
        _ => Err(HeaderError::UnknownVersion { version, layer }),
    }
}

/// Splits `/app.wasm#name` into the path and the export to call.
pub fn split_entrypoint(arg0: &str) -> (&str, Option<&str>) {
    match arg0.rsplit_once('#') {
        Some((path, name)) if !name.is_empty() && !name.contains('/') => (path, Some(name)),
        _ => (arg0, None),
    }
}

/// Resolves `path` (absolute, or relative to `cwd`) inside `root` the way the container would
/// see it: `..` stops at the root and symbolic links are followed relative to the root.
/// Returns the host path, or None if a component does not exist.
pub fn resolve_in_root(root: &Path, cwd: &str, path: &str) -> Option<PathBuf> {
    let mut pending: Vec<String> = Vec::new();
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{}", cwd.trim_end_matches('/'), path)
    };
    push_components(&mut pending, &full);
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        match c.as_str() {
            "." | "" => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let mut host = root.to_path_buf();
        host.extend(&resolved);
        host.push(&c);
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                resolved.clear();
            }
            push_components(&mut pending, &target);
        } else {
            resolved.push(c);
        }
    }
    let mut host = root.to_path_buf();
    host.extend(&resolved);
    Some(host)
}

/// Pushes the components of `path` so that the first is popped first.
fn push_components(stack: &mut Vec<String>, path: &str) {
    let comps: Vec<String> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    stack.extend(comps.into_iter().rev());
}

/// The rootfs directory of a bundle's spec.
pub fn rootfs_of(bundle: &Path, spec: &oci_spec::runtime::Spec) -> PathBuf {
    let rel = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    bundle.join(rel)
}

fn spec_cwd(spec: &oci_spec::runtime::Spec) -> String {
    spec.process()
        .as_ref()
        .map(|p| p.cwd().to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into())
}

/// The entrypoint names no file of the rootfs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the module {} does not exist in the container's root filesystem", self.described())]
pub enum NotFound {
    /// A path (it has a `/`): absolute, or relative to the cwd.
    Path(String),
    /// A bare name, looked up in each directory of `search` (the spec's `PATH`).
    NotOnPath { name: String, search: String },
}

impl NotFound {
    /// What was looked for and where: `/nope.wasm`, or `top (looked up in PATH=/usr/bin:/bin)`.
    pub fn described(&self) -> String {
        match self {
            NotFound::Path(p) => p.clone(),
            NotFound::NotOnPath { name, search } => {
                format!("{name} (looked up in PATH={search})")
            }
        }
    }
}

/// The (first) `PATH` of a `KEY=VALUE` environment, as `getenv` finds it, else
/// [`DEFAULT_PATH`].
pub fn search_path(env: &[String]) -> &str {
    env.iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
}

/// Finds the file `path` (`process.args[0]` without `#export`) names, inside `root`, as
/// runc's `execvp` and runwasi do: an absolute path as is, a path with a `/` relative to
/// `cwd`, a bare name in each directory of `search` (the spec's `PATH`) in turn, never in the
/// cwd. Every lookup goes through [`resolve_in_root`]: symbolic links and `..` never leave
/// the rootfs. Returns the host path of a regular file.
pub fn find_entrypoint(
    root: &Path,
    cwd: &str,
    path: &str,
    search: &str,
) -> Result<PathBuf, NotFound> {
    if path.contains('/') {
        return resolve_in_root(root, cwd, path)
            .filter(|p| p.is_file())
            .ok_or_else(|| NotFound::Path(path.to_string()));
    }
    search
        .split(':')
        .filter(|d| !d.is_empty())
        .filter_map(|d| resolve_in_root(root, cwd, &format!("{d}/{path}")))
        .find(|p| p.is_file())
        .ok_or_else(|| NotFound::NotOnPath {
            name: path.to_string(),
            search: search.to_string(),
        })
}

/// The host path of the file the spec's entrypoint names ([`find_entrypoint`]).
pub fn entrypoint_file(bundle: &Path, spec: &oci_spec::runtime::Spec) -> Option<PathBuf> {
    let process = spec.process().as_ref()?;
    let arg0 = process.args().as_ref()?.first()?;
    let (path, _) = split_entrypoint(arg0);
    if path.is_empty() {
        return None;
    }
    let env = process.env().clone().unwrap_or_default();
    find_entrypoint(
        &rootfs_of(bundle, spec),
        &spec_cwd(spec),
        path,
        search_path(&env),
    )
    .ok()
}

/// True when the spec's entrypoint is an ELF executable: in a wasm pod such a container (the
/// pause container, a sidecar) runs on the native tier.
pub fn entrypoint_is_elf(bundle: &Path, spec: &oci_spec::runtime::Spec) -> bool {
    use std::io::Read;
    let Some(path) = entrypoint_file(bundle, spec) else {
        return false;
    };
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map(|()| &magic == b"\x7fELF")
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_kinds() {
        assert_eq!(kind_of(b"\0asm\x01\0\0\0rest"), Ok(WasmKind::Module));
        assert_eq!(kind_of(b"\0asm\x0d\0\x01\0"), Ok(WasmKind::Component));
        assert_eq!(kind_of(b"\x7fELF\x02\x01\x01\0"), Err(HeaderError::NotWasm));
        assert_eq!(kind_of(b"#!/bin/sh\n"), Err(HeaderError::NotWasm));
        assert_eq!(kind_of(b"\0as"), Err(HeaderError::Truncated(3)));
        assert_eq!(kind_of(b"\0asm\x01"), Err(HeaderError::Truncated(5)));
        assert_eq!(kind_of(b""), Err(HeaderError::Truncated(0)));
        assert!(matches!(
            kind_of(b"\0asm\x02\0\0\0"),
            Err(HeaderError::UnknownVersion { version: 2, .. })
        ));
    }

    #[test]
    fn entrypoint_suffix() {
        assert_eq!(split_entrypoint("/app.wasm"), ("/app.wasm", None));
        assert_eq!(
            split_entrypoint("/app.wasm#run"),
            ("/app.wasm", Some("run"))
        );
        assert_eq!(
            split_entrypoint("/dir#x/app.wasm"),
            ("/dir#x/app.wasm", None)
        );
        assert_eq!(split_entrypoint("/app.wasm#"), ("/app.wasm#", None));
    }

    #[test]
    fn resolution_stays_in_root() {
        let root = std::env::temp_dir().join(format!("strata-wasm-resolve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/busybox"), b"\x7fELF....").unwrap();
        std::fs::write(root.join("app.wasm"), b"\0asm\x01\0\0\0").unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("/app.wasm", root.join("bin/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", root.join("bin/up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("bin/loop")).unwrap();

        assert_eq!(
            resolve_in_root(&root, "/", "/bin/sh"),
            Some(root.join("bin/busybox"))
        );
        assert_eq!(
            resolve_in_root(&root, "/", "/bin/abs"),
            Some(root.join("app.wasm"))
        );
        assert_eq!(
            resolve_in_root(&root, "/bin", "../app.wasm"),
            Some(root.join("app.wasm"))
        );
        // Out of the root through `..` lands on the root's own /etc/passwd, which is absent.
        assert_eq!(resolve_in_root(&root, "/", "/bin/up"), None);
        assert_eq!(
            resolve_in_root(&root, "/", "/../../app.wasm"),
            Some(root.join("app.wasm"))
        );
        assert_eq!(resolve_in_root(&root, "/", "/bin/loop"), None);
        assert_eq!(resolve_in_root(&root, "/", "/missing"), None);

        let spec = |args: &[&str]| -> oci_spec::runtime::Spec {
            let mut spec = oci_spec::runtime::Spec::default();
            let mut root_cfg = oci_spec::runtime::Root::default();
            root_cfg.set_path(root.clone());
            spec.set_root(Some(root_cfg));
            let mut p = oci_spec::runtime::Process::default();
            p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
            spec.set_process(Some(p));
            spec
        };
        assert!(entrypoint_is_elf(Path::new("/"), &spec(&["sh", "-c", "x"])));
        assert!(entrypoint_is_elf(Path::new("/"), &spec(&["/bin/sh"])));
        assert!(!entrypoint_is_elf(Path::new("/"), &spec(&["/app.wasm"])));
        assert!(!entrypoint_is_elf(
            Path::new("/"),
            &spec(&["/app.wasm#main"])
        ));
        assert!(!entrypoint_is_elf(Path::new("/"), &spec(&["/nope"])));

        // One lookup for the ELF check and the tier: a bare name only through PATH.
        std::fs::write(root.join("bin/app.wasm"), b"\0asm\x01\0\0\0").unwrap();
        std::os::unix::fs::symlink("/../../bin/app.wasm", root.join("bin/tool")).unwrap();
        let path = "/usr/bin:/bin";
        assert_eq!(
            find_entrypoint(&root, "/", "tool", path),
            Ok(root.join("bin/app.wasm"))
        );
        assert_eq!(
            find_entrypoint(&root, "/bin", "app.wasm", path),
            Ok(root.join("bin/app.wasm"))
        );
        // Never from the cwd: /app.wasm is there, but not on PATH.
        let err = find_entrypoint(&root, "/", "app.wasm", "/usr/bin").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the module app.wasm (looked up in PATH=/usr/bin) does not exist in the container's root filesystem"
        );
        assert_eq!(
            find_entrypoint(&root, "/", "./app.wasm", "/usr/bin"),
            Ok(root.join("app.wasm"))
        );
        assert_eq!(
            find_entrypoint(&root, "/", "up", "/bin"),
            Err(NotFound::NotOnPath {
                name: "up".into(),
                search: "/bin".into()
            })
        );
        assert_eq!(
            find_entrypoint(&root, "/", "/nope", path),
            Err(NotFound::Path("/nope".into()))
        );
        assert_eq!(
            search_path(&["A=1".into(), "PATH=/x".into(), "PATH=/y".into()]),
            "/x"
        );
        assert_eq!(search_path(&[]), DEFAULT_PATH);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
