//! virtio-fs through Strata's vhost-user front end, served by a real `virtiofsd` (rust-vmm,
//! the one `scripts/install-deps` builds and the QEMU driver uses), driven through the MMIO
//! transport as Linux's virtio_mmio and virtio_fs drivers do: rings and FUSE requests written
//! into shared guest memory by the test, which reads the back end's replies from the same
//! memory. No KVM needed; the worker runs under its seccomp filter (a call outside it would kill
//! the test process).
//!
//! - A guest's view of the host directory: FUSE_INIT, LOOKUP, OPEN, READ of a host file;
//!   CREATE and WRITE of a new file that the host then reads. Each reply raises the device's
//!   interrupt (status bit "used ring", irqfd written).
//! - A reset stops the rings; dropping the device closes the connection, and virtiofsd ends.
//! - virtiofsd killed under a running device: the machine is told to stop, with the reason.
//! - No back end listening: a clear error naming the socket.
//! - With KVM: an assembled guest (shared memfd memory registered with KVM) finds the device in
//!   its MMIO slot, reads the tag, sets up both queues and sends FUSE_INIT, LOOKUP, OPEN and READ
//!   of a host file, polling the used ring; it prints what virtiofsd answered.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use strata_microvm::tools::{self, Tool};
use strata_vmm::devices::bus::BusDevice;
use strata_vmm::devices::virtio::fs::{Fs, FsConfig, FsWorker, TYPE_FS};
use strata_vmm::devices::virtio::mmio::MmioTransport;
use strata_vmm::devices::virtio::Worker;
use strata_vmm::machine::VcpuEvent;
use strata_vmm::vstate::memory;
use strata_vmm::{Exit, Machine, MachineConfig};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const QSIZE: u16 = 16;
/// The request queue's rings: descriptors, avail (+0x1000), used (+0x2000). The hiprio queue's
/// at 0x20000.
const REQ_RING: u64 = 0x10000;
const HIPRIO_RING: u64 = 0x20000;
/// Where each request is written, and where its reply lands.
const REQ_BUF: u64 = 0x40000;
const REPLY_BUF: u64 = 0x50000;
const REPLY_LEN: u32 = 0x2000;
const VIRTQ_DESC_F_NEXT: u16 = 1;
const VIRTQ_DESC_F_WRITE: u16 = 2;

const FUSE_LOOKUP: u32 = 1;
const FUSE_OPEN: u32 = 14;
const FUSE_READ: u32 = 15;
const FUSE_WRITE: u32 = 16;
const FUSE_INIT: u32 = 26;
const FUSE_CREATE: u32 = 35;
const ROOT: u64 = 1;

/// The virtiofsd binary the microvm tier would use, or None (skipped, saying why; a failure
/// under CI).
fn virtiofsd() -> Option<PathBuf> {
    match tools::find(Tool::Virtiofsd, None) {
        Ok(p) => Some(p),
        Err(e) => {
            strata_backend::testing::skip("virtio-fs tests", &e.to_string());
            None
        }
    }
}

