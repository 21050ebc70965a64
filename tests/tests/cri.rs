//! CRI smoke test: a Kubernetes-style pod through containerd's CRI plugin, as the kubelet would
//! run it, on the handler `strata-<tier>` (`STRATA_TEST_TIER`, native by default), or `runc`
//! with `STRATA_TEST_RUNTIME=runc`, the baseline that proves the test itself right.
//!
//! RunPodSandbox with the handler, two busybox containers in the pod, one shim process for the
//! whole pod, ExecSync, stop, remove, and nothing left behind: processes, mounts, cgroups, the
//! network namespace, the bridge's ports, host-local's leases, containerd's records.
//!
//! Needs root, containerd, runc, busybox-static, containernetworking-plugins, gcc and iproute2;
//! without them each test says why and is skipped, except on CI (`CI=true`), where it fails.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use k8s_cri::v1::{ContainerState, PodSandboxState};
use strata_tests::cmd::poll;
use strata_tests::cri::{self, CriEnv};
use strata_tests::wasi::{self, Workload};
use strata_tests::{leaks, not_applicable, skip, tier_gate, HarnessError, Tier};

fn env(test: &str) -> Option<CriEnv> {
    env_with(test, cri::CriOptions::default())
}

fn env_with(test: &str, options: cri::CriOptions) -> Option<CriEnv> {
    let test = &format!("cri::{test}");
    if let Some(why) = tier_gate(test) {
        not_applicable(test, &why);
        return None;
    }
    match CriEnv::start_with(Path::new(env!("CARGO_BIN_EXE_strata-testenv")), options) {
        Ok(e) => Some(e),
        Err(HarnessError::Missing(why)) => {
            skip(test, &why);
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

/// Polls `check` (a list of what is still wrong) for up to 20 s; panics with the last list.
fn assert_clean(what: &str, mut check: impl FnMut() -> Vec<String>) {
    let mut last = Vec::new();
    let ok = poll(Duration::from_secs(20), || {
        last = check();
        last.is_empty().then_some(())
    });
    assert!(
        ok.is_some(),
        "{what}: left behind:\n  {}",
        last.join("\n  ")
    );
}

#[test]
fn cri_pod_with_two_containers_runs_in_one_shim_and_leaves_nothing() {
    let Some(env) = env("cri_pod_with_two_containers_runs_in_one_shim_and_leaves_nothing") else {
        return;
    };
    let log = |id: &str| env.harness.log_lines(id, 20);
    // On wasm the pod's containers run the contest module: busybox (ELF) would run on the
    // native tier there (docs/wasm.md). A module takes no exec, so the ExecSync checks of the
    // pod's namespaces are for the other tiers; on wasm each container is a wasm runner.
    let wasm = env.handler == Tier::Wasm.cri_handler();
    let in_vm = env.handler == Tier::Microvm.cri_handler();
    if wasm {
        env.import(&wasi::contest_image_builder())
            .expect("importing the contest image");
    }
    cri::run_async(async {
        let mut c = env.client().await.expect("CRI client");
        let pod_config = env.pod_config("strata-smoke", HashMap::new());

        let pod = match c.run_pod(&pod_config, env.handler).await {
            Ok(id) => id,
            Err(s) => panic!(
                "RunPodSandbox with handler {}: {s}\ncontainerd log:\n{}",
                env.handler,
                env.harness.log_lines("", 40)
            ),
        };
        let (status, info) = c.pod_status(&pod).await.expect("PodSandboxStatus");
        assert_eq!(
            status.state,
            PodSandboxState::SandboxReady as i32,
            "{status:?}"
        );
        let pod_ip = status
            .network
            .as_ref()
            .map(|n| n.ip.clone())
            .unwrap_or_default();
        assert!(
            env.in_subnet(&pod_ip),
            "pod IP {pod_ip:?} is not from the test's subnet {}",
            env.subnet
        );
        assert_handler(&env, &info);
        let netns = cri::netns_path(&info).expect("the sandbox's network namespace path");
        let netns_link = cri::ns_link(&netns).expect("the sandbox's netns");
        let sandbox_pid = cri::info_pid(&info).expect("sandbox pid");

        let mut containers = Vec::new();
        for name in ["one", "two"] {
            let mut cfg = env.container_config(name, &["sleep", "3600"]);
            if wasm {
                let argv = Workload::new().sleep().wasi();
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                cfg = env.container_config(name, &argv);
                cfg.image.as_mut().unwrap().image = wasi::CONTEST_IMAGE.into();
            }
            match c.start_container(&pod, &cfg, &pod_config).await {
                Ok(id) => containers.push(id),
                Err(s) => panic!(
                    "starting container {name}: {s}\ncontainerd log:\n{}",
                    log(&pod)
                ),
            }
        }

        // Strata's log lines in containerd's log name the pod and the container (runc's shim
        // logs nothing of the kind).
        let strata = env.shim_binary == strata_tests::harness::STRATA_SHIM;
        for id in containers.iter().filter(|_| strata) {
            let lines = env.harness.log_lines(&format!("id={id}"), 40);
            assert!(
                lines
                    .lines()
                    .any(|l| l.contains("created") && l.contains(&format!("pod={pod}"))),
                "no shim log line names pod {pod} and container {id}:\n{lines}"
            );
        }

        // Both run, in the pod's network and UTS namespaces.
        let mut pids = vec![sandbox_pid];
        for id in &containers {
            let (st, info) = c.container_status(id).await.expect("ContainerStatus");
            assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
            let pid = cri::info_pid(&info).expect("container pid");
            pids.push(pid);
            if wasm {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                assert!(
                    cmdline.starts_with(b"strata-wasm:"),
                    "container {id} is not a wasm runner: {:?}",
                    String::from_utf8_lossy(&cmdline)
                );
                let refused = c.exec_sync(id, &["echo", "hello from the pod"]).await;
                assert!(
                    refused.is_err(),
                    "ExecSync into a wasm container: {refused:?}"
                );
                continue;
            }

            let r = c
                .exec_sync(id, &["echo", "hello from the pod"])
                .await
                .expect("ExecSync");
            assert_eq!(
                (r.exit_code, r.stdout.as_str()),
                (0, "hello from the pod\n"),
                "{r:?}"
            );
            let r = c
                .exec_sync(id, &["sh", "-c", "echo oops >&2; exit 3"])
                .await
                .expect("ExecSync");
            assert_eq!((r.exit_code, r.stderr.as_str()), (3, "oops\n"), "{r:?}");
            if !in_vm {
                // In a VM the pod's namespace holds the tap; the guest's interface (below)
                // has the pod's address.
                let r = c
                    .exec_sync(id, &["readlink", "/proc/self/ns/net"])
                    .await
                    .expect("ExecSync");
                assert_eq!(
                    r.stdout.trim(),
                    netns_link,
                    "container {id} is not in the pod's netns"
                );
            }
            let r = c.exec_sync(id, &["hostname"]).await.expect("ExecSync");
            assert_eq!(r.stdout.trim(), "strata-smoke", "{r:?}");
            let r = c
                .exec_sync(id, &["ip", "-4", "-o", "addr", "show", "eth0"])
                .await
                .expect("ExecSync");
            assert!(
                r.stdout.contains(&format!("inet {pod_ip}/")),
                "eth0 in the pod: {r:?}"
            );
        }

        // One shim for the whole pod, and it is the parent of every process of the pod.
        let shims = env.shim_processes();
        assert_eq!(
            shims.len(),
            1,
            "expected one {} for the pod, found: {shims:#?}",
            env.shim_binary
        );
        let shim_pid = shims[0].0;
        eprintln!(
            "pod {pod} on handler {}: IP {pod_ip}, netns {}, one shim (pid {shim_pid}) for pids {pids:?}",
            env.handler,
            netns.display()
        );
        for pid in &pids {
            assert_eq!(
                cri::ppid(*pid),
                Some(shim_pid),
                "process {pid} of the pod is not a child of the pod's shim {shims:?}"
            );
        }
        assert_eq!(
            env.bridge_ports().len(),
            1,
            "one veth of the pod on the bridge"
        );
        assert_eq!(env.ipam_leases().len(), 1, "one address leased");

        // Stop: every container exits, the network goes.
        c.stop_pod(&pod).await.expect("StopPodSandbox");
        for id in &containers {
            let (st, _) = c.container_status(id).await.expect("ContainerStatus");
            assert_eq!(st.state, ContainerState::ContainerExited as i32, "{st:?}");
        }
        let (status, _) = c.pod_status(&pod).await.expect("PodSandboxStatus");
        assert_eq!(
            status.state,
            PodSandboxState::SandboxNotready as i32,
            "{status:?}"
        );

        c.remove_pod(&pod).await.expect("RemovePodSandbox");
        assert!(!c.list_pods().await.expect("ListPodSandbox").contains(&pod));
        let listed = c.list_containers().await.expect("ListContainers");
        assert!(
            containers.iter().all(|id| !listed.contains(id)),
            "{listed:?}"
        );

        let mut ids: Vec<&str> = vec![pod.as_str()];
        ids.extend(containers.iter().map(String::as_str));
        assert_clean("the pod", || {
            let mut left = leaks::processes(&ids);
            left.extend(leaks::mounts(&ids));
            left.extend(leaks::cgroups(&ids));
            left.extend(leaks::state_dirs(&env.harness, &ids));
            if netns.exists() {
                left.push(format!("network namespace {} still there", netns.display()));
            }
            left.extend(env_leftovers(&env));
            for args in [["containers", "ls", "-q"], ["tasks", "ls", "-q"]] {
                let mut ctr = env.ctr();
                ctr.args(args);
                let out = strata_tests::cmd::run(ctr, None, Duration::from_secs(20)).expect("ctr");
                left.extend(
                    out.stdout
                        .lines()
                        .filter(|l| ids.iter().any(|id| l.contains(id)))
                        .map(|l| format!("containerd still lists {l}")),
                );
            }
            left
        });
    });
    env.delete_bridge().expect("deleting the test's bridge");
    assert!(!env.bridge_exists(), "bridge {} still there", env.bridge);
}

/// A pod of RuntimeClass `strata-<tier>` cannot pick another tier with the annotation: the
/// handler's ConfigPath allows that tier only, and the shim must say so, naming the allowed
/// tiers.
#[test]
fn cri_annotation_cannot_leave_the_runtime_class_tier() {
    let Some(env) = env("cri_annotation_cannot_leave_the_runtime_class_tier") else {
        return;
    };
    if env.runtime_config.is_none() {
        not_applicable(
            "cri::cri_annotation_cannot_leave_the_runtime_class_tier",
            "tests a Strata feature; the suite runs against runc",
        );
        return;
    }
    let tier = Tier::from_env().expect("STRATA_TEST_TIER");
    let other = if tier == Tier::Wasm { "native" } else { "wasm" };
    cri::run_async(async {
        let mut c = env.client().await.expect("CRI client");
        let annotations = HashMap::from([("strata.dev/backend".to_string(), other.to_string())]);
        let pod_config = env.pod_config("strata-escape", annotations);
        let err = match c.run_pod(&pod_config, env.handler).await {
            Ok(id) => {
                let _ = c.stop_pod(&id).await;
                let _ = c.remove_pod(&id).await;
                panic!("a {} pod ran with strata.dev/backend={other}", env.handler);
            }
            Err(s) => s,
        };
        let msg = err.message();
        assert!(
            msg.contains("strata.dev/backend")
                && msg.contains(&format!("allowed backends: {tier}")),
            "the error should name the annotation and the allowed tiers: {msg}"
        );
        assert!(c.list_pods().await.expect("ListPodSandbox").is_empty());
        assert_clean("the refused pod", || env_leftovers(&env));
    });
}

/// The shipped CRI snippet, RuntimeClasses and per-tier configs agree: four handlers, each a
/// RuntimeClass of the same name, each pinning its tier through a config the shim accepts.
#[test]
fn shipped_cri_configs_agree() {
    let configs = cri::configs_dir();
    let read = |name: &str| {
        std::fs::read_to_string(configs.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let snippet: toml::Value =
        toml::from_str(&read("containerd-strata.toml")).expect("containerd-strata.toml");
    let runtimes = snippet
        .get("plugins")
        .and_then(|p| p.get("io.containerd.grpc.v1.cri"))
        .and_then(|c| c.get("containerd"))
        .and_then(|c| c.get("runtimes"))
        .and_then(|r| r.as_table())
        .expect("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes]");
    let mut handlers: Vec<&String> = runtimes.keys().collect();
    handlers.sort();
    assert_eq!(
        handlers,
        [
            "strata-microvm",
            "strata-native",
            "strata-sentry",
            "strata-wasm"
        ]
    );

    let classes = read("kubernetes/runtimeclasses.yaml");
    for (handler, rt) in runtimes {
        let tier = handler.trim_start_matches("strata-");
        assert_eq!(
            rt["runtime_type"].as_str(),
            Some("io.containerd.strata.v2"),
            "{handler}"
        );
        let annotations = rt["pod_annotations"].as_array().expect("pod_annotations");
        assert!(
            annotations
                .iter()
                .any(|a| a.as_str() == Some("strata.dev/*")),
            "{handler}"
        );
        let path = rt["options"]["ConfigPath"]
            .as_str()
            .expect("options.ConfigPath");
        assert_eq!(path, format!("/etc/strata/strata-{tier}.toml"), "{handler}");

        let file = configs.join(format!("strata-{tier}.toml"));
        let text = read(&format!("strata-{tier}.toml"));
        let cfg = strata_shim::config::Config::parse(&text, &file)
            .unwrap_or_else(|e| panic!("the shim rejects {}: {e}", file.display()));
        assert_eq!(cfg.default_backend.as_str(), tier);
        let allowed: Vec<&str> = cfg.allowed_backends.iter().map(|b| b.as_str()).collect();
        assert_eq!(allowed, [tier], "{handler} must pin its tier");

        assert!(
            classes.contains(&format!("  name: {handler}\n"))
                && classes.contains(&format!("handler: {handler}\n")),
            "runtimeclasses.yaml has no RuntimeClass {handler}"
        );
    }
    assert_eq!(classes.matches("kind: RuntimeClass").count(), 4);
    // strata-microvm's overhead covers at least its VM's default guest memory (the pod's
    // cgroup holds the VM; below that the tier refuses the pod).
    let microvm = classes
        .split("---")
        .find(|c| c.contains("handler: strata-microvm"))
        .expect("the strata-microvm RuntimeClass");
    let mib: u64 = microvm
        .lines()
        .find_map(|l| l.trim().strip_prefix("memory: "))
        .and_then(|v| v.trim_matches('"').strip_suffix("Mi")?.parse().ok())
        .expect("strata-microvm has an overhead memory in Mi");
    let guest = u64::from(strata_microvm::settings::Settings::default().memory_mib);
    assert!(
        mib > guest,
        "strata-microvm's overhead ({mib} MiB) does not cover its guest memory ({guest} MiB)"
    );

    let example = configs.join("strata.toml");
    strata_shim::config::Config::parse(&read("strata.toml"), &example)
        .unwrap_or_else(|e| panic!("the shim rejects {}: {e}", example.display()));
}

/// Pods on the pod network, as Kubernetes users expect of any RuntimeClass: two pods on the
/// handler under test and one on `runc`, on the same bridge; each pod reaches each other pod
/// by its IP (a TCP server in each answers with its pod's hostname), and the node reaches
/// each. Under microvm the two pods are VMs, their addresses the guests'.
#[test]
fn cri_pods_reach_each_other_and_the_node_reaches_them() {
    use std::io::Read;
    let Some(env) = env("cri_pods_reach_each_other_and_the_node_reaches_them") else {
        return;
    };
    const SERVE: &str = "hostname > /tmp/name; while true; do nc -l -p 7777 < /tmp/name; done";
    cri::run_async(async {
        let mut c = env.client().await.expect("CRI client");
        // (hostname, handler, pod id, container id, IP)
        let mut pods = Vec::new();
        for (name, handler) in [
            ("podnet-a", env.handler),
            ("podnet-b", env.handler),
            ("podnet-runc", "runc"),
        ] {
            let pod_config = env.pod_config(name, HashMap::new());
            let pod = run_pod(&mut c, &env, &pod_config, handler).await;
            let (status, _) = c.pod_status(&pod).await.expect("PodSandboxStatus");
            let ip = status.network.map(|n| n.ip).unwrap_or_default();
            assert!(
                env.in_subnet(&ip),
                "pod {name}: IP {ip:?} not in {}",
                env.subnet
            );
            let cfg = env.container_config("server", &["sh", "-c", SERVE]);
            let ctr = start(&mut c, &env, &pod, &cfg, &pod_config).await;
            pods.push((name, handler, pod, ctr, ip));
        }
        eprintln!(
            "pods: {:?}",
            pods.iter()
                .map(|(n, h, _, _, ip)| format!("{n} ({h}) at {ip}"))
                .collect::<Vec<_>>()
        );

        // Each pod reaches each other pod.
        for (from, _, _, ctr, _) in &pods {
            for (to, _, _, _, ip) in &pods {
                if from == to {
                    continue;
                }
                let script = format!(
                    "i=0; while [ $i -lt 100 ]; do r=$(nc {ip} 7777 </dev/null) && \
                     [ -n \"$r\" ] && echo \"$r\" && exit 0; i=$((i+1)); sleep 0.2; done; exit 1"
                );
                let r = c
                    .exec_sync(ctr, &["sh", "-c", &script])
                    .await
                    .expect("ExecSync");
                assert_eq!(
                    (r.exit_code, r.stdout.trim()),
                    (0, *to),
                    "{from} -> {to} at {ip}: {r:?}"
                );
            }
        }

        // The node reaches each pod.
        for (name, _, _, _, ip) in &pods {
            let addr: std::net::SocketAddr = format!("{ip}:7777").parse().unwrap();
            let got = poll(Duration::from_secs(30), || {
                let mut s =
                    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
                let mut got = String::new();
                let _ = s.read_to_string(&mut got);
                (!got.is_empty()).then_some(got)
            });
            assert_eq!(
                got.as_deref().map(str::trim),
                Some(*name),
                "the node -> {name} at {ip}"
            );
        }

        for (_, _, pod, _, _) in &pods {
            c.stop_pod(pod).await.expect("StopPodSandbox");
            c.remove_pod(pod).await.expect("RemovePodSandbox");
        }
        let ids: Vec<&str> = pods
            .iter()
            .flat_map(|(_, _, p, c, _)| [p.as_str(), c.as_str()])
            .collect();
        assert_gone(&env, &ids);
    });
}

/// Volumes as the kubelet sets them up, in a pod of two containers: an emptyDir on disk and
/// one in memory (a tmpfs the kubelet mounts on the host) shared by both, `/dev/shm` shared by
/// both, a configMap directory and a secret (on tmpfs) written the kubelet's way (files behind a
/// `..data` symlink that an update swaps) whose updates the containers see, a read-only hostPath that refuses
/// writes, and a hostPath file.
#[test]
fn cri_volumes_as_the_kubelet_mounts_them() {
    let Some(env) = env("cri_volumes_as_the_kubelet_mounts_them") else {
        return;
    };
    let vols = env.dir.join("volumes");
    let (disk, memory, config, secret, ro, file) = (
        vols.join("empty-disk"),
        vols.join("empty-memory"),
        vols.join("config"),
        vols.join("secret"),
        vols.join("readonly"),
        vols.join("hostfile"),
    );
    for d in [&disk, &memory, &config, &secret, &ro] {
        std::fs::create_dir_all(d).unwrap();
    }
    // The memory emptyDir and the secret are tmpfs mounts the kubelet makes on the host.
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let mut _unmount = Vec::new();
    for d in [&memory, &secret] {
        nix::mount::mount(
            Some("tmpfs"),
            d,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=8m"),
        )
        .expect("mounting a tmpfs volume");
        _unmount.push(Unmount(d.clone()));
    }
    // The kubelet's atomic writer: <dir>/..<ts>/key, ..data -> ..<ts>, key -> ..data/key.
    let atomic_write = |dir: &Path, version: &str| {
        let ts = dir.join(format!("..{version}"));
        std::fs::create_dir_all(&ts).unwrap();
        std::fs::write(ts.join("key"), format!("{version}\n")).unwrap();
        let tmp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        let key = dir.join("key");
        if std::fs::symlink_metadata(&key).is_err() {
            std::os::unix::fs::symlink("..data/key", &key).unwrap();
        }
    };
    atomic_write(&config, "v1");
    atomic_write(&secret, "s1");
    std::fs::write(ro.join("fixed"), "fixed\n").unwrap();
    std::fs::write(&file, "host-file\n").unwrap();

    let mount = |host: &std::path::Path, path: &str, readonly: bool| k8s_cri::v1::Mount {
        container_path: path.into(),
        host_path: host.display().to_string(),
        readonly,
        ..Default::default()
    };
    cri::run_async(async {
        let mut c = env.client().await.expect("CRI client");
        let pod_config = env.pod_config("volumes", HashMap::new());
        let pod = run_pod(&mut c, &env, &pod_config, env.handler).await;
        let mut ids = Vec::new();
        for name in ["writer", "reader"] {
            let mut cfg = env.container_config(name, &["sleep", "3600"]);
            cfg.mounts = vec![
                mount(&disk, "/data", false),
                mount(&memory, "/cache", false),
                mount(&config, "/etc/config", true),
                mount(&secret, "/etc/secret", true),
                mount(&ro, "/ro", true),
                mount(&file, "/etc/host-file", true),
            ];
            ids.push(start(&mut c, &env, &pod, &cfg, &pod_config).await);
        }
        let (writer, reader) = (&ids[0], &ids[1]);

        let r = sh(
            &mut c,
            writer,
            "echo disk > /data/f && echo mem > /cache/f && echo shm > /dev/shm/f && echo ok",
        )
        .await;
        assert_eq!(
            (r.exit_code, r.stdout.as_str()),
            (0, "ok\n"),
            "writer: {r:?}"
        );
        let r = sh(
            &mut c,
            reader,
            "cat /data/f /cache/f /dev/shm/f /etc/config/key /etc/secret/key /ro/fixed /etc/host-file",
        )
        .await;
        assert_eq!(
            (r.exit_code, r.stdout.as_str()),
            (0, "disk\nmem\nshm\nv1\ns1\nfixed\nhost-file\n"),
            "the reader sees the writer's files and the volumes: {r:?}"
        );
        // The disk emptyDir is the host's directory; the memory one is the host's tmpfs.
        assert_eq!(std::fs::read_to_string(disk.join("f")).unwrap(), "disk\n");
        assert_eq!(std::fs::read_to_string(memory.join("f")).unwrap(), "mem\n");

        let r = sh(&mut c, reader, "echo x > /ro/new; echo rc=$?").await;
        assert!(
            r.stdout.contains("rc=1") && r.stderr.contains("Read-only file system"),
            "a write to a read-only mount: {r:?}"
        );
        assert!(!ro.join("new").exists(), "the read-only mount was written");

        atomic_write(&config, "v2");
        atomic_write(&secret, "s2");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = sh(&mut c, reader, "cat /etc/config/key /etc/secret/key").await;
            if r.stdout == "v2\ns2\n" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the configMap and secret updates are not seen: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        remove_and_check(&mut c, &env, &pod, &ids).await;
    });
    // The volumes are the kubelet's: still there, with what the pod wrote.
    assert_eq!(std::fs::read_to_string(disk.join("f")).unwrap(), "disk\n");
}

async fn sh(c: &mut cri::Cri, id: &str, script: &str) -> cri::ExecResult {
    c.exec_sync(id, &["sh", "-c", script])
        .await
        .expect("ExecSync")
}

/// The pod's cgroup, which the kubelet limits (its containers' limits plus the RuntimeClass's
/// overhead), holds every host process that serves the pod (the shim aside, as under runc): the
/// containers on the host tiers, the VM's QEMU, virtiofsd and vsock device under microvm, whose
/// memory (guest memory included) is then charged to the pod. Under microvm a pod whose limit
/// is below its VM's guest memory is refused with the reason, leaving nothing.
#[test]
fn cri_the_pod_cgroup_holds_what_serves_the_pod() {
    let Some(env) = env("cri_the_pod_cgroup_holds_what_serves_the_pod") else {
        return;
    };
    let in_vm = env.handler == Tier::Microvm.cri_handler();
    // The pod's cgroup as the kubelet makes it before RunPodSandbox, with its limit.
    let pod_cgroup = |cfg: &k8s_cri::v1::PodSandboxConfig, limit: u64| {
        let parent = cfg.linux.as_ref().unwrap().cgroup_parent.clone();
        let dir = Path::new("/sys/fs/cgroup/memory").join(parent.trim_start_matches('/'));
        if !Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
            return None;
        }
        std::fs::create_dir_all(&dir).expect("creating the pod's memory cgroup");
        std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string())
            .expect("limiting the pod's memory cgroup");
        Some(dir)
    };
    cri::run_async(async {
        let mut c = env.client().await.expect("CRI client");
        let pod_config = env.pod_config("limited", HashMap::new());
        let Some(dir) = pod_cgroup(&pod_config, 1 << 30) else {
            skip(
                "cri::cri_the_pod_cgroup_holds_what_serves_the_pod",
                "this host has no cgroup v1 memory hierarchy (the test limits the pod there)",
            );
            return;
        };
        let pod = run_pod(&mut c, &env, &pod_config, env.handler).await;
        let cfg = env.container_config("work", &["sleep", "3600"]);
        let ctr = start(&mut c, &env, &pod, &cfg, &pod_config).await;
        let shims = env.shim_processes();
        assert_eq!(shims.len(), 1, "{shims:?}");
        let shim = shims[0].0;
        let served: Vec<u32> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&p| cri::ppid(p) == Some(shim))
            .collect();
        assert!(
            served.len() >= if in_vm { 3 } else { 2 },
            "the shim's children: {served:?}"
        );
        let mut in_pod: Vec<u32> = Vec::new();
        for sub in walk(&dir) {
            let text = std::fs::read_to_string(sub.join("cgroup.procs")).unwrap_or_default();
            in_pod.extend(text.lines().filter_map(|l| l.parse::<u32>().ok()));
        }
        for p in &served {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            assert!(
                in_pod.contains(p),
                "process {p} ({}) serves the pod but is not in its cgroup {}",
                String::from_utf8_lossy(&cmd).replace('\0', " "),
                dir.display()
            );
        }
        if in_vm {
            // The guest's memory that the VM touched is charged to the pod.
            let usage: u64 = std::fs::read_to_string(dir.join("memory.usage_in_bytes"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let shmem: u64 = served
                .iter()
                .filter_map(|p| {
                    let s = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
                    s.lines()
                        .find_map(|l| l.strip_prefix("RssShmem:"))?
                        .trim()
                        .trim_end_matches(" kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .sum::<u64>()
                * 1024;
            assert!(
                shmem > 0 && usage >= shmem,
                "the pod's memory usage {usage} does not cover the guest memory its VM touched ({shmem})"
            );
        }
        remove_and_check(&mut c, &env, &pod, &[ctr]).await;

        if in_vm {
            let small = env.pod_config("too-small", HashMap::new());
            let small_dir = pod_cgroup(&small, 64 << 20).unwrap();
            let err = c
                .run_pod(&small, env.handler)
                .await
                .expect_err("a pod whose limit is below its VM's memory ran");
            assert!(
                err.message().contains("memory limit (64 MiB")
                    && err.message().contains("guest memory"),
                "{err:?}"
            );
            assert_clean("the refused pod", || {
                let mut left = env_leftovers(&env);
                left.extend(
                    walk(&small_dir)
                        .into_iter()
                        .skip(1)
                        .map(|d| format!("cgroup {}", d.display())),
                );
                left
            });
        }
    });
}

/// `dir` and every cgroup beneath it.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = std::fs::read_dir(&out[i]) {
            out.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        i += 1;
    }
    out
}

/// What the kubelet reads of a container's end, as for any RuntimeClass: its output in the CRI
/// log file (`crictl logs`), its exit code, and `OOMKilled` for a container killed at its
/// memory limit (under microvm: the guest's cgroup, reported by the agent's OOM event).
#[test]
fn cri_logs_exit_codes_and_oom_kills_reach_the_kubelet() {
    let Some(env) = env("cri_logs_exit_codes_and_oom_kills_reach_the_kubelet") else {
        return;
    };
    cri::run_async(async {
        let mut c = env.client().await.expect("CRI client");
        let pod_config = env.pod_config("ends", HashMap::new());
        let pod = run_pod(&mut c, &env, &pod_config, env.handler).await;
        let logger = env.container_config(
            "logger",
            &["sh", "-c", "echo out-line; echo err-line >&2; exit 3"],
        );
        // The hog reaches its limit at once. runc's shim watches for OOM only after the task
        // has started, and misses a kill that comes first: containerd then says "Error"
        // (containerd/containerd#8180, #12260; seen twice in a row on containerd 2.1 in
        // session 13's CI simulation). Strata's tiers must report even that one; the runc
        // baseline gets a second first, so that it checks the rest of the test.
        let dd = "dd if=/dev/zero of=/dev/null bs=64M count=1";
        let hog_cmd = if env.handler == "runc" {
            format!("sleep 1; exec {dd}")
        } else {
            format!("exec {dd}")
        };
        let mut hog = env.container_config("hog", &["sh", "-c", &hog_cmd]);
        hog.linux = Some(k8s_cri::v1::LinuxContainerConfig {
            resources: Some(k8s_cri::v1::LinuxContainerResources {
                memory_limit_in_bytes: 32 << 20,
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut ids = Vec::new();
        for cfg in [&logger, &hog] {
            ids.push(start(&mut c, &env, &pod, cfg, &pod_config).await);
        }
        let mut ends = Vec::new();
        for id in &ids {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let st = loop {
                let (st, _) = c.container_status(id).await.expect("ContainerStatus");
                if st.state == ContainerState::ContainerExited as i32 {
                    break st;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{id} did not exit: {st:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            ends.push((st.exit_code, st.reason.clone()));
        }
        assert_eq!(ends[0].0, 3, "the logger's exit: {ends:?}");
        assert_eq!(ends[1], (137, "OOMKilled".to_string()), "the hog's end");

        let log_dir = Path::new(&pod_config.log_directory);
        let log = std::fs::read_to_string(log_dir.join(&logger.log_path)).unwrap_or_default();
        // The CRI log format: "<RFC 3339 time> <stream> <F|P> <line>".
        let lines: Vec<(String, String)> = log
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(4, ' ');
                let (_, stream, _, text) = (f.next()?, f.next()?, f.next()?, f.next()?);
                Some((stream.to_string(), text.to_string()))
            })
            .collect();
        for want in [("stdout", "out-line"), ("stderr", "err-line")] {
            assert!(
                lines.iter().any(|(s, t)| s == want.0 && t == want.1),
                "{want:?} not in the CRI log:\n{log}"
            );
        }

        remove_and_check(&mut c, &env, &pod, &ids).await;
    });
}

/// Every key path of a TOML document with its value (`a.b.c = value`), tables flattened.
fn key_paths(doc: &toml::Table) -> Vec<(String, toml::Value)> {
    fn walk(t: &toml::Table, at: &str, out: &mut Vec<(String, toml::Value)>) {
        for (k, v) in t {
            let path = format!("{at}{k}");
            match v {
                toml::Value::Table(t) => walk(t, &format!("{path}."), out),
                v => out.push((path, v.clone())),
            }
        }
    }
    let mut out = Vec::new();
    walk(doc, "", &mut out);
    out
}

/// The containerd under test on a node's own config: its `containerd config default`, with
/// the handlers merged by `strata install` (the other CRI tests start from a config holding
/// only the handlers). Only what the test daemon must own differs from the default (its
/// root, state, sockets, disabled plugins, CNI directories, sandbox image, registry path,
/// `restrict_oom_score_adj`); a pod on the handler under test runs, answers and leaves nothing.
#[test]
fn cri_pod_on_containerds_default_config_as_install_merged_it() {
    let test = "cri_pod_on_containerds_default_config_as_install_merged_it";
    let Some(env) = env_with(
        test,
        cri::CriOptions {
            default_config: true,
            ..Default::default()
        },
    ) else {
        return;
    };
    let wasm = env.handler == Tier::Wasm.cri_handler();
    if wasm {
        env.import(&wasi::contest_image_builder())
            .expect("importing the contest image");
    }

    // The daemon runs the default config: each of its settings is there, with the default's
    // value unless the test daemon owns it.
    let owned = [
        "root",
        "state",
        "disabled_plugins",
        "grpc.address",
        "ttrpc.address",
        "debug.level",
        "plugins.io.containerd.internal.v1.opt.path",
        "restrict_oom_score_adj",
        "sandbox_image",
        "pinned_images.sandbox",
        "cni.conf_dir",
        "cni.bin_dir",
        "cni.bin_dirs",
        "registry.config_path",
        "enable_selinux",
    ];
    let default = env
        .harness
        .info
        .containerd
        .command("containerd")
        .args(["config", "default"])
        .output()
        .expect("containerd config default");
    let default: toml::Table = String::from_utf8_lossy(&default.stdout)
        .parse()
        .expect("the default config parses");
    let running: toml::Table = std::fs::read_to_string(&env.harness.info.config)
        .expect("the daemon's config")
        .parse()
        .expect("the daemon's config parses");
    let running = key_paths(&running);
    let mut differ = Vec::new();
    for (path, value) in key_paths(&default) {
        let owned = owned
            .iter()
            .any(|o| path == *o || path.ends_with(&format!(".{o}")));
        match running.iter().find(|(p, _)| *p == path) {
            None => differ.push(format!("{path}: missing")),
            Some((_, v)) if !owned && *v != value => {
                differ.push(format!("{path}: {v} instead of {value}"))
            }
            Some(_) => {}
        }
    }
    assert!(
        differ.is_empty(),
        "the daemon's config is not containerd's default:\n  {}",
        differ.join("\n  ")
    );
    let handlers = running
        .iter()
        .filter(|(p, _)| p.contains(".runtimes.strata-") && p.ends_with(".runtime_type"))
        .count();
    assert_eq!(
        handlers, 4,
        "install's four handlers in the daemon's config"
    );

    cri::run_async(async {
        let mut c = env.client().await.expect("CRI client");
        let pod_config = env.pod_config("strata-default-config", HashMap::new());
        let pod = run_pod(&mut c, &env, &pod_config, env.handler).await;
        let (status, info) = c.pod_status(&pod).await.expect("PodSandboxStatus");
        assert_eq!(
            status.state,
            PodSandboxState::SandboxReady as i32,
            "{status:?}"
        );
        assert_handler(&env, &info);
        let cfg = if wasm {
            let argv = Workload::new().sleep().wasi();
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let mut cfg = env.container_config("work", &argv);
            cfg.image.as_mut().unwrap().image = wasi::CONTEST_IMAGE.into();
            cfg
        } else {
            env.container_config("work", &["sleep", "3600"])
        };
        let id = start(&mut c, &env, &pod, &cfg, &pod_config).await;
        let (st, _) = c.container_status(&id).await.expect("ContainerStatus");
        assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
        if !wasm {
            let r = c.exec_sync(&id, &["hostname"]).await.expect("ExecSync");
            assert_eq!(
                (r.exit_code, r.stdout.trim()),
                (0, "strata-default-config"),
                "{r:?}"
            );
        }
        remove_and_check(&mut c, &env, &pod, &[id]).await;
    });
}

/// The sandbox runs on the env's handler, whose options (Strata's config path) reach
/// containerd as runtimeoptions.v1.Options.
fn assert_handler(env: &CriEnv, info: &serde_json::Value) {
    assert_eq!(info["runtimeHandler"], env.handler, "{info}");
    if let Some(cfg) = &env.runtime_config {
        assert_eq!(
            info.pointer("/runtimeOptions/config_path")
                .and_then(|v| v.as_str()),
            Some(cfg.to_string_lossy().as_ref()),
            "runtime options of the sandbox: {info}"
        );
    }
}

/// RunPodSandbox on `handler`; panics with containerd's log.
async fn run_pod(
    c: &mut cri::Cri,
    env: &CriEnv,
    cfg: &k8s_cri::v1::PodSandboxConfig,
    handler: &str,
) -> String {
    let name = cfg
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    c.run_pod(cfg, handler).await.unwrap_or_else(|s| {
        panic!(
            "RunPodSandbox {name} with handler {handler}: {s}\ncontainerd log:\n{}",
            env.harness.log_lines("", 40)
        )
    })
}

/// CreateContainer + StartContainer in `pod`; panics with the pod's log lines.
async fn start(
    c: &mut cri::Cri,
    env: &CriEnv,
    pod: &str,
    cfg: &k8s_cri::v1::ContainerConfig,
    pod_config: &k8s_cri::v1::PodSandboxConfig,
) -> String {
    let name = cfg
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    c.start_container(pod, cfg, pod_config)
        .await
        .unwrap_or_else(|s| {
            panic!(
                "starting {name} in {pod}: {s}\ncontainerd log:\n{}",
                env.harness.log_lines(pod, 40)
            )
        })
}

/// StopPodSandbox and RemovePodSandbox, then nothing of the pod and its `containers` is left:
/// processes, mounts, cgroups, state directories, its network namespace.
async fn remove_and_check(c: &mut cri::Cri, env: &CriEnv, pod: &str, containers: &[String]) {
    c.stop_pod(pod).await.expect("StopPodSandbox");
    c.remove_pod(pod).await.expect("RemovePodSandbox");
    let mut ids: Vec<&str> = vec![pod];
    ids.extend(containers.iter().map(String::as_str));
    assert_gone(env, &ids);
}

/// Nothing of the pods and containers `ids` is left: processes, mounts, cgroups, state
/// directories, and nothing of the env's pods ([`env_leftovers`]).
fn assert_gone(env: &CriEnv, ids: &[&str]) {
    assert_clean("the pod", || {
        let mut left = leaks::processes(ids);
        left.extend(leaks::mounts(ids));
        left.extend(leaks::cgroups(ids));
        left.extend(leaks::state_dirs(&env.harness, ids));
        left.extend(env_leftovers(env));
        left
    });
}

/// What the env's pods left that belongs to no one pod: shim processes, the network
/// namespaces its CRI plugin made, ports on its bridge, host-local's leases.
fn env_leftovers(env: &CriEnv) -> Vec<String> {
    let mut left: Vec<String> = env
        .shim_processes()
        .into_iter()
        .map(|(p, c)| format!("shim {p}: {c}"))
        .collect();
    left.extend(
        env.own_netns()
            .into_iter()
            .map(|n| format!("network namespace {n}")),
    );
    left.extend(
        env.bridge_ports()
            .into_iter()
            .map(|p| format!("bridge port {p}")),
    );
    left.extend(
        env.ipam_leases()
            .into_iter()
            .map(|l| format!("host-local lease {l}")),
    );
    left
}

/// A pod's network sysctls (the pod spec's `securityContext.sysctls`; containerd 2.x also sets
/// `net.ipv4.ping_group_range` and `net.ipv4.ip_unprivileged_port_start` on every sandbox) hold
/// in the pod's network namespace and are seen by its containers. Under microvm the pod's
/// namespace is the guest's own, where the agent applies them.
#[test]
fn cri_a_pods_network_sysctls_are_seen_by_its_containers() {
    let Some(env) = env("cri_a_pods_network_sysctls_are_seen_by_its_containers") else {
        return;
    };
    cri::run_async(async {
        let mut c = env.client().await.expect("CRI client");
        let mut pod_config = env.pod_config("sysctls", HashMap::new());
        pod_config.linux.as_mut().unwrap().sysctls = HashMap::from([
            (
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "81".to_string(),
            ),
            ("net.ipv4.ping_group_range".to_string(), "0 7".to_string()),
        ]);
        let pod = run_pod(&mut c, &env, &pod_config, env.handler).await;
        let cfg = env.container_config("reader", &["sleep", "3600"]);
        let ctr = start(&mut c, &env, &pod, &cfg, &pod_config).await;
        let r = sh(
            &mut c,
            &ctr,
            "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/net/ipv4/ping_group_range",
        )
        .await;
        let got: Vec<String> = r
            .stdout
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(got, ["81", "0 7"], "{r:?}");
        remove_and_check(&mut c, &env, &pod, &[ctr]).await;
    });
}
