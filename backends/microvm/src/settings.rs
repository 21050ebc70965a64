//! `[microvm]` of the configuration, and the per-pod sizing annotations.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// The annotation giving a pod's vCPUs (at most `max_vcpus`).
pub const VCPUS_ANNOTATION: &str = "strata.dev/microvm.vcpus";
/// The annotation giving a pod's memory in MiB (at most `max_memory_mib`).
pub const MEMORY_ANNOTATION: &str = "strata.dev/microvm.memory";

/// Which hypervisor driver boots the pods' VMs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// QEMU (`-M microvm`), KVM where the host has hardware virtualisation, else TCG when
    /// `allow_tcg`.
    #[default]
    Qemu,
    /// Strata's own VMM (`strata vm run`), hardware KVM only.
    Strata,
}

/// `[microvm]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub driver: Driver,
    /// The guest kernel (ELF vmlinux with the PVH note, `scripts/build-guest-kernel`).
    pub kernel: PathBuf,
    /// The initramfs with the agent as `/init` (`scripts/build-initramfs`).
    pub initrd: PathBuf,
    /// vCPUs and memory of a pod's VM unless its annotations say otherwise.
    pub vcpus: u32,
    pub memory_mib: u32,
    /// The most an annotation may ask for.
    pub max_vcpus: u32,
    pub max_memory_mib: u32,
    /// Let QEMU emulate (TCG) where `/dev/kvm` cannot run a Linux guest. TCG is no security
    /// boundary: for tests and demos only.
    pub allow_tcg: bool,
    /// How long a VM may take from start until its agent answers.
    pub boot_timeout_secs: u64,
    /// A running pod whose agent has answered no health check (`Ping`) for this long is
    /// declared dead: its VM is stopped and its containers reported exited (137). 0: never.
    pub agent_dead_after_secs: u64,
    /// Appended to the guest kernel's command line (after Strata's own parameters), as Kata's
    /// `kernel_params`: e.g. `quiet`, or a debugging switch.
    pub kernel_params: String,
    /// Where each pod's VM keeps its sockets, console log and shared directory.
    pub state_dir: PathBuf,
    /// Helper binaries; unset: `/var/cache/strata/tools/bin`, then `PATH`.
    pub qemu: Option<PathBuf>,
    pub virtiofsd: Option<PathBuf>,
    pub vhost_device_vsock: Option<PathBuf>,
    /// The `strata` binary whose `vm run` is the VMM of the strata driver; unset: the one
    /// beside the shim, then `/var/cache/strata/tools/bin`, then `PATH`.
    pub strata: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            driver: Driver::Qemu,
            kernel: PathBuf::from("/usr/share/strata/guest/vmlinux"),
            initrd: PathBuf::from("/usr/share/strata/guest/initramfs.cpio.gz"),
            vcpus: 1,
            memory_mib: 256,
            max_vcpus: 4,
            max_memory_mib: 4096,
            allow_tcg: false,
            boot_timeout_secs: 60,
            agent_dead_after_secs: 60,
            kernel_params: String::new(),
            state_dir: PathBuf::from("/run/strata/microvm"),
            qemu: None,
            virtiofsd: None,
            vhost_device_vsock: None,
            strata: None,
        }
    }
}

impl Settings {
    /// Reads `[microvm]`; the message says what is wrong.
    pub fn from_table(value: &toml::Value) -> Result<Settings, String> {
        let s: Settings = value
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| format!("[microvm]: {}", e.message()))?;
        if s.vcpus == 0 || s.vcpus > s.max_vcpus {
            return Err(format!(
                "[microvm]: vcpus = {} must be between 1 and max_vcpus = {}",
                s.vcpus, s.max_vcpus
            ));
        }
        if s.memory_mib < 64 || s.memory_mib > s.max_memory_mib {
            return Err(format!(
                "[microvm]: memory_mib = {} must be between 64 and max_memory_mib = {}",
                s.memory_mib, s.max_memory_mib
            ));
        }
        if let Some(bad) = s.kernel_params.split_whitespace().find(|p| {
            p.starts_with("strata.") || p.starts_with("init=") || p.starts_with("rdinit=")
        }) {
            return Err(format!(
                "[microvm]: kernel_params may not set {bad:?}: the agent's own parameters are Strata's"
            ));
        }
        Ok(s)
    }

    /// `None`: the health check never gives up.
    pub fn agent_dead_after(&self) -> Option<Duration> {
        (self.agent_dead_after_secs > 0).then(|| Duration::from_secs(self.agent_dead_after_secs))
    }

    pub fn boot_timeout(&self) -> Duration {
        Duration::from_secs(self.boot_timeout_secs.max(1))
    }

    /// The pod's vCPUs and memory (MiB): the annotations within the maxima, else the defaults.
    pub fn sizing(&self, annotations: &HashMap<String, String>) -> Result<(u32, u32), String> {
        let read = |key: &str, default: u32, min: u32, max: u32, unit: &str| {
            let Some(v) = annotations.get(key) else {
                return Ok(default);
            };
            let n: u32 = v
                .trim()
                .parse()
                .map_err(|_| format!("annotation {key}={v:?} is not a whole number{unit}"))?;
            if n < min || n > max {
                return Err(format!(
                    "annotation {key}={n} is outside {min}..={max}{unit} (the maximum is set by \
                     the administrator in [microvm])"
                ));
            }
            Ok(n)
        };
        Ok((
            read(VCPUS_ANNOTATION, self.vcpus, 1, self.max_vcpus, "")?,
            read(
                MEMORY_ANNOTATION,
                self.memory_mib,
                64,
                self.max_memory_mib,
                " MiB",
            )?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Value {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn defaults_and_bad_tables() {
        let s = Settings::from_table(&table("allow_tcg = true\nmemory_mib = 512")).unwrap();
        assert!(s.allow_tcg);
        assert_eq!((s.vcpus, s.memory_mib), (1, 512));
        let e = Settings::from_table(&table("allow_tgc = true")).unwrap_err();
        assert!(e.contains("allow_tgc"), "{e}");
        let e = Settings::from_table(&table("vcpus = 8")).unwrap_err();
        assert!(e.contains("max_vcpus"), "{e}");
        let s = Settings::from_table(&table("kernel_params = \"quiet loglevel=3\"")).unwrap();
        assert_eq!(s.kernel_params, "quiet loglevel=3");
        let e =
            Settings::from_table(&table("kernel_params = \"quiet strata.share=x\"")).unwrap_err();
        assert!(e.contains("strata.share=x"), "{e}");
        assert_eq!(
            Settings::default().agent_dead_after(),
            Some(Duration::from_secs(60))
        );
        let s = Settings::from_table(&table("agent_dead_after_secs = 0")).unwrap();
        assert_eq!(s.agent_dead_after(), None);
    }

    #[test]
    fn annotations_within_the_maxima() {
        let s = Settings::default();
        let ann = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(s.sizing(&HashMap::new()).unwrap(), (1, 256));
        assert_eq!(s.sizing(&ann(VCPUS_ANNOTATION, "2")).unwrap(), (2, 256));
        assert_eq!(
            s.sizing(&ann(MEMORY_ANNOTATION, "1024")).unwrap(),
            (1, 1024)
        );
        let e = s.sizing(&ann(VCPUS_ANNOTATION, "64")).unwrap_err();
        assert!(e.contains("outside 1..=4"), "{e}");
        let e = s.sizing(&ann(MEMORY_ANNOTATION, "1G")).unwrap_err();
        assert!(e.contains("not a whole number"), "{e}");
    }
}