/// virtiofsd serving `shared` on `socket`, as the microvm tier starts it.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(bin: &Path, socket: &Path, shared: &Path) -> Daemon {
        let child = Command::new(bin)
            .arg("--socket-path")
            .arg(socket)
            .arg("--shared-dir")
            .arg(shared)
            .args(["--cache", "never", "--sandbox", "namespace"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting virtiofsd");
        let t0 = Instant::now();
        while !socket.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "virtiofsd made no socket"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Daemon { child }
    }

    /// Whether it ended within `within`.
    fn ends_within(&mut self, within: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn w32(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

fn r32(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

/// Sets the device up as Linux's virtio_mmio driver does: reset, VERSION_1 only, both queues
/// of [`QSIZE`] at [`HIPRIO_RING`] and [`REQ_RING`], DRIVER_OK.
fn set_up(t: &mut MmioTransport) {
    w32(t, 0x70, 0);
    w32(t, 0x70, 3);
    w32(t, 0x14, 1);
    assert_ne!(r32(t, 0x10) & 1, 0, "VIRTIO_F_VERSION_1 offered");
    w32(t, 0x24, 1);
    w32(t, 0x20, 1);
    w32(t, 0x24, 0);
    w32(t, 0x20, 0);
    w32(t, 0x70, 0xb);
    assert_eq!(r32(t, 0x70), 0xb, "FEATURES_OK accepted");
    for (i, base) in [HIPRIO_RING, REQ_RING].into_iter().enumerate() {
        w32(t, 0x30, i as u32);
        w32(t, 0x38, u32::from(QSIZE));
        w32(t, 0x80, base as u32);
        w32(t, 0x90, base as u32 + 0x1000);
        w32(t, 0xa0, base as u32 + 0x2000);
        w32(t, 0x44, 1);
    }
    w32(t, 0x70, 0xf);
    assert_eq!(r32(t, 0x70), 0xf, "DRIVER_OK, no NEEDS_RESET");
}

/// A driver of one virtio-fs device: the transport, the memory, the request queue's state.
struct Driver {
    mem: GuestMemoryMmap,
    t: MmioTransport,
    irq: EventFd,
    worker: FsWorker,
    events: Receiver<VcpuEvent>,
    avail_idx: u16,
    unique: u64,
}

impl Driver {
    /// The device on `socket`, its worker started under its filter, set up as Linux does.
    fn new(socket: &Path) -> Driver {
        let (dev, mut worker) = Fs::new(&FsConfig {
            tag: "strata".into(),
            socket: socket.into(),
        })
        .expect("connecting to virtiofsd");
        let (tx, events) = std::sync::mpsc::channel();
        worker.start(tx, true).unwrap();
        let mem = memory::create_shared(1 << 20).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut t = MmioTransport::new(Box::new(dev), mem.clone(), irq.try_clone().unwrap());
        assert_eq!(r32(&mut t, 0x08), TYPE_FS);
        // The tag, NUL-padded to 36 bytes, then one request queue.
        let mut cfg = [0u8; 40];
        t.read(0x100, &mut cfg);
        assert_eq!(&cfg[..7], b"strata\0");
        assert_eq!(u32::from_le_bytes(cfg[36..40].try_into().unwrap()), 1);
        set_up(&mut t);
        Driver {
            mem,
            t,
            irq,
            worker,
            events,
            avail_idx: 0,
            unique: 0,
        }
    }

    /// Sends one FUSE request (`body` after the 40-byte header) on the request queue and
    /// returns (error, reply body) once the back end has used it.
    fn call(&mut self, opcode: u32, nodeid: u64, body: &[u8]) -> (i32, Vec<u8>) {
        self.unique += 2;
        let len = 40 + body.len() as u32;
        let mut req = Vec::new();
        req.extend_from_slice(&len.to_le_bytes());
        req.extend_from_slice(&opcode.to_le_bytes());
        req.extend_from_slice(&self.unique.to_le_bytes());
        req.extend_from_slice(&nodeid.to_le_bytes());
        req.extend_from_slice(&0u32.to_le_bytes()); // uid
        req.extend_from_slice(&0u32.to_le_bytes()); // gid
        req.extend_from_slice(&1u32.to_le_bytes()); // pid
        req.extend_from_slice(&[0u8; 4]); // total_extlen, padding
        req.extend_from_slice(body);
        self.mem.write_slice(&req, GuestAddress(REQ_BUF)).unwrap();
        self.mem
            .write_slice(&vec![0u8; REPLY_LEN as usize], GuestAddress(REPLY_BUF))
            .unwrap();
        // Two descriptors: the request (device-readable), the reply buffer (device-writable).
        let slot = u64::from(self.avail_idx % QSIZE);
        let (d0, d1) = (
            (slot * 2) % u64::from(QSIZE),
            (slot * 2 + 1) % u64::from(QSIZE),
        );
        for (d, addr, len, flags, next) in [
            (d0, REQ_BUF, len, VIRTQ_DESC_F_NEXT, d1 as u16),
            (d1, REPLY_BUF, REPLY_LEN, VIRTQ_DESC_F_WRITE, 0),
        ] {
            let at = REQ_RING + d * 16;
            self.mem.write_obj(addr, GuestAddress(at)).unwrap();
            self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
        }
        self.mem
            .write_obj(d0 as u16, GuestAddress(REQ_RING + 0x1004 + slot * 2))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(REQ_RING + 0x1002))
            .unwrap();
        let _ = self.irq.read();
        w32(&mut self.t, 0x64, 1);
        w32(&mut self.t, 0x50, 1);
        let t0 = Instant::now();
        loop {
            let used: u16 = self.mem.read_obj(GuestAddress(REQ_RING + 0x2002)).unwrap();
            if used == self.avail_idx {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "virtiofsd did not answer opcode {opcode}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // The interrupt: raised through the transport, with "used ring" in its status.
        let t0 = Instant::now();
        while self.irq.read().is_err() {
            assert!(t0.elapsed() < Duration::from_secs(5), "no interrupt");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_ne!(
            r32(&mut self.t, 0x60) & 1,
            0,
            "interrupt status shows the used ring"
        );
        let mut hdr = [0u8; 16];
        self.mem
            .read_slice(&mut hdr, GuestAddress(REPLY_BUF))
            .unwrap();
        let out_len = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
        let error = i32::from_le_bytes(hdr[4..8].try_into().unwrap());
        let unique = u64::from_le_bytes(hdr[8..16].try_into().unwrap());
        assert_eq!(unique, self.unique, "the reply answers the request");
        assert!(
            (16..=REPLY_LEN).contains(&out_len),
            "reply length {out_len}"
        );
        let mut body = vec![0u8; out_len as usize - 16];
        self.mem
            .read_slice(&mut body, GuestAddress(REPLY_BUF + 16))
            .unwrap();
        (error, body)
    }

    fn init(&mut self) {
        let mut b = Vec::new();
        for v in [7u32, 31, 0x20000, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let (err, out) = self.call(FUSE_INIT, 0, &b);
        assert_eq!(err, 0, "FUSE_INIT");
        assert_eq!(
            u32::from_le_bytes(out[0..4].try_into().unwrap()),
            7,
            "major"
        );
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.worker.stop();
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn name(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// READ of `size` bytes at 0 of open file `fh`.
fn read_body(fh: u64, size: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&fh.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&[0u8; 20]); // read_flags, lock_owner, flags, padding
    b
}

fn fixture(tag: &str) -> Option<(common::TempDir, PathBuf, Daemon)> {
    let bin = virtiofsd()?;
    let dir = common::TempDir::new(tag);
    let shared = dir.0.join("shared");
    std::fs::create_dir(&shared).unwrap();
    let socket = dir.0.join("virtiofs.sock");
    let daemon = Daemon::start(&bin, &socket, &shared);
    Some((dir, shared, daemon))
}

#[test]
fn a_driver_reads_and_writes_the_host_directory_through_virtiofsd() {
    let Some((dir, shared, mut daemon)) = fixture("rw") else {
        return;
    };
    let content = b"served by virtiofsd through Strata's vhost-user front end\n";
    std::fs::write(shared.join("hello.txt"), content).unwrap();
    let mut d = Driver::new(&dir.0.join("virtiofs.sock"));
    d.init();

    let (err, entry) = d.call(FUSE_LOOKUP, ROOT, &name("hello.txt"));
    assert_eq!(err, 0, "LOOKUP hello.txt");
    let nodeid = u64_at(&entry, 0);
    assert_eq!(u64_at(&entry, 48), content.len() as u64, "attr.size");
    let (err, _) = d.call(FUSE_LOOKUP, ROOT, &name("missing"));
    assert_eq!(err, -libc::ENOENT, "LOOKUP of a missing name");

    let mut open_in = Vec::new();
    open_in.extend_from_slice(&(libc::O_RDONLY as u32).to_le_bytes());
    open_in.extend_from_slice(&0u32.to_le_bytes());
    let (err, open_out) = d.call(FUSE_OPEN, nodeid, &open_in);
    assert_eq!(err, 0, "OPEN");
    let fh = u64_at(&open_out, 0);
    let (err, data) = d.call(FUSE_READ, nodeid, &read_body(fh, 4096));
    assert_eq!(err, 0, "READ");
    assert_eq!(data, content, "the guest reads the host's file");

    // CREATE + WRITE: the host sees what the guest wrote.
    let mut create = Vec::new();
    for v in [(libc::O_WRONLY | libc::O_CREAT) as u32, 0o644, 0o022, 0] {
        create.extend_from_slice(&v.to_le_bytes());
    }
    create.extend_from_slice(&name("from-guest.txt"));
    let (err, out) = d.call(FUSE_CREATE, ROOT, &create);
    assert_eq!(err, 0, "CREATE");
    let (new_node, new_fh) = (u64_at(&out, 0), u64_at(&out, 128));
    let payload = b"written in the guest\n";
    let mut write = Vec::new();
    write.extend_from_slice(&new_fh.to_le_bytes());
    write.extend_from_slice(&0u64.to_le_bytes());
    write.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    write.extend_from_slice(&[0u8; 20]);
    write.extend_from_slice(payload);
    let (err, out) = d.call(FUSE_WRITE, new_node, &write);
    assert_eq!(err, 0, "WRITE");
    assert_eq!(
        u32::from_le_bytes(out[0..4].try_into().unwrap()),
        payload.len() as u32
    );
    assert_eq!(
        std::fs::read(shared.join("from-guest.txt")).unwrap(),
        payload
    );

    // A driver reset stops the rings; the device is set up again and served again.
    w32(&mut d.t, 0x70, 0);
    assert_eq!(r32(&mut d.t, 0x70), 0);
    drop(d);
    assert!(
        daemon.ends_within(Duration::from_secs(10)),
        "virtiofsd still runs after the front end closed its connection"
    );
    drop(dir);
}

#[test]
fn a_reset_device_is_served_again_after_a_new_set_up() {
    let Some((dir, shared, _daemon)) = fixture("reset") else {
        return;
    };
    std::fs::write(shared.join("f"), b"x").unwrap();
    let mut d = Driver::new(&dir.0.join("virtiofs.sock"));
    d.init();
    // The driver resets and sets the device up again, as a rebooting guest does: the same
    // ring addresses, zeroed, counters from zero.
    w32(&mut d.t, 0x70, 0);
    for a in [REQ_RING, HIPRIO_RING] {
        d.mem.write_slice(&[0u8; 0x3000], GuestAddress(a)).unwrap();
    }
    set_up(&mut d.t);
    d.avail_idx = 0;
    let (err, _) = d.call(FUSE_LOOKUP, ROOT, &name("f"));
    assert_eq!(err, 0, "LOOKUP after the reset");
}

#[test]
fn a_back_end_that_dies_stops_the_machine_with_the_reason() {
    let Some((dir, _shared, mut daemon)) = fixture("dies") else {
        return;
    };
    let mut d = Driver::new(&dir.0.join("virtiofs.sock"));
    d.init();
    daemon.child.kill().unwrap();
    let _ = daemon.child.wait();
    match d.events.recv_timeout(Duration::from_secs(10)) {
        Ok(VcpuEvent::Failed { reason, .. }) => {
            assert!(reason.contains("closed its connection"), "{reason}");
            assert!(reason.contains("virtiofs.sock"), "{reason}");
        }
        other => panic!("expected the machine to be told to stop, got {other:?}"),
    }
}

#[test]
fn no_back_end_is_a_clear_error() {
    let dir = common::TempDir::new("nobackend");
    let socket = dir.0.join("virtiofs.sock");
    // A socket file that nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let e = Fs::new(&FsConfig {
        tag: "strata".into(),
        socket: socket.clone(),
    })
    .err()
    .expect("no back end")
    .to_string();
    assert!(e.contains(&socket.display().to_string()), "{e}");
}

/// 64-bit guest. Request queue: descriptors 0x320000, avail 0x321000, used 0x322000; hiprio
/// queue at 0x300000.. (set up, unused). Request k is copied to 0x330000 + k * 0x100, its reply
/// lands at 0x340000 + k * 0x10000. r12 counts requests.
const FS_GUEST: &str = r#"
    mov $0xd0000000, %ebx
    xor %r12d, %r12d
    mov (%rbx), %eax
    call puthex
    call space
    mov 8(%rbx), %eax
    call puthex
    call space
    mov 0x100(%rbx), %eax
    call puthex
    call space
    mov 0x124(%rbx), %eax
    call puthex
    call newline
    movl $0, 0x70(%rbx)
    movl $3, 0x70(%rbx)
    movl $1, 0x24(%rbx)
    movl $1, 0x20(%rbx)
    movl $0, 0x24(%rbx)
    movl $0, 0x20(%rbx)
    movl $0xb, 0x70(%rbx)
    movl $0, 0x30(%rbx)
    movl $8, 0x38(%rbx)
    movl $0x300000, 0x80(%rbx)
    movl $0x301000, 0x90(%rbx)
    movl $0x302000, 0xa0(%rbx)
    movl $1, 0x44(%rbx)
    movl $1, 0x30(%rbx)
    movl $8, 0x38(%rbx)
    movl $0x320000, 0x80(%rbx)
    movl $0x321000, 0x90(%rbx)
    movl $0x322000, 0xa0(%rbx)
    movl $1, 0x44(%rbx)
    movl $0xf, 0x70(%rbx)
    mov 0x70(%rbx), %eax
    call puthex
    call newline
    # INIT: out_header.len, .error, init_out.major, .minor
    lea init_req(%rip), %rsi
    mov $56, %ecx
    call submit
    mov 0x340000, %eax
    call puthex
    call space
    mov 0x340004, %eax
    call puthex
    call space
    mov 0x340010, %eax
    call puthex
    call newline
    # LOOKUP hello.txt: error, attr.size
    lea lookup_req(%rip), %rsi
    mov $50, %ecx
    call submit
    mov 0x350004, %eax
    call puthex
    call space
    mov 0x350040, %eax
    call puthex
    call newline
    # OPEN the node found
    lea open_req(%rip), %rsi
    mov $48, %ecx
    mov 0x350010, %rax
    mov %rax, open_req+16(%rip)
    call submit
    mov 0x360004, %eax
    call puthex
    call newline
    # READ it through the handle: error, the first 8 bytes
    lea read_req(%rip), %rsi
    mov $80, %ecx
    mov 0x350010, %rax
    mov %rax, read_req+16(%rip)
    mov 0x360010, %rax
    mov %rax, read_req+40(%rip)
    call submit
    mov 0x370004, %eax
    call puthex
    call space
    mov 0x370010, %eax
    bswap %eax
    call puthex
    mov 0x370014, %eax
    bswap %eax
    call puthex
    call newline
    call reset

# submit: copies the request at %rsi (%ecx bytes) to its slot, chains it with a 4 KiB reply
# buffer, makes it available, notifies queue 1 and polls the used ring until it is answered.
submit:
    mov %r12d, %edi
    shl $8, %edi
    add $0x330000, %edi
    mov %edi, %r11d
    mov %ecx, %r9d
    rep movsb
    mov %r12d, %eax
    shl $1, %eax
    mov %eax, %edx
    shl $4, %edx
    add $0x320000, %edx
    mov %r11, (%rdx)
    mov %r9d, 8(%rdx)
    movw $1, 12(%rdx)
    lea 1(%rax), %r10d
    mov %r10w, 14(%rdx)
    mov %r12d, %r10d
    shl $16, %r10d
    add $0x340000, %r10d
    mov %r10, 16(%rdx)
    movl $4096, 24(%rdx)
    movw $2, 28(%rdx)
    movw $0, 30(%rdx)
    mov %r12d, %r10d
    mov %ax, 0x321004(,%r10,2)
    lea 1(%r12), %r10d
    mov %r10w, 0x321002
    movl $1, 0x50(%rbx)
5:  cmpw %r10w, 0x322002
    jne 5b
    inc %r12d
    ret
space:
    lea sp(%rip), %rsi
    jmp puts
newline:
    lea nl(%rip), %rsi
    jmp puts
sp: .asciz " "
nl: .asciz "\n"
init_req:
    .long 56, 26
    .quad 2, 0
    .long 0, 0, 1, 0
    .long 7, 31, 0x20000, 0
lookup_req:
    .long 50, 1
    .quad 4, 1
    .long 0, 0, 1, 0
    .ascii "hello.txt\0"
open_req:
    .long 48, 14
    .quad 6, 0
    .long 0, 0, 1, 0
    .long 0, 0
read_req:
    .long 80, 15
    .quad 8, 0
    .long 0, 0, 1, 0
    .quad 0, 0
    .long 4096, 0
    .quad 0
    .long 0, 0
"#;

#[test]
fn a_kvm_guest_reads_a_host_file_through_virtiofsd() {
    if !common::kvm_available() {
        return;
    }
    let Some((dir, shared, _daemon)) = fixture("kvm") else {
        return;
    };
    let content = b"STRATAFS virtio-fs on KVM\n";
    std::fs::write(shared.join("hello.txt"), content).unwrap();
    let kernel = common::bzimage_from_asm(&dir, "fs", FS_GUEST);
    let mut cfg = MachineConfig::new(&kernel);
    cfg.mem_mib = 64;
    cfg.fs.push(FsConfig {
        tag: "strata".into(),
        socket: dir.0.join("virtiofs.sock"),
    });
    let mut m = Machine::start(cfg).unwrap();
    let r = m.wait(Some(Duration::from_secs(60)));
    let out = m.console().contents();
    assert_eq!(r.unwrap(), Exit::Reset, "console: {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("74726976 0000001a 61727473 00000001"),
        "magic, type 26, the tag \"stra...\", one request queue: {out}"
    );
    assert_eq!(lines[1], "0000000f", "DRIVER_OK: {out}");
    let init: Vec<&str> = lines[2].split(' ').collect();
    assert_eq!(
        init[1], "00000000",
        "FUSE_INIT answered without error: {out}"
    );
    assert_eq!(init[2], "00000007", "FUSE major 7: {out}");
    assert_eq!(
        lines[3],
        format!("00000000 {:08x}", content.len()),
        "LOOKUP: no error, the host file's size: {out}"
    );
    assert_eq!(lines[4], "00000000", "OPEN: {out}");
    assert_eq!(
        lines[5], "00000000 5354524154414653",
        "READ: no error, \"STRATAFS\": {out}"
    );
}
