//! The VMM's boot paths on the real /dev/kvm, with guests assembled by the test: the 64-bit Linux
//! boot protocol (bzImage), PVH (ELF with the Xen note), the serial console, the i8042 reset, and
//! how a guest that goes wrong is reported.

mod common;

use std::time::Duration;

use common::*;
use strata_vmm::{Error, Exit, Machine, MachineConfig};

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
    assert!(
        addr + size <= 64 << 20 && addr >= 0x10_0000,
        "initrd at {addr:#x}"
    );
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

/// A guest that faults with no usable IDT (ud2 → #UD → #GP → #DF → shutdown) is a triple-fault
/// error carrying what it printed first.
#[test]
fn triple_fault_is_an_error_with_the_console_tail() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new("tf");
    let kernel = bzimage_from_asm(
        &dir,
        "tf",
        r#"
    lea msg(%rip), %rsi
    call puts
    ud2
msg: .asciz "about to fault\n"
"#,
    );
    let (r, _) = boot(MachineConfig::new(&kernel));
    match r {
        Err(Error::TripleFault { console_tail, .. }) => assert_eq!(console_tail, "about to fault"),
        other => panic!("expected a triple fault, got {other:?}"),
    }
}

/// A guest that spins is stopped at the timeout; the error carries the console tail, and the
/// vCPU thread is really stopped (the machine drops promptly).
#[test]
fn hang_times_out_with_the_console_tail() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new("hang");
    let kernel = bzimage_from_asm(
        &dir,
        "hang",
        r#"
    lea msg(%rip), %rsi
    call puts
1:  jmp 1b
msg: .asciz "line one\nspinning now\n"
"#,
    );
    let mut m = Machine::start(MachineConfig::new(&kernel)).unwrap();
    let t0 = std::time::Instant::now();
    let r = m.wait(Some(Duration::from_millis(500)));
    match r {
        Err(Error::Timeout { console_tail, .. }) => {
            assert_eq!(console_tail, "line one\nspinning now")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    drop(m);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        t0.elapsed()
    );
}

/// "Kernel panic" on the console followed by the reboot that `panic=1` asks for is a panic, not
/// a clean exit.
#[test]
fn panic_then_reset_is_a_guest_panic() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new("panic");
    let kernel = bzimage_from_asm(
        &dir,
        "panic",
        r#"
    lea msg(%rip), %rsi
    call puts
    call reset
msg: .asciz "Kernel panic - not syncing: VFS: Unable to mount root fs\n"
"#,
    );
    let (r, _) = boot(MachineConfig::new(&kernel));
    match r {
        Err(Error::GuestPanic { console_tail }) => {
            assert!(console_tail.contains("Unable to mount root fs"))
        }
        other => panic!("expected a guest panic, got {other:?}"),
    }
}

/// SMP: four vCPUs are created; the boot vCPU sees the count and its APIC ID in CPUID leaf 1, the
/// hypervisor bit, and an MP table listing four processors.
#[test]
fn smp_cpuid_reports_vcpus_and_hypervisor() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new("smp");
    let kernel = bzimage_from_asm(
        &dir,
        "smp",
        r#"
    mov $1, %eax
    xor %ecx, %ecx
    cpuid
    mov %ecx, %r12d
    mov %ebx, %eax
    call puthex
    lea sp(%rip), %rsi
    call puts
    mov %r12d, %eax
    call puthex
    lea sp(%rip), %rsi
    call puts
    mov 0x9fc00, %eax            # MP floating pointer signature
    call puthex
    lea sp(%rip), %rsi
    call puts
    mov 0x9fc04, %ebx            # -> configuration table
    movzwl 34(%rbx), %eax        # entry count
    call puthex
    lea nl(%rip), %rsi
    call puts
    call reset
sp: .asciz " "
nl: .asciz "\n"
"#,
    );
    let mut cfg = MachineConfig::new(&kernel);
    cfg.vcpus = 4;
    let (r, out) = boot(cfg);
    assert_eq!(r.unwrap(), Exit::Reset, "console: {out}");
    let v: Vec<u32> = out
        .trim()
        .split(' ')
        .map(|h| u32::from_str_radix(h, 16).unwrap())
        .collect();
    let (ebx, ecx) = (v[0], v[1]);
    assert_eq!(
        v[2],
        u32::from_le_bytes(*b"_MP_"),
        "MP floating pointer at the EBDA"
    );
    assert_eq!(
        v[3],
        4 + 1 + 1 + 24 + 2,
        "4 CPUs, ISA bus, IOAPIC, 24 IRQs, 2 LINTs"
    );
    assert_eq!(ebx >> 24, 0, "boot vCPU has APIC ID 0");
    assert_eq!((ebx >> 16) & 0xff, 4, "four logical CPUs");
    assert_ne!(ecx & (1 << 31), 0, "hypervisor bit");
}

