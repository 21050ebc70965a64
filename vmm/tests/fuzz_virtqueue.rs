//! Untrusted guest input: garbage descriptor tables, avail rings, queue sizes, addresses and
//! packets, fed to the virtio-blk, virtio-vsock and virtio-net devices through the MMIO transport
//! exactly as a vCPU would. The host side must never panic or hang, whatever the guest wrote. No KVM needed.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use strata_vmm::devices::bus::BusDevice;
use strata_vmm::devices::virtio::block::{Block, DiskConfig};
use strata_vmm::devices::virtio::mmio::MmioTransport;
use strata_vmm::devices::virtio::net::{MacAddr, Net, MAX_FRAME};
use strata_vmm::devices::virtio::vsock::{Vsock, VsockConfig};
use strata_vmm::devices::virtio::{VirtioDevice, Worker};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const MEM: usize = 1 << 20;

#[derive(Debug, Clone)]
struct QueueInput {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
}

fn queue_input() -> impl Strategy<Value = QueueInput> {
    let addr = prop_oneof![
        3 => (0u64..(MEM as u64 / 0x1000)).prop_map(|p| p * 0x1000),
        1 => any::<u64>(),
        1 => Just(MEM as u64 - 8),
    ];
    (
        prop_oneof![Just(8u16), Just(16), Just(256), any::<u16>()],
        addr.clone(),
        addr.clone(),
        addr,
    )
        .prop_map(|(size, desc, avail, used)| QueueInput {
            size,
            desc,
            avail,
            used,
        })
}

fn w32(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

/// Programs the transport the way a driver would, with the fuzzed queue layout, then writes
/// `garbage` over guest memory at `garbage_at`, notifies every queue `notifies` times and pokes
/// the registers with `pokes`.
fn drive(
    dev: Box<dyn VirtioDevice>,
    queues: &[QueueInput],
    garbage: &[u8],
    garbage_at: u64,
    notifies: u8,
    pokes: &[(u16, u32)],
) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let mut t = MmioTransport::new(dev, mem.clone(), evt);
    w32(&mut t, 0x70, 0);
    w32(&mut t, 0x70, 3);
    w32(&mut t, 0x24, 1);
    w32(&mut t, 0x20, 1);
    w32(&mut t, 0x70, 0xb);
    for (i, q) in queues.iter().enumerate() {
        w32(&mut t, 0x30, i as u32);
        w32(&mut t, 0x38, u32::from(q.size));
        w32(&mut t, 0x80, q.desc as u32);
        w32(&mut t, 0x84, (q.desc >> 32) as u32);
        w32(&mut t, 0x90, q.avail as u32);
        w32(&mut t, 0x94, (q.avail >> 32) as u32);
        w32(&mut t, 0xa0, q.used as u32);
        w32(&mut t, 0xa4, (q.used >> 32) as u32);
        w32(&mut t, 0x44, 1);
    }
    let at = garbage_at % MEM as u64;
    let n = garbage.len().min(MEM - at as usize);
    mem.write_slice(&garbage[..n], GuestAddress(at)).unwrap();
    // Also aim garbage straight at each ring.
    for q in queues {
        let _ = mem.write_slice(&garbage[..garbage.len().min(64)], GuestAddress(q.avail));
        let _ = mem.write_slice(garbage, GuestAddress(q.desc));
    }
    w32(&mut t, 0x70, 0xf);
    let t0 = Instant::now();
    for _ in 0..notifies {
        for i in 0..queues.len() {
            w32(&mut t, 0x50, i as u32);
        }
    }
    for &(off, v) in pokes {
        w32(&mut t, u64::from(off & 0x1fc), v);
        let mut b = [0u8; 4];
        t.read(u64::from(off & 0x1ff), &mut b);
    }
    for i in 0..queues.len() {
        w32(&mut t, 0x50, i as u32);
    }
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "device took {:?}",
        t0.elapsed()
    );
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("strata-fuzz-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn block_survives_garbage(
        q in queue_input(),
        garbage in proptest::collection::vec(any::<u8>(), 0..4096),
        garbage_at in any::<u64>(),
        notifies in 0u8..4,
        pokes in proptest::collection::vec((any::<u16>(), any::<u32>()), 0..16),
        ro in any::<bool>(),
    ) {
        let dir = scratch("blk");
        let img = dir.join("d.img");
        std::fs::write(&img, vec![7u8; 64 * 512]).unwrap();
        let dev = Block::open(&DiskConfig { path: img.clone(), read_only: ro }).unwrap();
        drive(Box::new(dev), &[q], &garbage, garbage_at, notifies, &pokes);
        let len = std::fs::metadata(&img).unwrap().len();
        prop_assert_eq!(len, 64 * 512, "the guest cannot grow the image");
        if ro {
            prop_assert!(std::fs::read(&img).unwrap().iter().all(|&b| b == 7));
        }
    }

    #[test]
    fn vsock_survives_garbage(
        qs in proptest::collection::vec(queue_input(), 3),
        garbage in proptest::collection::vec(any::<u8>(), 0..4096),
        garbage_at in any::<u64>(),
        notifies in 0u8..4,
        pokes in proptest::collection::vec((any::<u16>(), any::<u32>()), 0..16),
    ) {
        let dir = scratch("vsock");
        let sock = dir.join("v.sock");
        let _ = std::fs::remove_file(&sock);
        let (dev, mut worker) = Vsock::new(&VsockConfig { guest_cid: 3, uds_path: sock.clone() }).unwrap();
        let (tx, _rx) = std::sync::mpsc::channel();
        worker.start(tx, true).unwrap();
        drive(Box::new(dev), &qs, &garbage, garbage_at, notifies, &pokes);
        worker.stop();
        prop_assert!(!sock.exists());
    }
}

