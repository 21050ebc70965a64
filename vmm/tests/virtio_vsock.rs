//! virtio-vsock over virtio-mmio in the hybrid style, driven by an assembled guest through its RX
//! and TX virtqueues: a host process connects with `CONNECT 1234`, the guest accepts and echoes,
//! then the guest connects out to host port 5000, which reaches `<socket>_5000`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use common::*;
use strata_vmm::devices::virtio::vsock::VsockConfig;
use strata_vmm::{Exit, Machine, MachineConfig};

/// RX queue: descriptors 0x300000, avail 0x301000, used 0x302000, buffers 0x310000 + i*4 KiB.
/// TX queue: 0x320000 / 0x321000 / 0x322000, packet buffer 0x330000. Event queue: 0x340000...
/// Received packets are copied to 0x350000. r12 RX avail idx, r13 RX used idx seen, r14 TX idx,
/// r15 bytes received (fwd_cnt).
const VSOCK_GUEST: &str = r#"
    mov $0xd0000000, %ebx
    xor %r12d, %r12d
    xor %r13d, %r13d
    xor %r14d, %r14d
    xor %r15d, %r15d
    mov 8(%rbx), %eax
    call puthex
    call space
    mov 0x100(%rbx), %eax
    call puthex
    call newline
    movl $0, 0x70(%rbx)
    movl $3, 0x70(%rbx)
    movl $1, 0x24(%rbx)
    movl $1, 0x20(%rbx)
    movl $0, 0x24(%rbx)
    movl $0, 0x20(%rbx)
    movl $0xb, 0x70(%rbx)
    # queue 0 (rx)
    movl $0, 0x30(%rbx)
    movl $8, 0x38(%rbx)
    movl $0x300000, 0x80(%rbx)
    movl $0x301000, 0x90(%rbx)
    movl $0x302000, 0xa0(%rbx)
    movl $1, 0x44(%rbx)
    # queue 1 (tx)
    movl $1, 0x30(%rbx)
    movl $8, 0x38(%rbx)
    movl $0x320000, 0x80(%rbx)
    movl $0x321000, 0x90(%rbx)
    movl $0x322000, 0xa0(%rbx)
    movl $1, 0x44(%rbx)
    # queue 2 (event)
    movl $2, 0x30(%rbx)
    movl $8, 0x38(%rbx)
    movl $0x340000, 0x80(%rbx)
    movl $0x341000, 0x90(%rbx)
    movl $0x342000, 0xa0(%rbx)
    movl $1, 0x44(%rbx)
    # eight RX buffers
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $4, %eax
    mov %ecx, %edx
    shl $12, %edx
    add $0x310000, %edx
    mov %rdx, 0x300000(%eax)
    movl $0x1000, 0x300008(%eax)
    movw $2, 0x30000c(%eax)
    movw %cx, 0x301004(,%ecx,2)
    inc %ecx
    cmp $8, %ecx
    jne 1b
    mov $8, %r12d
    movw %r12w, 0x301002
    movl $0xf, 0x70(%rbx)
    movl $0, 0x50(%rbx)

    # 1. the host's REQUEST
    call recv
    movzwl 0x35001e, %eax
    call puthex
    call space
    mov 0x350014, %eax
    call puthex
    call newline
    mov 0x350010, %ebp           # the host's port
    # RESPONSE
    mov $2, %r8d
    mov $1234, %r9d
    mov %ebp, %r10d
    xor %r11d, %r11d
    call send
    # 2. "ping" in, "pong" out
    call recv
    movzwl 0x35001e, %eax
    call puthex
    call space
    mov 0x350018, %ecx
    add %ecx, %r15d
    movb $0, 0x35002c(%ecx)
    mov $0x35002c, %esi
    call puts
    call newline
    movl $0x676e6f70, 0x33002c
    mov $5, %r8d
    mov $1234, %r9d
    mov %ebp, %r10d
    mov $4, %r11d
    call send
    # 3. connect out to host port 5000
    mov $1, %r8d
    mov $2000, %r9d
    mov $5000, %r10d
    xor %r11d, %r11d
    call send
    call recv
    movzwl 0x35001e, %eax
    call puthex
    call newline
    lea hello(%rip), %rsi
    mov $0x33002c, %edi
    mov $10, %ecx
    rep movsb
    mov $5, %r8d
    mov $2000, %r9d
    mov $5000, %r10d
    mov $10, %r11d
    call send
    mov $4, %r8d
    mov $2000, %r9d
    mov $5000, %r10d
    xor %r11d, %r11d
    movl $3, 0x330020            # flags: no more send or receive (send copies it below)
    call send
    lea done(%rip), %rsi
    call puts
    call reset