/// The CPUID table Strata hands KVM for this host offers nothing the host lacks: where leaf 1 has
/// no XSAVE (PVM), neither XSAVE nor AVX nor AVX2 nor leaf 0xd is offered.
///
/// (PVM itself rewrites leaf 1 ECX after KVM_SET_CPUID2, so a guest there reads XSAVE anyway;
/// that is the host's doing and is documented in docs/microvm.md.)
#[test]
fn normalised_cpuid_offers_nothing_the_host_lacks() {
    if !kvm_available() {
        return;
    }
    use strata_vmm::arch::x86_64::cpuid;
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let host = cpuid::supported(&kvm).unwrap();
    let xsave = cpuid::host_has_xsave(&host, kvm.check_extension(kvm_ioctls::Cap::Xsave));
    let leaf1_host = host.iter().find(|e| e.function == 1).unwrap();
    assert_eq!(
        xsave,
        leaf1_host.ecx & (1 << 26) != 0 && kvm.check_extension(kvm_ioctls::Cap::Xsave)
    );
    let out = cpuid::normalise(&host, 0, 2, xsave);
    let l1 = out.iter().find(|e| e.function == 1).unwrap();
    assert_eq!(
        l1.ecx & !leaf1_host.ecx & !(1 << 31),
        0,
        "no leaf-1 feature beyond the host's"
    );
    if !xsave {
        assert_eq!(l1.ecx & ((1 << 26) | (1 << 27) | (1 << 28)), 0);
        assert!(out.iter().all(|e| e.function != 0xd));
        if let Some(l7) = out.iter().find(|e| e.function == 7 && e.index == 0) {
            assert_eq!(l7.ebx & (1 << 5), 0, "no AVX2");
        }
    }
}

/// Bad input: a missing kernel, a file that is no kernel, an ELF without the PVH note, an
/// initramfs larger than memory, a missing disk. Each is a clear error, and a vsock socket bound
/// before the failure is removed.
#[test]
fn bad_input_gives_clear_errors_and_leaves_nothing_behind() {
    let dir = TempDir::new("bad");
    let msg = |cfg: MachineConfig| match Machine::start(cfg) {
        Ok(_) => panic!("machine started on bad input"),
        Err(e) => e.to_string(),
    };

    let e = msg(MachineConfig::new(dir.path("nope")));
    assert!(
        e.contains("opening the kernel") && e.contains("nope"),
        "{e}"
    );

    let junk = dir.path("junk");
    write(&junk, &[0u8; 4096]);
    let mut cfg = MachineConfig::new(&junk);
    let sock = dir.path("v.sock");
    cfg.vsock = Some(strata_vmm::devices::virtio::vsock::VsockConfig {
        guest_cid: 3,
        uds_path: sock.clone(),
    });
    let e = msg(cfg);
    assert!(e.contains("neither an ELF vmlinux nor a bzImage"), "{e}");
    assert!(!sock.exists(), "the vsock socket was left behind");

    let short = dir.path("short");
    write(&short, b"\x7fEL");
    let e = msg(MachineConfig::new(&short));
    assert!(e.contains("short"), "{e}");

    let nonote = pvh_elf(&dir, "nonote", "    hlt\n", false);
    let e = msg(MachineConfig::new(&nonote));
    assert!(e.contains("no PVH entry note"), "{e}");

    let kernel = pvh_elf(&dir, "ok", "    hlt\n", true);
    let big = dir.path("big-initrd");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(40 << 20)
        .unwrap();
    let mut cfg = MachineConfig::new(&kernel);
    cfg.mem_mib = 32;
    cfg.initrd = Some(big);
    let e = msg(cfg);
    assert!(e.contains("initramfs") && e.contains("more memory"), "{e}");

    let mut cfg = MachineConfig::new(&kernel);
    cfg.disks
        .push(strata_vmm::devices::virtio::block::DiskConfig::parse(
            dir.path("missing.img").to_str().unwrap(),
        ));
    let e = msg(cfg);
    assert!(e.contains("disk image") && e.contains("missing.img"), "{e}");

    let mut cfg = MachineConfig::new(&kernel);
    cfg.vcpus = 0;
    assert!(msg(cfg).contains("vCPU"));
}