/// A net device on one end of a datagram socket pair (the "tap"); frames from the other end
/// arrive while the guest's garbage is processed.
fn net_on_socket() -> (
    Net,
    strata_vmm::devices::virtio::net::NetWorker,
    UnixDatagram,
) {
    let (ours, peer) = UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    peer.set_nonblocking(true).unwrap();
    let (dev, mut worker) = Net::with_frame_fd(
        std::fs::File::from(std::os::fd::OwnedFd::from(ours)),
        MacAddr([2, 0, 0, 0, 0, 1]),
    )
    .unwrap();
    let (tx, _rx) = std::sync::mpsc::channel();
    worker.start(tx, true).unwrap();
    (dev, worker, peer)
}

/// Every frame the device wrote to its "tap" is within bounds.
fn drain_frames(peer: &UnixDatagram) -> usize {
    let mut buf = vec![0u8; MAX_FRAME + 1];
    let mut n = 0;
    while let Ok(len) = peer.recv(&mut buf) {
        assert!((12..=MAX_FRAME).contains(&len), "a {len}-byte frame");
        n += 1;
    }
    n
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn net_survives_garbage(
        qs in proptest::collection::vec(queue_input(), 2),
        garbage in proptest::collection::vec(any::<u8>(), 0..4096),
        garbage_at in any::<u64>(),
        notifies in 0u8..4,
        pokes in proptest::collection::vec((any::<u16>(), any::<u32>()), 0..16),
        frames in proptest::collection::vec(0usize..2000, 0..8),
    ) {
        let (dev, mut worker, peer) = net_on_socket();
        for len in frames {
            let _ = peer.send(&vec![0xa5; len]);
        }
        drive(Box::new(dev), &qs, &garbage, garbage_at, notifies, &pokes);
        worker.stop();
        drain_frames(&peer);
    }
}

