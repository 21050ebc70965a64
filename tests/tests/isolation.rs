//! What the workload sees from inside the container: capabilities, namespaces, hostname, user,
//! devices, rlimits, masked and read-only paths, cgroup limits, seccomp. Like youki's contest:
//! a small program in the container reports, the test judges.

use std::collections::BTreeSet;

use strata_tests::wasi::{Workload, WorkloadRun};
use strata_tests::{cgroups, harness};

/// containerd's default capability set (`oci.populateDefaultUnixSpec`), by bit number.
const DEFAULT_CAPS: [(&str, u32); 14] = [
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_RAW", 13),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_MKNOD", 27),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_SETFCAP", 31),
];
const CAP_SYS_ADMIN: u32 = 21;

fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} missing from:\n{status}"))
        .trim()
        .to_string()
}

fn mask(hex: &str) -> u64 {
    u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("not a capability mask: {hex}"))
}

#[test]
fn capabilities_are_containerds_default_set() {
    let h = harness!();
    let c = h.container("caps");
    let out = c.run(&["cat", "/proc/self/status"]);
    assert!(out.success(), "{out}");
    let want: u64 = DEFAULT_CAPS.iter().map(|(_, bit)| 1u64 << bit).sum();
    for field in ["CapEff", "CapPrm", "CapBnd"] {
        let got = mask(&status_field(&out.stdout, field));
        let missing: Vec<_> = DEFAULT_CAPS
            .iter()
            .filter(|(_, b)| got & (1 << b) == 0)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            got,
            want,
            "{field} {got:#x}: missing {missing:?}, extra bits {:#x}",
            got & !want
        );
        assert_eq!(got & (1 << CAP_SYS_ADMIN), 0, "CAP_SYS_ADMIN must be gone");
    }
    assert_eq!(mask(&status_field(&out.stdout, "CapInh")), 0);
    assert_eq!(mask(&status_field(&out.stdout, "CapAmb")), 0);
    assert_eq!(
        status_field(&out.stdout, "NoNewPrivs"),
        "1",
        "ctr asks for no_new_privs"
    );
    c.assert_no_leaks();

    // What the capabilities mean in practice: chown works, mount does not.
    let c = h.container("capuse");
    let out = c.run(&[
        "sh",
        "-c",
        "touch /tmp/f && chown 1000:1000 /tmp/f && echo chown-ok; \
         mount -t tmpfs none /mnt 2>/dev/null && echo mount-ok || echo mount-denied",
    ]);
    assert_eq!(out.stdout, "chown-ok\nmount-denied\n", "{out}");
    c.assert_no_leaks();
}

#[test]
fn namespaces_are_the_specs() {
    let h = harness!();
    let c = h.container("ns");
    let out = c.run(&["sh", "-c", "echo pid=$$; for n in pid mnt net ipc uts user cgroup; do echo $n $(readlink /proc/self/ns/$n); done"]);
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.starts_with("pid=1\n"),
        "the workload is pid 1 of its pid namespace: {out}"
    );
    for line in out.stdout.lines().skip(1) {
        let (ns, inside) = line.split_once(' ').unwrap();
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let host = host.to_string_lossy();
        match ns {
            // containerd's default spec asks for these...
            "pid" | "mnt" | "net" | "ipc" | "uts" => {
                assert_ne!(inside, host, "{ns} namespace shared with the host")
            }
            // ...and not for these: OCI says the container then stays in the runtime's.
            _ => assert_eq!(
                inside, host,
                "{ns} namespace made although the spec does not ask"
            ),
        }
    }
    // The network namespace is empty: only a loopback.
    let c2 = h.container("netns");
    let out = c2.run(&["ls", "/sys/class/net"]);
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["lo"],
        "{out}"
    );
    c.assert_no_leaks();
    c2.assert_no_leaks();
}

#[test]
fn hostname_from_the_spec() {
    let h = harness!();
    let host_before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let c = h.container("hostname");
    let mut spec = c.spec(&["sh", "-c", "hostname; cat /proc/sys/kernel/hostname"]);
    spec["hostname"] = "strata-box".into();
    let out = c.run_spec(&spec, &[]);
    assert!(out.success(), "{out}\n{}", c.log());
    assert_eq!(out.stdout, "strata-box\nstrata-box\n", "{out}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_before
    );
    c.assert_no_leaks();
}