/// Console input: bytes sent through `Machine::console_input` arrive in COM1's receive FIFO; the
/// guest polls the line status register, reads them and echoes them upper-cased.
#[test]
fn console_input_reaches_the_guest() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new("stdin");
    let kernel = bzimage_from_asm(
        &dir,
        "echo",
        r#"
    lea prompt(%rip), %rsi
    call puts
1:  mov $0x3fd, %dx
    in %dx, %al
    test $1, %al
    jz 1b
    mov $0x3f8, %dx
    in %dx, %al
    cmp $'\n', %al
    je 2f
    cmp $'a', %al
    jb 3f
    cmp $'z', %al
    ja 3f
    sub $0x20, %al
3:  out %al, %dx
    jmp 1b
2:  call reset
prompt: .asciz "> "
"#,
    );
    let mut m = Machine::start(MachineConfig::new(&kernel)).unwrap();
    let input = m.console_input();
    let console = m.console();
    let t0 = std::time::Instant::now();
    while !console.contents().starts_with("> ") {
        assert!(t0.elapsed() < TIMEOUT, "no prompt");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut rest: &[u8] = b"hello, strata\n";
    while !rest.is_empty() {
        let n = input.send(rest);
        rest = &rest[n..];
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(m.wait(Some(TIMEOUT)).unwrap(), Exit::Reset);
    assert_eq!(console.contents(), "> HELLO, STRATA");
}

/// `wait_until`: ready when the probe succeeds (the machine keeps running); a guest that never
/// gets ready is `NotReady` with the last probe error and the console; one that stops first is
/// `StoppedBeforeReady`, or its own failure.
#[test]
fn wait_until_ready_or_why_not() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new("ready");
    let spin_after = |name: &str, msg: &str| {
        bzimage_from_asm(
            &dir,
            name,
            &format!(
                r#"
    lea msg(%rip), %rsi
    call puts
1:  pause
    jmp 1b
msg: .asciz "{msg}"
"#
            ),
        )
    };
    let probe = |c: std::sync::Arc<strata_vmm::console::Console>| {
        move || {
            if c.contents().contains("agent ready") {
                Ok(())
            } else {
                Err("no \"agent ready\" yet")
            }
        }
    };

    let mut m = Machine::start(MachineConfig::new(spin_after(
        "ok",
        "booting\\nagent ready\\n",
    )))
    .unwrap();
    let c = m.console();
    m.wait_until(TIMEOUT, probe(c.clone())).unwrap();
    assert!(m.first_vcpu_entry().is_some());
    drop(m);

    let mut m = Machine::start(MachineConfig::new(spin_after(
        "never",
        "booting\\nstuck\\n",
    )))
    .unwrap();
    let c = m.console();
    match m.wait_until(Duration::from_millis(300), probe(c)) {
        Err(Error::NotReady {
            last_attempt,
            console_tail,
            ..
        }) => {
            assert!(last_attempt.contains("agent ready"), "{last_attempt}");
            assert_eq!(console_tail, "booting\nstuck");
        }
        other => panic!("expected NotReady, got {:?}", other.err()),
    }

    let resets = bzimage_from_asm(&dir, "bye", "    call reset\n");
    let mut m = Machine::start(MachineConfig::new(resets)).unwrap();
    let c = m.console();
    assert!(matches!(
        m.wait_until(TIMEOUT, probe(c)),
        Err(Error::StoppedBeforeReady { .. })
    ));

    let faults = bzimage_from_asm(&dir, "boom", "    ud2\n");
    let mut m = Machine::start(MachineConfig::new(faults)).unwrap();
    let c = m.console();
    assert!(matches!(
        m.wait_until(TIMEOUT, probe(c)),
        Err(Error::TripleFault { .. })
    ));
}