/// Random descriptor chains (addresses, lengths, flags, links) in a valid ring on both queues,
/// with frames arriving: every chain the device takes is returned, nothing panics or hangs, and
/// every frame it writes is within bounds.
#[test]
fn net_fuzzed_chains_in_a_valid_ring() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    });
    let desc = (
        prop_oneof![
            3 => 0x40000u64..0xc0000,
            1 => any::<u64>(),
            1 => Just(MEM as u64 - 4),
        ],
        prop_oneof![
            3 => 0u32..3000,
            1 => Just(MAX_FRAME as u32),
            1 => Just(MAX_FRAME as u32 + 1),
            1 => any::<u32>(),
        ],
        0u16..8,
        0u16..16,
    );
    let input = (
        proptest::collection::vec(desc.clone(), 16),
        proptest::collection::vec(desc, 16),
        proptest::collection::vec(0u16..20, 0..16),
        proptest::collection::vec(0u16..20, 0..16),
        proptest::collection::vec(0usize..3000, 0..6),
    );
    runner
        .run(
            &input,
            |(rx_descs, tx_descs, rx_heads, tx_heads, frames)| {
                let (dev, mut worker, peer) = net_on_socket();
                let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
                let mut t =
                    MmioTransport::new(Box::new(dev), mem.clone(), EventFd::new(0).unwrap());
                w32(&mut t, 0x70, 3);
                w32(&mut t, 0x24, 1);
                w32(&mut t, 0x20, 1);
                w32(&mut t, 0x70, 0xb);
                for (i, base) in [0x10000u32, 0x20000].iter().enumerate() {
                    w32(&mut t, 0x30, i as u32);
                    w32(&mut t, 0x38, 16);
                    w32(&mut t, 0x80, *base);
                    w32(&mut t, 0x90, base + 0x1000);
                    w32(&mut t, 0xa0, base + 0x2000);
                    w32(&mut t, 0x44, 1);
                }
                for (base, descs, heads) in [
                    (0x10000u64, &rx_descs, &rx_heads),
                    (0x20000, &tx_descs, &tx_heads),
                ] {
                    for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
                        let d = base + i as u64 * 16;
                        mem.write_obj(addr, GuestAddress(d)).unwrap();
                        mem.write_obj(len, GuestAddress(d + 8)).unwrap();
                        // NEXT, WRITE and INDIRECT in any combination.
                        mem.write_obj(flags & 7, GuestAddress(d + 12)).unwrap();
                        mem.write_obj(next, GuestAddress(d + 14)).unwrap();
                    }
                    for (i, &h) in heads.iter().enumerate() {
                        mem.write_obj(h, GuestAddress(base + 0x1004 + i as u64 * 2))
                            .unwrap();
                    }
                    mem.write_obj(heads.len() as u16, GuestAddress(base + 0x1002))
                        .unwrap();
                }
                w32(&mut t, 0x70, 0xf);
                for len in &frames {
                    let _ = peer.send(&vec![0x5a; *len]);
                }
                let t0 = Instant::now();
                w32(&mut t, 0x50, 1);
                w32(&mut t, 0x50, 0);
                std::thread::sleep(Duration::from_millis(20));
                w32(&mut t, 0x50, 0);
                prop_assert!(t0.elapsed() < Duration::from_secs(5));
                let used_tx: u16 = mem.read_obj(GuestAddress(0x22002)).unwrap();
                let used_rx: u16 = mem.read_obj(GuestAddress(0x12002)).unwrap();
                prop_assert!(usize::from(used_tx) <= tx_heads.len());
                prop_assert!(usize::from(used_rx) <= rx_heads.len());
                for i in 0..used_rx {
                    let len: u32 = mem
                        .read_obj(GuestAddress(0x12004 + u64::from(i) * 8 + 4))
                        .unwrap();
                    prop_assert!(len as usize <= MAX_FRAME, "rx used length {}", len);
                }
                drop(t);
                worker.stop();
                let sent = drain_frames(&peer);
                prop_assert!(sent <= tx_heads.len());
                Ok(())
            },
        )
        .unwrap();
}

