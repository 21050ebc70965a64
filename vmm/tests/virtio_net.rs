//! virtio-net driven through the MMIO transport as a vCPU would, with rings and buffers written
//! into guest memory by the test. No KVM needed.
//!
//! - Against a datagram socket pair standing in for the tap (one frame per datagram): tx chains
//!   land as one frame, rx frames land in rx chains with the 12-byte header, small and invalid
//!   chains are dropped and counted, frames wait for rx buffers.
//! - Against a real tap (root, /dev/net/tun), made in a fresh network namespace of a test thread
//!   so the host's network is never touched: a frame the device transmits is seen by an
//!   AF_PACKET socket on the tap, and a frame sent on the tap with AF_PACKET reaches the device's
//!   rx queue. A descriptor that is not a suitable tap is refused with a clear error.
//!
//! - With KVM and a real tap: an assembled guest finds the device in its MMIO slot, reads the
//!   MAC, sends an ARP request that the tap's AF_PACKET socket sees, and receives the reply sent
//!   there.
//!
//! Every worker runs under its seccomp filter: a call outside it would kill the test process.

mod common;

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_vmm::devices::bus::BusDevice;
use strata_vmm::devices::virtio::mmio::MmioTransport;
use strata_vmm::devices::virtio::net::{MacAddr, Net, NetConfig, NetStats, NetWorker, MAX_FRAME};
use strata_vmm::devices::virtio::{tap, Worker};
use strata_vmm::{Exit, Machine, MachineConfig};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const MEM: usize = 1 << 20;
const QSIZE: u16 = 16;
const GUEST_MAC: [u8; 6] = [0x02, 0x53, 0x54, 0x00, 0x00, 0x0a];
const PEER_MAC: [u8; 6] = [0x02, 0x53, 0x54, 0x00, 0x00, 0x01];
/// Where each queue's rings live: descriptors, avail (+0x1000), used (+0x2000).
const RINGS: [u64; 2] = [0x10000, 0x20000];
const VIRTQ_DESC_F_NEXT: u16 = 1;
const VIRTQ_DESC_F_WRITE: u16 = 2;

struct Fx {
    mem: GuestMemoryMmap,
    t: MmioTransport,
    stats: Arc<NetStats>,
    worker: NetWorker,
    next_desc: [u16; 2],
    avail_idx: [u16; 2],
}

