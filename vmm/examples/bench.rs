//! VMM figures, separate from the functional tests: VMM start to first guest instruction, and the
//! VMM's resident memory beyond the guest's own.
//!
//! `cargo run --release -p strata-microvm --example bench [-- ITERATIONS]`. Needs /dev/kvm and
//! binutils (`as`, `objcopy`) to assemble the guest, whose first instruction writes to COM1.

use std::process::Command;
use std::time::{Duration, Instant};

use strata_vmm::{Machine, MachineConfig};

const GUEST: &str = r#"
    .text
    .code64
    mov $0x3f8, %dx
    mov $'!', %al
    out %al, %dx
1:  pause
    jmp 1b
"#;

fn build_guest(dir: &std::path::Path) -> std::path::PathBuf {
    let s = dir.join("g.S");
    let o = dir.join("g.o");
    let b = dir.join("g.bin");
    std::fs::write(&s, GUEST).unwrap();
    assert!(Command::new("as")
        .arg("--64")
        .arg("-o")
        .arg(&o)
        .arg(&s)
        .status()
        .unwrap()
        .success());
    assert!(Command::new("objcopy")
        .args(["-O", "binary", "-j", ".text"])
        .arg(&o)
        .arg(&b)
        .status()
        .unwrap()
        .success());
    let code = std::fs::read(&b).unwrap();
    let mut img = vec![0u8; 1024];
    img[0x1f1] = 1;
    img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    img[0x211] = 1;
    img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
    img[0x236..0x238].copy_from_slice(&1u16.to_le_bytes());
    let mut pm = vec![0x0f, 0x0b];
    pm.resize(0x200, 0x90);
    pm.extend_from_slice(&code);
    img.extend_from_slice(&pm);
    let k = dir.join("bench.bzImage");
    std::fs::write(&k, img).unwrap();
    k
}

/// Resident kB of the whole process, and of the mappings inside [lo, hi).
fn rss_kb(lo: u64, hi: u64) -> (u64, u64) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let (mut total, mut inside, mut cur_inside) = (0, 0, false);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                // A VMA that overlaps guest memory is counted as guest memory (the kernel may
                // merge the guest mapping with a neighbour; the neighbours are tiny).
                cur_inside = a < hi && b > lo;
                continue;
            }
        }
        if let Some(v) = line.strip_prefix("Rss:") {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            total += kb;
            if cur_inside {
                inside += kb;
            }
        }
    }
    (total, inside)
}

fn main() {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let dir = std::env::temp_dir().join(format!("strata-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = build_guest(&dir);

    let mut to_entry = Vec::new();
    let mut to_first_insn = Vec::new();
    for _ in 0..iterations {
        let mut cfg = MachineConfig::new(&kernel);
        cfg.mem_mib = 128;
        let m = Machine::start(cfg).unwrap();
        let console = m.console();
        let t0 = Instant::now();
        while console.first_byte_at().is_none() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_micros(50));
        }
        let first = console.first_byte_at().expect("guest wrote its first byte");
        to_first_insn.push(first - m.started_at());
        to_entry.push(m.first_vcpu_entry().unwrap() - m.started_at());
        drop(m);
    }
    to_entry.sort();
    to_first_insn.sort();
    let med = |v: &[Duration]| v[v.len() / 2];
    println!("iterations: {iterations}");
    println!(
        "VMM start -> vCPU thread entering KVM_RUN: median {:?}, min {:?}, max {:?}",
        med(&to_entry),
        to_entry[0],
        to_entry[iterations - 1]
    );
    println!(
        "VMM start -> first guest instruction (its COM1 write seen by the VMM): median {:?}, min {:?}, max {:?}",
        med(&to_first_insn),
        to_first_insn[0],
        to_first_insn[iterations - 1]
    );

    // RSS: one machine with 128 MiB, running; the guest's own mapping is subtracted.
    let (before, _) = rss_kb(0, 0);
    let mut cfg = MachineConfig::new(&kernel);
    cfg.mem_mib = 128;
    let m = Machine::start(cfg).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let guest = m.guest_memory_host_ranges()[0];
    let (total, in_guest) = rss_kb(guest.0, guest.1);
    println!("process RSS before the machine: {before} kB");
    println!(
        "process RSS with the machine running: {total} kB, of which guest memory {in_guest} kB"
    );
    println!(
        "VMM process RSS beyond guest memory: {} kB (of which this machine added {} kB)",
        total.saturating_sub(in_guest),
        total.saturating_sub(in_guest).saturating_sub(before)
    );
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
}
