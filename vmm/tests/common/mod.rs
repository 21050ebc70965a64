//! Test support: small guests assembled with binutils (`as`, `ld`, `objcopy`, always present where
//! Rust links), packaged as a bzImage or a PVH ELF, and the /dev/kvm gate.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// True if /dev/kvm can be used. Without it the test is skipped, saying why; with CI=true it fails.
pub fn kvm_available() -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            strata_backend::testing::skip(
                "microvm KVM tests",
                &format!("/dev/kvm cannot be opened ({e}); these tests need KVM"),
            );
            false
        }
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "strata-microvm-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Shared guest routines (64-bit): `puts` (string at %rsi), `puthex` (%rax as 8 hex digits),
/// `reset` (i8042 0xfe).
pub const LIB64: &str = r#"
    .code64
puts:
    push %rdx
    mov $0x3f8, %dx
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  pop %rdx
    ret
puthex:
    push %rcx
    push %rdx
    push %rbx
    mov %rax, %rbx
    mov $8, %ecx
    mov $0x3f8, %dx
3:  rol $4, %ebx
    mov %ebx, %eax
    and $0xf, %eax
    cmp $10, %eax
    jb 4f
    add $('a' - 10 - '0'), %eax
4:  add $'0', %eax
    out %al, %dx
    dec %ecx
    jnz 3b
    pop %rbx
    pop %rdx
    pop %rcx
    ret
reset:
    mov $0xfe, %al
    out %al, $0x64
5:  hlt
    jmp 5b
"#;

/// Assembles `src` into a flat binary whose first byte is at `org`.
pub fn assemble_flat(dir: &TempDir, name: &str, src: &str) -> Vec<u8> {
    let s = dir.path(&format!("{name}.S"));
    let o = dir.path(&format!("{name}.o"));
    let b = dir.path(&format!("{name}.bin"));
    std::fs::write(&s, src).unwrap();
    run(Command::new("as").arg("--64").arg("-o").arg(&o).arg(&s));
    run(Command::new("objcopy")
        .args(["-O", "binary", "-j", ".text"])
        .arg(&o)
        .arg(&b));
    std::fs::read(&b).unwrap()
}

/// Wraps `code64` (64-bit code, entered at its first byte) in a bzImage: one setup sector with
/// the boot-protocol 2.15 header, then the protected-mode kernel whose 64-bit entry is at +0x200.
pub fn bzimage(dir: &TempDir, name: &str, code64: &[u8]) -> PathBuf {
    let mut img = vec![0u8; 2 * 512];
    img[0x1f1] = 1; // setup_sects
    img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    img[0x211] = 0x01; // loadflags: LOADED_HIGH
    img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
    img[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    img[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
    img[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    img[0x238..0x23c].copy_from_slice(&4095u32.to_le_bytes()); // cmdline_size
                                                               // Protected-mode kernel: 32-bit entry (unused: ud2), 64-bit entry at +0x200.
    let mut pm = vec![0x0f, 0x0b];
    pm.resize(0x200, 0x90);
    pm.extend_from_slice(code64);
    img.extend_from_slice(&pm);
    let p = dir.path(&format!("{name}.bzImage"));
    std::fs::write(&p, img).unwrap();
    p
}

/// A bzImage from 64-bit assembly (LIB64 appended).
pub fn bzimage_from_asm(dir: &TempDir, name: &str, body: &str) -> PathBuf {
    let src = format!("    .text\n    .code64\n{body}\n{LIB64}\n");
    let code = assemble_flat(dir, name, &src);
    bzimage(dir, name, &code)
}

/// An ELF with a PVH note (XEN_ELFNOTE_PHYS32_ENTRY) whose entry `pvh_start` is 32-bit code at
/// 1 MiB. With `note = false` the note is left out.
pub fn pvh_elf(dir: &TempDir, name: &str, body32: &str, note: bool) -> PathBuf {
    let note_src = if note {
        r#"
    .section .note.Xen, "a"
    .align 4
    .long 4, 4, 18
    .asciz "Xen"
    .align 4
    .long pvh_start
"#
    } else {
        ""
    };
    let src =
        format!("{note_src}\n    .text\n    .code32\n    .globl pvh_start\npvh_start:\n{body32}\n");
    let s = dir.path(&format!("{name}.S"));
    let o = dir.path(&format!("{name}.o"));
    let ld = dir.path(&format!("{name}.ld"));
    let elf = dir.path(&format!("{name}.elf"));
    std::fs::write(&s, src).unwrap();
    std::fs::write(
        &ld,
        r#"ENTRY(pvh_start)
PHDRS { text PT_LOAD FLAGS(7); note PT_NOTE FLAGS(4); }
SECTIONS {
  . = 0x100000;
  .text : { *(.text) } :text
  .note : { *(.note.Xen) } :text :note
}
"#,
    )
    .unwrap();
    run(Command::new("as").arg("--64").arg("-o").arg(&o).arg(&s));
    run(Command::new("ld")
        .args(["-m", "elf_x86_64", "-z", "noexecstack", "-T"])
        .arg(&ld)
        .arg("-o")
        .arg(&elf)
        .arg(&o));
    elf
}

/// Writes `bytes` at `path`.
pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}