#[test]
fn user_and_groups_from_the_spec() {
    let h = harness!();
    let c = h.container("user");
    let mut spec = c.spec(&[
        "sh",
        "-c",
        "id -u; id -g; id -G; touch /root/x 2>/dev/null && echo wrote-root || echo no-write",
    ]);
    spec["process"]["user"] =
        serde_json::json!({ "uid": 1000, "gid": 1000, "additionalGids": [2000] });
    let out = c.run_spec(&spec, &[]);
    assert!(out.success(), "{out}\n{}", c.log());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"1000"), "uid: {out}");
    assert_eq!(lines.get(1), Some(&"1000"), "gid: {out}");
    let groups: BTreeSet<&str> = lines.get(2).unwrap_or(&"").split_whitespace().collect();
    assert!(
        groups.contains("2000"),
        "additional gid 2000 missing: {out}"
    );
    assert!(
        !groups.contains("0"),
        "root's group leaked into the user's groups: {out}"
    );
    assert_eq!(
        lines.get(3),
        Some(&"no-write"),
        "uid 1000 wrote into root's home: {out}"
    );
    c.assert_no_leaks();
}

#[test]
fn only_the_default_devices() {
    let h = harness!();
    let c = h.container("devices");
    let script = "ls /dev; echo ---; \
        echo x > /dev/null && echo null-ok; \
        head -c 4 /dev/zero | wc -c; head -c 16 /dev/urandom | wc -c; \
        echo x > /dev/full 2>/dev/null || echo full-enospc; \
        test -e /dev/mem || echo no-mem; test -e /dev/sda || echo no-sda; test -e /dev/kmsg || echo no-kmsg; \
        mknod /tmp/mem c 1 1 && (head -c 1 /tmp/mem >/dev/null 2>&1 && echo MEM-READABLE || echo mem-denied); \
        mknod /tmp/sda b 8 0 && (head -c 1 /tmp/sda >/dev/null 2>&1 && echo SDA-READABLE || echo sda-denied)";
    let out = c.run(&["sh", "-c", script]);
    assert!(out.success(), "{out}");
    let (listing, checks) = out.stdout.split_once("---\n").unwrap();
    let allowed: BTreeSet<&str> = [
        "console", "core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm",
        "stderr", "stdin", "stdout", "tty", "urandom", "zero",
    ]
    .into();
    let extra: Vec<&str> = listing
        .split_whitespace()
        .filter(|d| !allowed.contains(d))
        .collect();
    assert!(
        extra.is_empty(),
        "devices beyond the default set: {extra:?}"
    );
    for d in ["null", "zero", "full", "random", "urandom", "tty", "ptmx"] {
        assert!(
            listing.split_whitespace().any(|x| x == d),
            "/dev/{d} missing: {listing}"
        );
    }
    let checks: Vec<&str> = checks.lines().map(str::trim).collect();
    assert_eq!(
        checks,
        [
            "null-ok",
            "4",
            "16",
            "full-enospc",
            "no-mem",
            "no-sda",
            "no-kmsg",
            "mem-denied",
            "sda-denied"
        ],
        "{out}"
    );
    c.assert_no_leaks();
}

#[test]
fn rlimits_masked_and_readonly_paths() {
    let h = harness!();
    // Masked paths (containerd's default spec) that have content on this host.
    assert!(!std::fs::read("/proc/timer_list").unwrap().is_empty());
    assert!(std::fs::read_dir("/sys/firmware").unwrap().next().is_some());
    let c = h.container("paths");
    let script = "echo nofile=$(ulimit -n); echo timer_list=$(wc -c < /proc/timer_list); \
        echo firmware=$(ls -A /sys/firmware 2>/dev/null | wc -l); \
        echo 1 > /proc/sysrq-trigger 2>/dev/null && echo SYSRQ-WRITABLE || echo sysrq-ro; \
        echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo PROCSYS-WRITABLE || echo procsys-ro";
    let out = c.run(&["sh", "-c", script]);
    assert!(out.success(), "{out}");
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [
            "nofile=1024",
            "timer_list=0",
            "firmware=0",
            "sysrq-ro",
            "procsys-ro"
        ],
        "{out}"
    );
    c.assert_no_leaks();
}

