//! Rootfs images: an ext4 image built from a directory, cached by content (a second build of the
//! same tree reuses it; a changed file gives a new image), readable with debugfs; and the image
//! reaches a guest through virtio-blk (the guest reads the ext4 superblock's magic).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use strata_vmm::devices::virtio::block::DiskConfig;
use strata_vmm::rootfs::{build_erofs, build_ext4, RootfsError, RootfsImage};
use strata_vmm::{Exit, Machine, MachineConfig};

fn tree(dir: &TempDir) -> std::path::PathBuf {
    let root = dir.path("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), "strata\n").unwrap();
    std::fs::write(root.join("bin/tool"), vec![0x7f; 100_000]).unwrap();
    std::os::unix::fs::symlink("tool", root.join("bin/sh")).unwrap();
    root
}

fn file_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

type Build = fn(&Path, &Path) -> Result<RootfsImage, RootfsError>;

/// `root` built twice into `cache`: a new image, then a cache hit that leaves it untouched. The
/// image.
fn built_then_reused(build: Build, root: &Path, cache: &Path) -> RootfsImage {
    let modified = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let a = build(root, cache).unwrap();
    assert!(!a.reused);
    let before = modified(&a.path);
    let b = build(root, cache).unwrap();
    assert!(b.reused);
    assert_eq!(a.path, b.path);
    assert_eq!(modified(&b.path), before, "not rebuilt");
    a
}

#[test]
fn ext4_image_is_cached_by_content() {
    let dir = TempDir::new("rootfs");
    let root = tree(&dir);
    let cache = dir.path("cache");
    let a = built_then_reused(build_ext4, &root, &cache);

    let out = Command::new("debugfs")
        .args(["-R", "cat /etc/hostname"])
        .arg(&a.path)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "strata\n");
    let out = Command::new("debugfs")
        .args(["-R", "stat /bin/sh"])
        .arg(&a.path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Fast link dest: \"tool\""));

    // Touching a file's time changes nothing; changing its content changes the image.
    let f = root.join("etc/hostname");
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    assert_eq!(build_ext4(&root, &cache).unwrap().path, a.path);
    std::fs::write(&f, "other\n").unwrap();
    let c = build_ext4(&root, &cache).unwrap();
    assert!(!c.reused);
    assert_ne!(c.path, a.path);
    // No temporary files are left in the cache.
    let names = file_names(&cache);
    assert!(names.iter().all(|n| n.ends_with(".ext4")), "{names:?}");
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

#[test]
fn erofs_image_is_cached_by_content() {
    if !which("mkfs.erofs") {
        strata_backend::testing::skip(
            "erofs_image_is_cached_by_content",
            "mkfs.erofs is missing (scripts/install-deps installs erofs-utils)",
        );
        return;
    }
    let dir = TempDir::new("rootfs-erofs");
    let root = tree(&dir);
    let cache = dir.path("cache");
    // The second start of the same rootfs: a cache hit, nothing rebuilt.
    let a = built_then_reused(build_erofs, &root, &cache);
    assert!(a.path.to_string_lossy().ends_with(".erofs"));
    // The same tree as ext4 is another image.
    let e = build_ext4(&root, &cache).unwrap();
    assert_ne!(e.key, a.key);
    // An erofs superblock (magic 0xe0f5e1e2 at 1024), whole sectors, and the tree inside.
    let img = std::fs::read(&a.path).unwrap();
    assert_eq!(img[1024..1028], 0xe0f5_e1e2u32.to_le_bytes());
    assert_eq!(img.len() % 512, 0);
    let out = dir.path("out");
    let st = Command::new("fsck.erofs")
        .arg(format!("--extract={}", out.display()))
        .arg(&a.path)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    assert_eq!(
        std::fs::read_to_string(out.join("etc/hostname")).unwrap(),
        "strata\n"
    );
    assert_eq!(
        std::fs::read_link(out.join("bin/sh")).unwrap(),
        Path::new("tool")
    );
    assert_eq!(std::fs::read(out.join("bin/tool")).unwrap().len(), 100_000);
    // A changed file is a new image; no temporaries are left.
    std::fs::write(root.join("etc/hostname"), "other\n").unwrap();
    let c = build_erofs(&root, &cache).unwrap();
    assert!(!c.reused);
    assert_ne!(c.path, a.path);
    let names = file_names(&cache);
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn missing_rootfs_is_a_clear_error() {
    let dir = TempDir::new("rootfs-missing");
    let e = build_ext4(&dir.path("nope"), &dir.path("cache"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("reading the rootfs") && e.contains("nope"),
        "{e}"
    );
}

/// The image on a read-only virtio-blk disk: the guest reads sector 2 (bytes 1024..1536, the
/// ext4 superblock) and prints the magic at offset 56.
#[test]
fn guest_reads_the_ext4_superblock() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new("rootfs-guest");
    let root = tree(&dir);
    let img = build_ext4(&root, &dir.path("cache")).unwrap();
    let kernel = bzimage_from_asm(
        &dir,
        "sb",
        r#"
    mov $0xd0000000, %ebx
    movl $0, 0x70(%rbx)
    movl $3, 0x70(%rbx)
    movl $1, 0x24(%rbx)
    movl $1, 0x20(%rbx)
    movl $0, 0x24(%rbx)
    movl $0, 0x20(%rbx)
    movl $0xb, 0x70(%rbx)
    movl $0, 0x30(%rbx)
    movl $8, 0x38(%rbx)
    movl $0x200000, 0x80(%rbx)
    movl $0x201000, 0x90(%rbx)
    movl $0x202000, 0xa0(%rbx)
    movl $1, 0x44(%rbx)
    movl $0xf, 0x70(%rbx)
    movq $0x203000, 0x200000
    movl $16, 0x200008
    movw $1, 0x20000c
    movw $1, 0x20000e
    movq $0x204000, 0x200010
    movl $512, 0x200018
    movw $3, 0x20001c
    movw $2, 0x20001e
    movq $0x205000, 0x200020
    movl $1, 0x200028
    movw $2, 0x20002c
    movl $0, 0x203000
    movq $2, 0x203008
    movw $0, 0x201004
    movw $1, 0x201002
    movl $0, 0x50(%rbx)
1:  cmpw $1, 0x202002
    jne 1b
    movzwl 0x204038, %eax
    call puthex
    call reset
"#,
    );
    let mut cfg = MachineConfig::new(&kernel);
    cfg.mem_mib = 64;
    cfg.disks.push(DiskConfig {
        path: img.path.clone(),
        read_only: true,
    });
    let mut m = Machine::start(cfg).unwrap();
    let r = m.wait(Some(Duration::from_secs(60)));
    let out = m.console().contents();
    assert_eq!(r.unwrap(), Exit::Reset, "console: {out}");
    assert_eq!(out, "0000ef53");
}