# send: op r8d, src port r9d, dst port r10d, payload length r11d (payload at 0x33002c)
send:
    movq $3, 0x330000
    movq $2, 0x330008
    mov %r9d, 0x330010
    mov %r10d, 0x330014
    mov %r11d, 0x330018
    movw $1, 0x33001c
    movw %r8w, 0x33001e
    cmp $4, %r8d
    je 5f
    movl $0, 0x330020
5:  movl $0x10000, 0x330024
    mov %r15d, 0x330028
    mov %r14d, %eax
    and $7, %eax
    mov %eax, %edx
    shl $4, %edx
    movq $0x330000, 0x320000(%edx)
    mov %r11d, %ecx
    add $44, %ecx
    mov %ecx, 0x320008(%edx)
    movw $0, 0x32000c(%edx)
    movw %ax, 0x321004(,%eax,2)
    inc %r14d
    movw %r14w, 0x321002
    movl $1, 0x50(%rbx)
6:  cmpw %r14w, 0x322002
    jne 6b
    ret

# recv: waits for a used RX buffer, copies the packet to 0x350000, gives the buffer back
recv:
7:  cmpw %r13w, 0x302002
    je 7b
    mov %r13d, %eax
    and $7, %eax
    mov 0x302004(,%eax,8), %edx  # used id
    mov %edx, %esi
    shl $12, %esi
    add $0x310000, %esi
    mov $0x350000, %edi
    mov $0x1000, %ecx
    rep movsb
    inc %r13d
    mov %r12d, %eax
    and $7, %eax
    movw %dx, 0x301004(,%eax,2)
    inc %r12d
    movw %r12w, 0x301002
    movl $0, 0x50(%rbx)
    ret
space:
    lea sp(%rip), %rsi
    jmp puts
newline:
    lea nl(%rip), %rsi
    jmp puts
sp: .asciz " "
nl: .asciz "\n"
hello: .ascii "hello host"
done: .asciz "guest done\n"
"#;

#[test]
fn hybrid_vsock_both_directions() {
    if !kvm_available() {
        return;
    }
    let dir = TempDir::new("vsock");
    let kernel = bzimage_from_asm(&dir, "vsock", VSOCK_GUEST);
    let uds = dir.path("v.sock");
    let mut uds_5000 = uds.clone().into_os_string();
    uds_5000.push("_5000");
    let listener = UnixListener::bind(&uds_5000).unwrap();
    let outbound = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });

    let mut cfg = MachineConfig::new(&kernel);
    cfg.mem_mib = 64;
    cfg.vsock = Some(VsockConfig {
        guest_cid: 3,
        uds_path: uds.clone(),
    });
    let mut m = Machine::start(cfg).unwrap();

    let mut s = UnixStream::connect(&uds).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"CONNECT 1234\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let port: u32 = line
        .strip_prefix("OK ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "expected OK <port>, got {line:?}; console: {}",
                m.console().contents()
            )
        });
    assert!(port >= 1 << 30);
    s.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    r.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"pong");

    let exit = m.wait(Some(Duration::from_secs(60)));
    let out = m.console().contents();
    assert_eq!(exit.unwrap(), Exit::Reset, "console: {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "00000013 00000003",
        "vsock device, guest CID 3: {out}"
    );
    assert_eq!(lines[1], "00000001 000004d2", "REQUEST to port 1234");
    assert_eq!(lines[2], "00000005 ping", "RW with the host's bytes");
    assert_eq!(lines[3], "00000002", "RESPONSE from <socket>_5000");
    assert_eq!(lines[4], "guest done");
    assert_eq!(outbound.join().unwrap(), b"hello host");
    drop(m);
    assert!(
        !uds.exists(),
        "the vsock socket is removed with the machine"
    );
}
