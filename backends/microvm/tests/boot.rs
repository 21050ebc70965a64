//! The VMM's boot paths on the real /dev/kvm, with guests assembled by the test: the 64-bit Linux
//! boot protocol (bzImage), PVH (ELF with the Xen note), the serial console, the i8042 reset, and
//! how a guest that goes wrong is reported.

mod common;

use std::time::Duration;

use common::*;
use strata_microvm::{Error, Exit, Machine, MachineConfig};

const TIMEOUT: Duration = Duration::from_secs(60);

fn boot(cfg: MachineConfig) -> (Result<Exit, Error>, String) {
    let mut m = Machine::start(cfg).expect("machine starts");
    let r = m.wait(Some(TIMEOUT));
    (r, m.console().contents())
}

/// The 64-bit entry: prints a banner, checks the zero page's "HdrS", prints the command line
/// found through `cmd_line_ptr`, the e820 entry count, the initramfs address/size, then resets.
#[test]
fn bzimage_64bit_entry_prints_and_resets() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new("bz");
    let kernel = bzimage_from_asm(
        &dir,
        "hello64",
        r#"
    mov %rsi, %r15
    lea banner(%rip), %rsi
    call puts
    cmpl $0x53726448, 0x202(%r15)
    jne bad
    mov 0x228(%r15), %esi
    call puts
    lea nl(%rip), %rsi
    call puts
    movzbl 0x1e8(%r15), %eax
    call puthex
    lea sp(%rip), %rsi
    call puts
    mov 0x218(%r15), %eax
    call puthex
    lea sp(%rip), %rsi
    call puts
    mov 0x21c(%r15), %eax
    call puthex
    lea nl(%rip), %rsi
    call puts
    call reset
bad:
    lea badmsg(%rip), %rsi
    call puts
    call reset
banner: .asciz "strata 64-bit entry\n"
badmsg: .asciz "no HdrS in zero page\n"
nl: .asciz "\n"
sp: .asciz " "
"#,
    );
    let initrd = dir.path("initrd");
    write(&initrd, &[0x5a; 5000]);
    let mut cfg = MachineConfig::new(&kernel);
    cfg.cmdline = "console=ttyS0 strata.test=1".into();
    cfg.initrd = Some(initrd);
    cfg.mem_mib = 64;
    let (r, out) = boot(cfg);
    assert_eq!(r.unwrap(), Exit::Reset, "console: {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "strata 64-bit entry", "console: {out}");
    assert_eq!(lines[1], "console=ttyS0 strata.test=1");
    // e820: low RAM, EBDA reserved, RAM from 1 MiB.
    assert_eq!(lines[2].split(' ').next(), Some("00000003"));
    let fields: Vec<u64> = lines[2]
        .split(' ')
        .skip(1)
        .map(|h| u64::from_str_radix(h, 16).unwrap())
        .collect();
    let (addr, size) = (fields[0], fields[1]);
    assert_eq!(size, 5000);
    assert_eq!(addr % 4096, 0);
    assert!(addr + size <= 64 << 20 && addr >= 0x10_0000, "initrd at {addr:#x}");
}

/// The PVH entry: 32-bit protected mode, %ebx = hvm_start_info. Prints the magic, the command
/// line, the module count and the memory-map entry count.
#[test]
fn pvh_entry_prints_start_info_and_resets() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new("pvh");
    let kernel = pvh_elf(
        &dir,
        "hello-pvh",
        r#"
    mov $0x8ff0, %esp       # PVH gives no stack
    mov $0x3f8, %dx
    mov $banner, %esi
    call puts32
    cmpl $0x336ec578, (%ebx)
    jne bad
    mov 24(%ebx), %esi
    call puts32
    mov $'\n', %al
    out %al, %dx
    mov 12(%ebx), %eax
    add $'0', %al
    out %al, %dx
    mov 48(%ebx), %eax
    add $'0', %al
    out %al, %dx
    mov $'\n', %al
    out %al, %dx
    mov $0xfe, %al
    out %al, $0x64
1:  hlt
    jmp 1b
bad:
    mov $badmsg, %esi
    call puts32
    mov $0xfe, %al
    out %al, $0x64
puts32:
2:  lodsb
    test %al, %al
    jz 3f
    out %al, %dx
    jmp 2b
3:  ret
banner: .asciz "strata pvh entry\n"
badmsg: .asciz "bad start_info magic\n"
"#,
        true,
    );
    let initrd = dir.path("initrd");
    write(&initrd, b"initramfs");
    let mut cfg = MachineConfig::new(&kernel);
    cfg.cmdline = "console=ttyS0 pvh=yes".into();
    cfg.initrd = Some(initrd);
    cfg.mem_mib = 32;
    let (r, out) = boot(cfg);
    assert_eq!(r.unwrap(), Exit::Reset, "console: {out}");
    assert_eq!(out, "strata pvh entry\nconsole=ttyS0 pvh=yes\n13\n");
}
