//! A container's rootfs as a block image for the guest, built from the bundle's rootfs
//! directory without root privileges or a loop device: erofs with `mkfs.erofs` (Debian's
//! `erofs-utils`; read-only by design, compact) or ext4 with `mke2fs -d`. Images
//! are cached by content, so a second start of the same rootfs reuses the image. The guest
//! mounts it read-only and makes it writable with an overlay on tmpfs (the agent's
//! `container::prepare_rootfs`, which tells the two apart by their superblock magic).
//!
//! The cache key is a SHA-256 over the format and a canonical walk of the tree: every entry's
//! relative path, type, mode, owner, and its content (files) or target (symlinks). Timestamps
//! are left out, so unpacking the same image twice gives the same key.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Errors building an image.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("reading the rootfs {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing to the image cache {path}")]
    Cache {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed on {path}: {stderr} (is {package} installed?)")]
    Mkfs {
        tool: &'static str,
        package: &'static str,
        path: String,
        stderr: String,
    },
}

/// The file system of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// erofs, uncompressed (`mkfs.erofs`).
    Erofs,
    /// ext4 without a journal (`mke2fs -d`).
    Ext4,
}

impl ImageFormat {
    fn ext(self) -> &'static str {
        match self {
            ImageFormat::Erofs => "erofs",
            ImageFormat::Ext4 => "ext4",
        }
    }
}

/// A built (or reused) image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootfsImage {
    /// The image file (`<cache>/<key>.ext4`).
    pub path: PathBuf,
    /// The content key.
    pub key: String,
    /// True if the image was already in the cache.
    pub reused: bool,
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Read {
        path: path.display().to_string(),
        source,
    }
}

/// Walks `dir` in path order, feeding the hasher; returns the bytes of file content seen.
fn walk(root: &Path, dir: &Path, h: &mut Sha256) -> Result<u64, RootfsError> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(read_err(dir))?
        .collect::<Result<_, _>>()
        .map_err(read_err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    let mut bytes = 0;
    for e in entries {
        let path = e.path();
        let md = fs::symlink_metadata(&path).map_err(read_err(&path))?;
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            b'd'
        } else if ft.is_file() {
            b'f'
        } else if ft.is_symlink() {
            b'l'
        } else if ft.is_char_device() {
            b'c'
        } else if ft.is_block_device() {
            b'b'
        } else if ft.is_fifo() {
            b'p'
        } else {
            b's'
        };
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update([0, kind]);
        h.update(md.mode().to_le_bytes());
        h.update(md.uid().to_le_bytes());
        h.update(md.gid().to_le_bytes());
        h.update(md.rdev().to_le_bytes());
        if ft.is_file() {
            h.update(md.len().to_le_bytes());
            let mut f = fs::File::open(&path).map_err(read_err(&path))?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = f.read(&mut buf).map_err(read_err(&path))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            bytes += md.len();
        } else if ft.is_symlink() {
            let t = fs::read_link(&path).map_err(read_err(&path))?;
            h.update(t.as_os_str().as_encoded_bytes());
        } else if ft.is_dir() {
            bytes += walk(root, &path, h)?;
        }
        h.update([0xff]);
    }
    Ok(bytes)
}

/// The content key of the tree at `dir` as an image of `format`, and its bytes of file content.
pub fn content_key(dir: &Path, format: ImageFormat) -> Result<(String, u64), RootfsError> {
    let mut h = Sha256::new();
    h.update(format!("strata-rootfs-{}-v1\0", format.ext()).as_bytes());
    let bytes = walk(dir, dir, &mut h)?;
    let key = h
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    Ok((key, bytes))
}

/// Builds (or reuses) the ext4 image of `dir` in `cache`.
pub fn build_ext4(dir: &Path, cache: &Path) -> Result<RootfsImage, RootfsError> {
    build(dir, cache, ImageFormat::Ext4)
}

/// Builds (or reuses) the erofs image of `dir` in `cache`.
pub fn build_erofs(dir: &Path, cache: &Path) -> Result<RootfsImage, RootfsError> {
    build(dir, cache, ImageFormat::Erofs)
}

/// Builds (or reuses) the image of `dir` in `cache` as `<cache>/<key>.<format>`. The image is
/// made under a temporary name and renamed into place, so a crash never leaves a half-built
/// image under a key.
pub fn build(dir: &Path, cache: &Path, format: ImageFormat) -> Result<RootfsImage, RootfsError> {
    let (key, bytes) = content_key(dir, format)?;
    let cache_err = |source| RootfsError::Cache {
        path: cache.display().to_string(),
        source,
    };
    fs::create_dir_all(cache).map_err(cache_err)?;
    let path = cache.join(format!("{key}.{}", format.ext()));
    if path.is_file() {
        return Ok(RootfsImage {
            path,
            key,
            reused: true,
        });
    }
    let tmp = cache.join(format!(".{key}.{}.tmp", std::process::id()));
    let (tool, package, mut cmd) = match format {
        ImageFormat::Ext4 => {
            // Content plus a third for metadata, plus 16 MiB, in whole MiB.
            let mib = (bytes + bytes / 3).div_ceil(1 << 20) + 16;
            let mut c = Command::new("mke2fs");
            c.args([
                "-F",
                "-q",
                "-t",
                "ext4",
                "-O",
                "^has_journal",
                "-L",
                "strata-rootfs",
                "-d",
            ])
            .arg(dir)
            .arg(&tmp)
            .arg(format!("{mib}M"));
            ("mke2fs", "e2fsprogs", c)
        }
        ImageFormat::Erofs => {
            // -T0: every timestamp 0, so equal trees give equal images.
            let mut c = Command::new("mkfs.erofs");
            c.args(["--quiet", "-T0"]).arg(&tmp).arg(dir);
            ("mkfs.erofs", "erofs-utils", c)
        }
    };
    let mkfs_err = |stderr: String| RootfsError::Mkfs {
        tool,
        package,
        path: dir.display().to_string(),
        stderr,
    };
    let out = cmd.output().map_err(|e| mkfs_err(e.to_string()))?;
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(mkfs_err(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    fs::rename(&tmp, &path).map_err(cache_err)?;
    Ok(RootfsImage {
        path,
        key,
        reused: false,
    })
}