/// Well-formed vsock packets with fuzzed fields (ops, ports, lengths, credit) placed in a valid
/// TX ring: the muxer answers or resets, never panics.
#[test]
fn vsock_fuzzed_headers_in_a_valid_ring() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    });
    let hdr = proptest::collection::vec(
        (
            any::<u64>(),
            prop_oneof![Just(2u64), any::<u64>()],
            any::<u32>(),
            any::<u32>(),
            prop_oneof![Just(0u32), 0u32..128, any::<u32>()],
            prop_oneof![Just(1u16), any::<u16>()],
            0u16..9,
            any::<u32>(),
            any::<u32>(),
        ),
        1..8,
    );
    runner
        .run(&hdr, |pkts| {
            let dir = scratch("vsockhdr");
            let sock = dir.join("v.sock");
            let _ = std::fs::remove_file(&sock);
            let (dev, mut worker) = Vsock::new(&VsockConfig {
                guest_cid: 3,
                uds_path: sock.clone(),
            })
            .unwrap();
            let (tx, _rx) = std::sync::mpsc::channel();
            worker.start(tx, true).unwrap();
            let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
            let mut t = MmioTransport::new(Box::new(dev), mem.clone(), EventFd::new(0).unwrap());
            w32(&mut t, 0x70, 3);
            w32(&mut t, 0x24, 1);
            w32(&mut t, 0x20, 1);
            w32(&mut t, 0x70, 0xb);
            // rx 0x10000.., tx 0x20000.., ev 0x30000..; 8 entries each.
            for (i, base) in [0x10000u32, 0x20000, 0x30000].iter().enumerate() {
                w32(&mut t, 0x30, i as u32);
                w32(&mut t, 0x38, 8);
                w32(&mut t, 0x80, *base);
                w32(&mut t, 0x90, base + 0x1000);
                w32(&mut t, 0xa0, base + 0x2000);
                w32(&mut t, 0x44, 1);
            }
            // RX buffers.
            for i in 0..8u64 {
                let d = 0x10000 + i * 16;
                mem.write_obj(0x40000u64 + i * 0x1000, GuestAddress(d))
                    .unwrap();
                mem.write_obj(0x1000u32, GuestAddress(d + 8)).unwrap();
                mem.write_obj(2u16, GuestAddress(d + 12)).unwrap();
                mem.write_obj(i as u16, GuestAddress(0x11004 + i * 2))
                    .unwrap();
            }
            mem.write_obj(8u16, GuestAddress(0x11002)).unwrap();
            // TX packets.
            for (i, p) in pkts.iter().enumerate() {
                let buf = 0x60000u64 + i as u64 * 0x1000;
                let mut h = [0u8; 44];
                h[0..8].copy_from_slice(&p.0.to_le_bytes());
                h[8..16].copy_from_slice(&p.1.to_le_bytes());
                h[16..20].copy_from_slice(&p.2.to_le_bytes());
                h[20..24].copy_from_slice(&p.3.to_le_bytes());
                h[24..28].copy_from_slice(&p.4.to_le_bytes());
                h[28..30].copy_from_slice(&p.5.to_le_bytes());
                h[30..32].copy_from_slice(&p.6.to_le_bytes());
                h[36..40].copy_from_slice(&p.7.to_le_bytes());
                h[40..44].copy_from_slice(&p.8.to_le_bytes());
                mem.write_slice(&h, GuestAddress(buf)).unwrap();
                let d = 0x20000 + i as u64 * 16;
                mem.write_obj(buf, GuestAddress(d)).unwrap();
                mem.write_obj(44u32 + 128, GuestAddress(d + 8)).unwrap();
                mem.write_obj(0u16, GuestAddress(d + 12)).unwrap();
                mem.write_obj(i as u16, GuestAddress(0x21004 + i as u64 * 2))
                    .unwrap();
            }
            mem.write_obj(pkts.len() as u16, GuestAddress(0x21002))
                .unwrap();
            w32(&mut t, 0x70, 0xf);
            w32(&mut t, 0x50, 1);
            w32(&mut t, 0x50, 0);
            let used_tx: u16 = mem.read_obj(GuestAddress(0x22002)).unwrap();
            prop_assert_eq!(
                usize::from(used_tx),
                pkts.len(),
                "every TX packet is consumed"
            );
            drop(t);
            worker.stop();
            Ok(())
        })
        .unwrap();
}