#[test]
fn cgroup_limits_are_applied() {
    let h = harness!();
    let c = h.container("limits");
    c.start_workload(
        &[
            "--memory-limit",
            "100663296",
            "--cpu-quota",
            "50000",
            "--cpu-period",
            "100000",
            "--cpu-shares",
            "512",
        ],
        &Workload::new().sleep(),
    );
    let pid = c.pid().unwrap();
    assert_eq!(cgroups::memory_limit(pid), Some(100_663_296));
    match cgroups::read(pid, "cpu", &["cpu.cfs_quota_us"]) {
        Some(q) => {
            assert_eq!(q, "50000");
            assert_eq!(
                cgroups::read(pid, "cpu", &["cpu.cfs_period_us"]).as_deref(),
                Some("100000")
            );
            assert_eq!(
                cgroups::read(pid, "cpu", &["cpu.shares"]).as_deref(),
                Some("512")
            );
        }
        None => {
            let max = cgroups::read(pid, "cpu", &["cpu.max"]).expect("a cpu cgroup (v1 or v2)");
            assert_eq!(max, "50000 100000");
        }
    }
    // The device cgroup (v1) or its eBPF replacement (v2) is checked by only_the_default_devices.
    c.remove_and_check();
}

#[test]
fn seccomp_profile_is_applied() {
    let h = harness!();
    let c = h.container("seccomp");
    let out = c.run_with(
        &["--seccomp"],
        &[
            "sh",
            "-c",
            "grep -E '^Seccomp(_filters)?:' /proc/self/status",
        ],
        None,
    );
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.contains("Seccomp:\t2"),
        "no seccomp filter installed: {out}"
    );
    c.assert_no_leaks();
    let c = h.container("noseccomp");
    let out = c.run(&["grep", "^Seccomp:", "/proc/self/status"]);
    assert_eq!(
        out.stdout.trim(),
        "Seccomp:\t0",
        "the spec asks for no filter: {out}"
    );
    c.assert_no_leaks();
}

