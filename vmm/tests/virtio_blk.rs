//! virtio-blk over virtio-mmio, driven by an assembled guest through its virtqueue: the guest
//! probes the transport, negotiates features, sets up a queue, reads sector 0, writes sector 1,
//! sends an unknown request type, and prints what it got; the host checks the console and the
//! image.

mod common;

use std::time::Duration;

use common::*;
use strata_vmm::devices::virtio::block::DiskConfig;
use strata_vmm::{Exit, Machine, MachineConfig};

/// 64-bit guest. Memory: descriptors 0x200000, avail 0x201000, used 0x202000, request header
/// 0x203000, data 0x204000, status 0x205000.
const BLK_GUEST: &str = r#"
    mov $0xd0000000, %ebx
    mov (%rbx), %eax
    call puthex
    call space
    mov 4(%rbx), %eax
    call puthex
    call space
    mov 8(%rbx), %eax
    call puthex
    call newline
    movl $0, 0x70(%rbx)
    movl $1, 0x70(%rbx)
    movl $3, 0x70(%rbx)
    movl $1, 0x14(%rbx)
    mov 0x10(%rbx), %eax
    call puthex
    call space
    movl $0, 0x14(%rbx)
    mov 0x10(%rbx), %eax
    call puthex
    call newline
    movl $1, 0x24(%rbx)
    movl $1, 0x20(%rbx)
    movl $0, 0x24(%rbx)
    movl $0, 0x20(%rbx)
    movl $0xb, 0x70(%rbx)
    mov 0x70(%rbx), %eax
    call puthex
    call space
    mov 0x100(%rbx), %eax
    call puthex
    call space
    movl $0, 0x30(%rbx)
    mov 0x34(%rbx), %eax
    call puthex
    call newline
    movl $8, 0x38(%rbx)
    movl $0x200000, 0x80(%rbx)
    movl $0, 0x84(%rbx)
    movl $0x201000, 0x90(%rbx)
    movl $0, 0x94(%rbx)
    movl $0x202000, 0xa0(%rbx)
    movl $0, 0xa4(%rbx)
    movl $1, 0x44(%rbx)
    movl $0xf, 0x70(%rbx)
    mov 0x70(%rbx), %eax
    call puthex
    call newline

    # Descriptor chain: header (read), data (write for IN), status (write).
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
    movw $0, 0x20002e

    # Request 1: IN, sector 0.
    movl $0, 0x203000
    movl $0, 0x203004
    movq $0, 0x203008
    movb $0xff, 0x205000
    movw $0, 0x201004
    movw $1, 0x201002
    movl $0, 0x50(%rbx)
1:  cmpw $1, 0x202002
    jne 1b
    movzbl 0x205000, %eax
    call puthex
    call space
    mov 0x202008, %eax
    call puthex
    call space
    movb $0, 0x204010
    mov $0x204000, %esi
    call puts
    call newline

    # Request 2: OUT, sector 1, "written by guest".
    lea wmsg(%rip), %rsi
    mov $0x204000, %edi
    mov $17, %ecx
    rep movsb
    movl $1, 0x203000
    movq $1, 0x203008
    movw $1, 0x20001c
    movb $0xff, 0x205000
    movw $0, 0x201006
    movw $2, 0x201002
    movl $0, 0x50(%rbx)
2:  cmpw $2, 0x202002
    jne 2b
    movzbl 0x205000, %eax
    call puthex
    call space

    # Request 3: an unknown type.
    movl $99, 0x203000
    movb $0xff, 0x205000
    movw $0, 0x201008
    movw $3, 0x201002
    movl $0, 0x50(%rbx)
3:  cmpw $3, 0x202002
    jne 3b
    movzbl 0x205000, %eax
    call puthex
    call space

    # Request 4: IN past the end of the disk.
    movl $0, 0x203000
    movq $0x100000, 0x203008
    movw $3, 0x20001c
    movb $0xff, 0x205000
    movw $0, 0x20100a
    movw $4, 0x201002
    movl $0, 0x50(%rbx)
4:  cmpw $4, 0x202002
    jne 4b
    movzbl 0x205000, %eax
    call puthex
    call newline
    call reset
space:
    lea sp(%rip), %rsi
    jmp puts
newline:
    lea nl(%rip), %rsi
    jmp puts
sp: .asciz " "
nl: .asciz "\n"
wmsg: .asciz "written by guest"
"#;

fn run_blk(read_only: bool) -> (String, Vec<u8>) {
    let dir = TempDir::new("blk");
    let kernel = bzimage_from_asm(&dir, "blk", BLK_GUEST);
    let img = dir.path("disk.img");
    let mut content = vec![0u8; 8 * 512];
    content[..16].copy_from_slice(b"STRATA-DISK-0001");
    write(&img, &content);
    let mut cfg = MachineConfig::new(&kernel);
    cfg.mem_mib = 64;
    cfg.disks.push(DiskConfig {
        path: img.clone(),
        read_only,
    });
    let mut m = Machine::start(cfg).unwrap();
    let r = m.wait(Some(Duration::from_secs(60)));
    let out = m.console().contents();
    assert_eq!(r.unwrap(), Exit::Reset, "console: {out}");
    (out, std::fs::read(&img).unwrap())
}

#[test]
fn guest_reads_and_writes_a_rw_disk() {
    if !kvm_available() {
        return;
    }
    let (out, img) = run_blk(false);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "74726976 00000002 00000002",
        "magic, version 2, block: {out}"
    );
    assert_eq!(lines[1], "00000001 00000200", "VERSION_1; FLUSH, not RO");
    assert_eq!(
        lines[2], "0000000b 00000008 00000100",
        "FEATURES_OK; 8 sectors; queue max 256"
    );
    assert_eq!(lines[3], "0000000f", "DRIVER_OK accepted");
    assert_eq!(
        lines[4], "00000000 00000201 STRATA-DISK-0001",
        "read OK, 513 bytes used"
    );
    assert_eq!(
        lines[5], "00000000 00000002 00000001",
        "write OK; unknown type UNSUPP; out of range IOERR"
    );
    assert_eq!(&img[512..528], b"written by guest");
}

#[test]
fn guest_cannot_write_a_ro_disk() {
    if !kvm_available() {
        return;
    }
    let (out, img) = run_blk(true);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[1], "00000001 00000220",
        "VERSION_1; FLUSH and RO: {out}"
    );
    assert_eq!(lines[4], "00000000 00000201 STRATA-DISK-0001");
    assert_eq!(
        lines[5], "00000001 00000002 00000001",
        "write refused with IOERR"
    );
    assert!(img[512..1024].iter().all(|&b| b == 0), "ro image changed");
}