fn w32(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

fn r32(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

impl Fx {
    /// The device, activated with both queues of [`QSIZE`] entries, its worker running under
    /// its filter.
    fn new(dev: Net, mut worker: NetWorker) -> Fx {
        let stats = dev.stats();
        let (tx, _rx) = std::sync::mpsc::channel();
        worker.start(tx, true).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
        let mut t = MmioTransport::new(
            Box::new(dev),
            mem.clone(),
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        );
        w32(&mut t, 0x70, 3);
        w32(&mut t, 0x24, 1);
        w32(&mut t, 0x20, 1);
        w32(&mut t, 0x24, 0);
        w32(&mut t, 0x20, 1 << 5);
        w32(&mut t, 0x70, 0xb);
        assert_eq!(r32(&mut t, 0x70), 0xb, "FEATURES_OK accepted");
        for (i, base) in RINGS.iter().enumerate() {
            w32(&mut t, 0x30, i as u32);
            w32(&mut t, 0x38, u32::from(QSIZE));
            w32(&mut t, 0x80, *base as u32);
            w32(&mut t, 0x90, *base as u32 + 0x1000);
            w32(&mut t, 0xa0, *base as u32 + 0x2000);
            w32(&mut t, 0x44, 1);
        }
        w32(&mut t, 0x70, 0xf);
        assert_eq!(r32(&mut t, 0x70), 0xf, "DRIVER_OK, no NEEDS_RESET");
        Fx {
            mem,
            t,
            stats,
            worker,
            next_desc: [0; 2],
            avail_idx: [0; 2],
        }
    }

    /// Puts a chain of `(address, length, device-writable)` descriptors on queue `q` (not
    /// notified).
    fn add_chain(&mut self, q: usize, descs: &[(u64, u32, bool)]) {
        let base = RINGS[q];
        let head = self.next_desc[q];
        for (i, &(addr, len, write)) in descs.iter().enumerate() {
            let idx = (self.next_desc[q] % QSIZE) as u64;
            let d = base + idx * 16;
            let last = i + 1 == descs.len();
            let mut flags = if write { VIRTQ_DESC_F_WRITE } else { 0 };
            if !last {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            let next = (self.next_desc[q] + 1) % QSIZE;
            self.mem.write_obj(addr, GuestAddress(d)).unwrap();
            self.mem.write_obj(len, GuestAddress(d + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
            self.mem.write_obj(next, GuestAddress(d + 14)).unwrap();
            self.next_desc[q] = next;
        }
        let slot = u64::from(self.avail_idx[q] % QSIZE);
        self.mem
            .write_obj(head % QSIZE, GuestAddress(base + 0x1004 + slot * 2))
            .unwrap();
        self.avail_idx[q] = self.avail_idx[q].wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx[q], GuestAddress(base + 0x1002))
            .unwrap();
    }

    fn notify(&mut self, q: u32) {
        w32(&mut self.t, 0x50, q);
    }

    /// The used ring of queue `q`: (descriptor head, length) per entry.
    fn used(&self, q: usize) -> Vec<(u32, u32)> {
        let base = RINGS[q] + 0x2000;
        let idx: u16 = self.mem.read_obj(GuestAddress(base + 2)).unwrap();
        (0..idx)
            .map(|i| {
                let e = base + 4 + u64::from(i % QSIZE) * 8;
                (
                    self.mem.read_obj(GuestAddress(e)).unwrap(),
                    self.mem.read_obj(GuestAddress(e + 4)).unwrap(),
                )
            })
            .collect()
    }

    /// Waits (the rx worker runs on its own) until queue `q` has `n` used entries.
    fn wait_used(&self, q: usize, n: usize) -> Vec<(u32, u32)> {
        let t0 = Instant::now();
        loop {
            let u = self.used(q);
            if u.len() >= n || t0.elapsed() > Duration::from_secs(5) {
                return u;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

impl Drop for Fx {
    fn drop(&mut self) {
        self.worker.stop();
    }
}

/// A device whose "tap" is one end of a datagram socket pair; the other end is returned.
fn socket_fixture() -> (Fx, UnixDatagram) {
    let (ours, peer) = UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (dev, worker) =
        Net::with_frame_fd(File::from(OwnedFd::from(ours)), MacAddr(GUEST_MAC)).unwrap();
    (Fx::new(dev, worker), peer)
}

/// A frame with a virtio-net header of garbage flags in front, as a driver might send it.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

#[test]
fn transport_shows_a_net_device_with_its_mac() {
    let (mut fx, _peer) = socket_fixture();
    assert_eq!(r32(&mut fx.t, 0x08), 1, "device ID 1 (net)");
    w32(&mut fx.t, 0x14, 0);
    assert_eq!(r32(&mut fx.t, 0x10), 1 << 5, "VIRTIO_NET_F_MAC only");
    w32(&mut fx.t, 0x14, 1);
    assert_eq!(r32(&mut fx.t, 0x10), 1, "VIRTIO_F_VERSION_1");
    let mut mac = [0u8; 6];
    fx.t.read(0x100, &mut mac);
    assert_eq!(mac, GUEST_MAC);
    w32(&mut fx.t, 0x30, 0);
    assert_eq!(r32(&mut fx.t, 0x34), 256);
    w32(&mut fx.t, 0x30, 2);
    assert_eq!(r32(&mut fx.t, 0x34), 0, "two queues only");
}

#[test]
fn a_tx_chain_lands_as_one_frame_with_a_zeroed_header() {
    let (mut fx, peer) = socket_fixture();
    let f = frame(12 + 60 + 1000, 0x5a);
    fx.mem.write_slice(&f[..12], GuestAddress(0x40000)).unwrap();
    fx.mem
        .write_slice(&f[12..72], GuestAddress(0x41000))
        .unwrap();
    fx.mem.write_slice(&f[72..], GuestAddress(0x42000)).unwrap();
    fx.add_chain(
        1,
        &[
            (0x40000, 12, false),
            (0x41000, 60, false),
            (0x42000, 1000, false),
        ],
    );
    fx.notify(1);
    assert_eq!(fx.used(1), vec![(0, 0)]);
    let mut buf = vec![0u8; MAX_FRAME];
    let n = peer.recv(&mut buf).unwrap();
    assert_eq!(n, f.len(), "one frame, whole");
    assert_eq!(&buf[..12], &[0u8; 12], "header zeroed: no offloads");
    assert_eq!(&buf[12..n], &f[12..]);
    assert_eq!(fx.stats.tx_frames.load(Ordering::Relaxed), 1);
    assert_eq!(fx.stats.tx_dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn an_rx_frame_lands_in_a_chain_behind_the_header() {
    let (mut fx, peer) = socket_fixture();
    fx.add_chain(0, &[(0x50000, 12, true), (0x51000, 2000, true)]);
    fx.notify(0);
    let f = frame(12 + 98, 0x11);
    peer.send(&f).unwrap();
    let used = fx.wait_used(0, 1);
    assert_eq!(used, vec![(0, f.len() as u32)]);
    let hdr = fx.read(0x50000, 12);
    assert_eq!(hdr, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], "num_buffers 1");
    assert_eq!(fx.read(0x51000, 98), &f[12..]);
    assert_eq!(fx.stats.rx_frames.load(Ordering::Relaxed), 1);
}

#[test]
fn a_chain_too_small_drops_that_frame_only() {
    let (mut fx, peer) = socket_fixture();
    fx.add_chain(0, &[(0x50000, 64, true)]);
    fx.notify(0);
    peer.send(&frame(12 + 100, 1)).unwrap();
    assert_eq!(
        fx.wait_used(0, 1),
        vec![(0, 0)],
        "consumed, nothing written"
    );
    assert_eq!(fx.stats.rx_dropped.load(Ordering::Relaxed), 1);
    let f = frame(12 + 40, 2);
    fx.add_chain(0, &[(0x52000, 64, true)]);
    fx.notify(0);
    peer.send(&f).unwrap();
    let used = fx.wait_used(0, 2);
    assert_eq!(used[1], (1, f.len() as u32), "the next frame is not lost");
    assert_eq!(fx.read(0x52000 + 12, 40), &f[12..]);
}

#[test]
fn frames_wait_for_rx_buffers() {
    let (mut fx, peer) = socket_fixture();
    let a = frame(12 + 50, 3);
    let b = frame(12 + 70, 4);
    peer.send(&a).unwrap();
    peer.send(&b).unwrap();
    let t0 = Instant::now();
    while fx.stats.rx_waits.load(Ordering::Relaxed) == 0 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Long enough for the worker's 100 ms rounds to retry the waiting frame a few times.
    std::thread::sleep(Duration::from_millis(350));
    assert!(fx.used(0).is_empty());
    assert_eq!(
        fx.stats.rx_waits.load(Ordering::Relaxed),
        1,
        "one frame waits"
    );
    fx.add_chain(0, &[(0x50000, 1500, true)]);
    fx.add_chain(0, &[(0x51000, 1500, true)]);
    fx.notify(0);
    let used = fx.wait_used(0, 2);
    assert_eq!(used, vec![(0, a.len() as u32), (1, b.len() as u32)]);
    assert_eq!(fx.read(0x50000 + 12, 50), &a[12..]);
    assert_eq!(fx.read(0x51000 + 12, 70), &b[12..]);
    assert_eq!(fx.stats.rx_dropped.load(Ordering::Relaxed), 0);
    assert_eq!(fx.stats.rx_waits.load(Ordering::Relaxed), 1);
}

#[test]
fn invalid_tx_chains_are_dropped_and_counted() {
    let (mut fx, peer) = socket_fixture();
    peer.set_nonblocking(true).unwrap();
    // Outside guest memory; device-writable only; shorter than the header; longer than a frame.
    fx.add_chain(1, &[(MEM as u64 - 16, 64, false)]);
    fx.add_chain(1, &[(0x40000, 100, true)]);
    fx.add_chain(1, &[(0x40000, 11, false)]);
    fx.add_chain(1, &[(0x40000, MAX_FRAME as u32 + 1, false)]);
    fx.add_chain(1, &[(0x40000, 40000, false), (0x50000, 40000, false)]);
    fx.notify(1);
    assert_eq!(fx.used(1).len(), 5, "every chain is returned");
    assert_eq!(fx.stats.tx_dropped.load(Ordering::Relaxed), 5);
    assert_eq!(fx.stats.tx_frames.load(Ordering::Relaxed), 0);
    let mut buf = [0u8; 16];
    assert!(peer.recv(&mut buf).is_err(), "nothing reached the tap");
}

#[test]
fn invalid_rx_chains_drop_the_frame() {
    let (mut fx, peer) = socket_fixture();
    // Outside guest memory; read-only (no room for the device).
    fx.add_chain(0, &[(MEM as u64 - 16, 1500, true)]);
    fx.add_chain(0, &[(0x50000, 1500, false)]);
    fx.notify(0);
    peer.send(&frame(60, 5)).unwrap();
    peer.send(&frame(60, 6)).unwrap();
    assert_eq!(fx.wait_used(0, 2), vec![(0, 0), (1, 0)]);
    assert_eq!(fx.stats.rx_dropped.load(Ordering::Relaxed), 2);
}

#[test]
fn a_reset_forgets_the_queues_and_the_waiting_frame() {
    let (mut fx, peer) = socket_fixture();
    peer.send(&frame(60, 7)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    w32(&mut fx.t, 0x70, 0);
    assert_eq!(r32(&mut fx.t, 0x70), 0);
    // Notifications after a reset reach nothing.
    fx.notify(0);
    fx.notify(1);
}

// ---- A real tap, in a network namespace of its own. ----

/// Runs `f` on a thread that moved to a fresh network namespace, or returns None (saying why)
/// where taps cannot be made.
fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    if !std::path::Path::new("/dev/net/tun").exists() {
        strata_backend::testing::skip("virtio-net tap tests", "/dev/net/tun does not exist");
        return None;
    }
    let t = std::thread::spawn(move || {
        // SAFETY: unshare affects only the calling thread's namespaces (CLONE_NEWNET on one
        // thread of a process is allowed); the thread ends when the test is done with it.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // No IPv6 autoconfiguration chatter on the tap.
        let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
        Ok(f())
    });
    match t.join().unwrap() {
        Ok(v) => Some(v),
        Err(e) => {
            strata_backend::testing::skip(
                "virtio-net tap tests",
                &format!("cannot make a network namespace ({e}); these tests need root"),
            );
            None
        }
    }
}

/// An AF_PACKET socket bound to `ifname`, with a receive timeout.
fn packet_socket(ifname: &str) -> (OwnedFd, i32) {
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: `name` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
    assert!(ifindex > 0, "no interface {ifname}");
    let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
    // SAFETY: plain socket(2); the result is checked.
    let s = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    assert!(s >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
    // SAFETY: `s` was just created; nothing else owns it.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: sockaddr_ll is plain old data; zeroes are valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto as u16;
    sll.sll_ifindex = ifindex;
    // SAFETY: `sll` is a live sockaddr_ll and the length says so.
    let r = unsafe {
        libc::bind(
            s.as_raw_fd(),
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: SO_RCVTIMEO reads one timeval from the pointer, which points to `tv`.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    assert_eq!(r, 0);
    (s, ifindex)
}

/// An ARP packet: `op` 1 request, 2 reply; addresses in 198.18.0.0/15.
/// Sends `frame` out of the interface `ifindex` through the packet socket `pkt`, addressed to
/// the guest's MAC; the bytes sent, or -1.
fn send_to_guest(pkt: &OwnedFd, ifindex: i32, frame: &[u8]) -> isize {
    // SAFETY: sockaddr_ll is plain old data; zeroes are valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&GUEST_MAC);
    // SAFETY: `frame` and `sll` are live for the call, the lengths are theirs.
    unsafe {
        libc::sendto(
            pkt.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    }
}

fn arp(dst: [u8; 6], src: [u8; 6], op: u16, spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(dst);
    f.extend(src);
    f.extend(0x0806u16.to_be_bytes());
    f.extend([0, 1, 8, 0, 6, 4]);
    f.extend(op.to_be_bytes());
    f.extend(src);
    f.extend(spa);
    f.extend(if op == 1 { [0; 6] } else { dst });
    f.extend(tpa);
    f
}

#[test]
fn a_real_tap_carries_frames_both_ways() {
    in_fresh_netns(|| {
        let tap_fd = tap::create("stnet0").expect("creating a tap");
        tap::set_up("stnet0").expect("bringing the tap up");
        let (pkt, ifindex) = packet_socket("stnet0");
        let cfg = NetConfig {
            tap_fd: tap_fd.as_raw_fd(),
            mac: MacAddr(GUEST_MAC),
        };
        let (dev, worker) = Net::new(&cfg).expect("a tap opened as the tier opens it");
        drop(tap_fd); // the device holds its own descriptor
        let mut fx = Fx::new(dev, worker);

        // TX: the guest's ARP request for 198.18.0.1 appears on the tap.
        let req = arp([0xff; 6], GUEST_MAC, 1, [198, 18, 0, 2], [198, 18, 0, 1]);
        fx.mem
            .write_slice(&[0u8; 12], GuestAddress(0x40000))
            .unwrap();
        fx.mem.write_slice(&req, GuestAddress(0x41000)).unwrap();
        fx.add_chain(
            1,
            &[(0x40000, 12, false), (0x41000, req.len() as u32, false)],
        );
        fx.notify(1);
        assert_eq!(
            fx.stats.tx_frames.load(Ordering::Relaxed),
            1,
            "the tap took it"
        );
        let mut seen = false;
        let mut buf = vec![0u8; 65536];
        let t0 = Instant::now();
        while !seen && t0.elapsed() < Duration::from_secs(5) {
            // SAFETY: `buf` is live and writable for its length.
            let n = unsafe { libc::recv(pkt.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                seen = buf[..n as usize].starts_with(&req);
            }
        }
        assert!(seen, "the guest's frame was not seen on the tap");

        // RX: an ARP reply sent on the tap reaches the guest's rx chain.
        for i in 0..8u64 {
            fx.add_chain(0, &[(0x50000 + i * 0x1000, 2048, true)]);
        }
        fx.notify(0);
        let reply = arp(GUEST_MAC, PEER_MAC, 2, [198, 18, 0, 1], [198, 18, 0, 2]);
        let n = send_to_guest(&pkt, ifindex, &reply);
        assert_eq!(
            n,
            reply.len() as isize,
            "sendto: {}",
            std::io::Error::last_os_error()
        );
        let t0 = Instant::now();
        let mut got = None;
        while got.is_none() && t0.elapsed() < Duration::from_secs(5) {
            for (i, (head, len)) in fx.used(0).into_iter().enumerate() {
                let at = 0x50000 + u64::from(head) * 0x1000;
                let data = fx.read(at, len as usize);
                if data.len() >= 12 + reply.len() && data[12..].starts_with(&reply) {
                    got = Some((i, data));
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let (_, data) = got.expect("the frame sent on the tap did not reach the rx queue");
        assert_eq!(&data[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert!(fx.stats.rx_frames.load(Ordering::Relaxed) >= 1);
    });
}

/// Creates a tun/tap with `flags` in the calling thread's namespace.
fn raw_tun(name: &str, flags: i32) -> OwnedFd {
    // SAFETY: the path is a NUL-terminated literal; the result is checked.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: `fd` was just opened; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zeroes are valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq through the pointer, which points to `req`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    assert_eq!(r, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    fd
}

#[test]
fn descriptors_that_are_not_suitable_taps_are_refused() {
    let mac = MacAddr(GUEST_MAC);
    let err = move |fd: i32| match Net::new(&NetConfig { tap_fd: fd, mac }) {
        Ok(_) => panic!("descriptor {fd} accepted"),
        Err(e) => e.to_string(),
    };
    let e = err(100_000);
    assert!(e.contains("not open"), "{e}");
    let f = File::open("/proc/self/stat").unwrap();
    let e = err(f.as_raw_fd());
    assert!(e.contains("not a tun/tap"), "{e}");
    in_fresh_netns(move || {
        let tun = raw_tun(
            "sttun0",
            libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR,
        );
        let e = err(tun.as_raw_fd());
        assert!(e.contains("IFF_TAP"), "{e}");
        let nohdr = raw_tun("sttap1", libc::IFF_TAP | libc::IFF_NO_PI);
        let e = err(nohdr.as_raw_fd());
        assert!(e.contains("IFF_VNET_HDR"), "{e}");
        // (A tap opened without IFF_NO_PI is not tested: this host's kernel, 6.18, reports
        // IFF_NO_PI through TUNGETIFF for it all the same.)
    });
}

/// 64-bit guest. rx queue: descriptors 0x300000, avail 0x301000, used 0x302000, one 2 KiB buffer
/// at 0x310000. tx queue: 0x320000 / 0x321000 / 0x322000, the frame at 0x330000.
const NET_GUEST: &str = r#"
    mov $0xd0000000, %ebx
    mov (%rbx), %eax
    call puthex
    call space
    mov 8(%rbx), %eax
    call puthex
    call space
    movl $1, 0x14(%rbx)
    mov 0x10(%rbx), %eax
    call puthex
    call space
    movl $0, 0x14(%rbx)
    mov 0x10(%rbx), %eax
    call puthex
    call newline
    movl $0, 0x70(%rbx)
    movl $3, 0x70(%rbx)
    movl $1, 0x24(%rbx)
    movl $1, 0x20(%rbx)
    movl $0, 0x24(%rbx)
    movl $0x20, 0x20(%rbx)
    movl $0xb, 0x70(%rbx)
    mov 0x70(%rbx), %eax
    call puthex
    call space
    mov 0x100(%rbx), %eax
    call puthex
    call space
    mov 0x104(%rbx), %eax
    call puthex
    call newline
    # rx: one writable 2 KiB buffer
    movq $0x310000, 0x300000
    movl $2048, 0x300008
    movw $2, 0x30000c
    movw $0, 0x30000e
    movw $0, 0x301004
    movw $1, 0x301002
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
    # tx: the ARP request behind a zero header
    lea frame(%rip), %rsi
    mov $0x330000, %edi
    mov $54, %ecx
    rep movsb
    movq $0x330000, 0x320000
    movl $54, 0x320008
    movw $0, 0x32000c
    movw $0, 0x32000e
    movw $0, 0x321004
    movw $1, 0x321002
    movl $1, 0x50(%rbx)
1:  cmpw $1, 0x322002
    jne 1b
    movl $0, 0x50(%rbx)
2:  cmpw $1, 0x302002
    jne 2b
    mov 0x302008, %eax
    call puthex
    call space
    mov 0x310008, %eax
    call puthex
    call space
    mov 0x310012, %eax
    call puthex
    call space
    mov 0x310018, %eax
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
frame:
    .byte 0,0,0,0,0,0,0,0,0,0,0,0
    .byte 0xff,0xff,0xff,0xff,0xff,0xff, 0x02,0x53,0x54,0x00,0x00,0x0a, 0x08,0x06
    .byte 0x00,0x01,0x08,0x00,0x06,0x04,0x00,0x01
    .byte 0x02,0x53,0x54,0x00,0x00,0x0a, 198,18,0,2
    .byte 0,0,0,0,0,0, 198,18,0,1
"#;

#[test]
fn a_guest_sends_and_receives_through_a_real_tap() {
    if !common::kvm_available() {
        return;
    }
    in_fresh_netns(|| {
        let peer_mac = [0x02, 0x50, 0x45, 0x45, 0x52, 0x01];
        let tap_fd = tap::create("stnet9").expect("creating a tap");
        tap::set_up("stnet9").expect("bringing the tap up");
        let (pkt, ifindex) = packet_socket("stnet9");
        let dir = common::TempDir::new("net");
        let kernel = common::bzimage_from_asm(&dir, "net", NET_GUEST);
        let mut cfg = MachineConfig::new(&kernel);
        cfg.mem_mib = 64;
        cfg.nets.push(NetConfig {
            tap_fd: tap_fd.as_raw_fd(),
            mac: MacAddr(GUEST_MAC),
        });
        let mut m = Machine::start(cfg).unwrap();
        drop(tap_fd);
        let req = arp([0xff; 6], GUEST_MAC, 1, [198, 18, 0, 2], [198, 18, 0, 1]);
        let mut buf = vec![0u8; 65536];
        let t0 = Instant::now();
        let mut seen = false;
        while !seen && t0.elapsed() < Duration::from_secs(60) {
            // SAFETY: `buf` is live and writable for its length.
            let n = unsafe { libc::recv(pkt.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                seen = buf[..n as usize].starts_with(&req);
            }
        }
        if seen {
            let reply = arp(GUEST_MAC, peer_mac, 2, [198, 18, 0, 1], [198, 18, 0, 2]);
            let n = send_to_guest(&pkt, ifindex, &reply);
            assert_eq!(n, reply.len() as isize);
        }
        let r = m.wait(Some(Duration::from_secs(60)));
        let out = m.console().contents();
        assert!(
            seen,
            "the guest's ARP request never reached the tap; console:\n{out}"
        );
        assert_eq!(r.unwrap(), Exit::Reset, "console: {out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0], "74726976 00000001 00000001 00000020",
            "magic, net, VERSION_1, MAC: {out}"
        );
        assert_eq!(
            lines[1], "0000000b 00545302 00000a00",
            "FEATURES_OK; the MAC"
        );
        assert_eq!(lines[2], "0000000f", "DRIVER_OK");
        assert_eq!(
            lines[3], "00000036 00010000 45455002 01000608",
            "54 bytes used; num_buffers 1; the peer's MAC; ARP"
        );
    });
}

#[test]
fn frames_of_the_largest_size_pass_both_ways() {
    let (mut fx, peer) = socket_fixture();
    let big = frame(MAX_FRAME, 9);
    fx.add_chain(
        0,
        &[
            (0x50000, 12, true),
            (0x60000, 32768, true),
            (0x70000, 32782, true),
        ],
    );
    fx.notify(0);
    peer.send(&big).unwrap();
    assert_eq!(fx.wait_used(0, 1), vec![(0, MAX_FRAME as u32)]);
    assert_eq!(fx.read(0x60000, 32768), &big[12..12 + 32768]);
    assert_eq!(fx.read(0x70000, 32782), &big[12 + 32768..]);
    fx.mem.write_slice(&big, GuestAddress(0x80000)).unwrap();
    fx.add_chain(1, &[(0x80000, MAX_FRAME as u32, false)]);
    fx.notify(1);
    let mut buf = vec![0u8; MAX_FRAME + 1];
    assert_eq!(peer.recv(&mut buf).unwrap(), MAX_FRAME);
    assert_eq!(&buf[12..MAX_FRAME], &big[12..]);
}