#[test]
fn loopback_is_up_in_a_new_network_namespace() {
    // runc brings `lo` up in a network namespace it creates; workloads rely on 127.0.0.1.
    // The client reads a file, not `echo hi |`: busybox nc exits at the server's end of
    // stream (the server's stdin is /dev/null, so it shuts its side at once), and a piped
    // `echo` may not have written yet by then, which sent nothing one run in five.
    let h = harness!();
    let c = h.container("loopback");
    let script = "cat /sys/class/net/lo/flags; \
        ping -c1 -W2 127.0.0.1 >/dev/null 2>&1 && echo ping-ok || echo ping-failed; \
        timeout 10 nc -l -p 7777 > /tmp/got & \
        echo hi > /tmp/msg; \
        i=0; while [ $i -lt 50 ]; do nc 127.0.0.1 7777 < /tmp/msg 2>/dev/null && break; \
        i=$((i+1)); sleep 0.1; done; wait; cat /tmp/got";
    let out = c.run(&["sh", "-c", script]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let flags =
        u32::from_str_radix(lines.first().unwrap_or(&"").trim_start_matches("0x"), 16).unwrap_or(0);
    assert_eq!(flags & 1, 1, "lo is down (IFF_UP not set): {out}");
    assert_eq!(lines.get(1), Some(&"ping-ok"), "{out}");
    assert_eq!(lines.get(2), Some(&"hi"), "TCP over 127.0.0.1: {out}");
    c.assert_no_leaks();
}

/// The static guest agent `scripts/build-initramfs` built (it has a `--vsock-probe` mode).
fn guest_agent_binary() -> std::path::PathBuf {
    let dir = std::env::var_os("STRATA_GUEST_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/cache/strata/target-guest".into());
    dir.join("x86_64-unknown-linux-gnu/release/strata-guest-agent")
}

/// In a VM the guest is hostile: a container process that reaches the guest agent's port
/// through the guest's own vsock (loopback CID 1, or the guest's CID 3) must be refused before
/// any call is answered; only the host (CID 2) is served.
#[test]
fn a_container_cannot_reach_the_guest_agent() {
    let h = harness!();
    if h.processes_on_the_host() {
        harness::not_applicable(
            "a_container_cannot_reach_the_guest_agent",
            "no guest agent: the target runs containers as host processes",
        );
        return;
    }
    let probe = guest_agent_binary();
    assert!(
        probe.exists(),
        "{} is missing: scripts/build-initramfs builds it",
        probe.display()
    );
    let c = h.container("agent-probe");
    let mount = format!(
        "type=bind,src={},dst=/strata-probe,options=rbind:ro",
        probe.display()
    );
    for addr in ["vsock://1:1024", "vsock://3:1024"] {
        let out = c.run_with(
            &["--mount", &mount],
            &["/strata-probe", "--vsock-probe", addr],
            None,
        );
        // Connected (the agent listens there), then closed before `Version` was answered:
        // refused by the agent, not a port nobody listens on (which fails at connect).
        assert!(
            out.success()
                && out.stdout.starts_with("refused")
                && out.stdout.contains("agent call Version failed"),
            "a container reached the guest agent at {addr}, or the probe did not reach it: \
             {out}\n{}",
            c.log()
        );
    }
    c.assert_no_leaks();
}

/// A container in a network namespace that the host made and wired as CNI's bridge plugin
/// does (`ctr run --with-ns network:PATH`, what CRI hands a runtime): it has the namespace's
/// address on `eth0`, reaches the host through its default route, and the host reaches it.
/// Under microvm the namespace's veth is mirrored to the VM with tc, and the guest gets its
/// address; afterwards nothing of that (a tap, an ingress qdisc) is left in the namespace.
#[test]
fn the_pod_network_namespace_is_reachable_both_ways() {
    use std::io::Read;
    let h = harness!();
    let net = strata_tests::netns::TestNet::new().expect("making a test network");
    let listener = std::net::TcpListener::bind((net.gateway.as_str(), 0)).expect("listening");
    let port = listener.local_addr().unwrap().port();
    let c = h.container("podnet");
    let ns = format!("network:{}", net.path().display());
    let script = format!(
        "echo from-pod > /tmp/msg; echo hello-from-pod > /tmp/reply; \
         i=0; while [ $i -lt 300 ]; do nc {gw} {port} < /tmp/msg && break; \
         i=$((i+1)); sleep 0.2; done; \
         while true; do nc -l -p 7777 < /tmp/reply; done",
        gw = net.gateway
    );
    c.start(&["--with-ns", &ns], &["sh", "-c", &script]);

    // The pod reaches the host.
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + h.ctr_timeout();
    let (mut conn, peer) = loop {
        match listener.accept() {
            Ok(x) => break x,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the pod never connected to {}:{port}\n{}",
                    net.gateway,
                    c.log()
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut got = String::new();
    let _ = conn.read_to_string(&mut got);
    // The pod's nc waits for this side to close before it goes on to listen.
    drop(conn);
    assert_eq!(got, "from-pod\n");
    assert_eq!(
        peer.ip().to_string(),
        net.address,
        "the pod's source address"
    );

    // The host reaches the pod at the namespace's address.
    let mut reply = String::new();
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(
            &format!("{}:7777", net.address).parse().unwrap(),
            std::time::Duration::from_secs(5),
        ) {
            s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .unwrap();
            // Nothing is sent: the server closes once it has replied, and data arriving after
            // that would reset the connection and could discard the reply.
            reply.clear();
            let _ = s.read_to_string(&mut reply);
            if !reply.is_empty() {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(reply, "hello-from-pod\n", "{}", c.log());

    let out = c.exec("addr", &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(
        out.success() && out.stdout.contains(&format!("{}/24", net.address)),
        "the pod's eth0: {out}"
    );
    let _ = c.kill("SIGKILL");
    assert!(
        c.wait_status("STOPPED", std::time::Duration::from_secs(60)),
        "{}",
        c.log()
    );
    c.remove_and_check();
    assert_eq!(
        net.leftovers(),
        Vec::<String>::new(),
        "left in the pod's network namespace"
    );
}

/// `ctr run --net-host` (a Kubernetes hostNetwork pod): the host tiers run the container in the
/// host's network namespace, as runc does; a VM cannot share it, so microvm refuses the pod at
/// create with the reason and leaves nothing.
#[test]
fn host_network_is_the_hosts_or_refused_with_the_reason() {
    let h = harness!();
    let c = h.container("hostnet");
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let out = c.run_with(&["--net-host"], &["readlink", "/proc/self/ns/net"], None);
    if h.processes_on_the_host() {
        assert!(out.success(), "{out}");
        assert_eq!(out.stdout.trim(), host_ns.to_string_lossy(), "{out}");
    } else {
        assert!(!out.success(), "a VM ran a host-network pod: {out}");
        assert!(
            out.stderr.contains("node's network") && out.stderr.contains("hostNetwork"),
            "the reason: {out}"
        );
    }
    c.remove_and_check();
}

/// Under containerd's systemd cgroup driver the sandbox's cgroup path is `slice:prefix:name`.
/// The microvm tier puts the VM's host processes in the directory systemd gives that unit
/// (`kubepods.slice/kubepods-besteffort.slice/<pod>.slice/cri-containerd-<id>.scope`), and the
/// pod slice's memory limit, when below the guest's memory, refuses the pod with the reason
/// and leaves nothing. Only the microvm tier: the other tiers, like runc without systemd,
/// take such a path as the systemd driver's, which needs systemd (this host runs none).
#[test]
fn a_systemd_cgroup_path_holds_the_vm_of_a_pod() {
    let h = harness!();
    let test = "isolation::a_systemd_cgroup_path_holds_the_vm_of_a_pod";
    if h.processes_on_the_host() {
        strata_tests::harness::not_applicable(
            test,
            "the systemd cgroup driver needs systemd, which this host does not run; only the \
             microvm tier maps such a path to cgroupfs itself",
        );
        return;
    }
    let memory = std::path::Path::new("/sys/fs/cgroup/memory");
    if !memory.join("memory.limit_in_bytes").exists() {
        strata_tests::harness::not_applicable(test, "no cgroup v1 memory hierarchy here");
        return;
    }
    let c = h.container("systemd-cg");
    let slice = format!("kubepods-besteffort-podstrata{}.slice", std::process::id());
    let cgroups_path = format!("{slice}:cri-containerd:{}", c.id);
    let pod_dir = memory
        .join("kubepods.slice/kubepods-besteffort.slice")
        .join(&slice);
    let scope = pod_dir.join(format!("cri-containerd-{}.scope", c.id));
    std::fs::create_dir_all(&pod_dir).unwrap();
    let cleanup = || {
        for d in [
            scope.clone(),
            pod_dir.clone(),
            memory.join("kubepods.slice/kubepods-besteffort.slice"),
            memory.join("kubepods.slice"),
        ] {
            let _ = std::fs::remove_dir(d);
        }
    };

    // The kubelet's pod limit below the guest's memory: refused, saying so.
    std::fs::write(
        pod_dir.join("memory.limit_in_bytes"),
        (128u64 << 20).to_string(),
    )
    .unwrap();
    let out = c.try_start(&["--cgroup", &cgroups_path], &["/bin/sleep", "600"]);
    assert!(
        !out.success(),
        "a pod limited below its VM's memory started: {out}"
    );
    assert!(out.stderr.contains("memory limit (128 MiB"), "{out}");
    c.remove_and_check();
    assert!(!scope.exists(), "the refused pod's cgroup is left");

    // Enough memory: the VM's processes are in the unit's cgroup.
    std::fs::write(
        pod_dir.join("memory.limit_in_bytes"),
        (2u64 << 30).to_string(),
    )
    .unwrap();
    c.start(&["--cgroup", &cgroups_path], &["/bin/sleep", "600"]);
    let procs = std::fs::read_to_string(scope.join("cgroup.procs")).unwrap_or_default();
    let in_scope: Vec<u32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
    let vm = c.host_pids();
    assert!(vm.len() >= 3, "the VMM and its helpers: {vm:?}");
    for p in &vm {
        assert!(
            in_scope.contains(p),
            "VM process {p} is not in {}: {in_scope:?}",
            scope.display()
        );
    }
    let out = c.kill("SIGKILL");
    assert!(out.success(), "{out}");
    c.remove_and_check();
    assert!(
        !scope.exists(),
        "the pod's cgroup is left after its removal"
    );
    cleanup();
}
