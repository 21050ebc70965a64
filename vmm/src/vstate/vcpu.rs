//! vCPUs: per-vCPU set-up (CPUID, MSRs, registers, LAPIC) and the run loop on its own thread,
//! which dispatches port I/O and MMIO exits to the buses and reports how the vCPU stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_bindings::{
    kvm_cpuid_entry2, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

use crate::arch::x86_64::{cpuid, msr, regs};
use crate::devices::bus::Bus;
use crate::machine::VcpuEvent;

/// Errors creating or configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("KVM_CREATE_VCPU {id} failed")]
    Create {
        id: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM_SET_CPUID2 on vCPU {id} failed")]
    Cpuid {
        id: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    CpuidTable(#[from] cpuid::CpuidError),
    #[error(transparent)]
    Msr(#[from] msr::MsrError),
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    #[error("starting the vCPU {id} thread")]
    Spawn {
        id: u8,
        #[source]
        source: std::io::Error,
    },
}

/// A configured vCPU, ready to run.
pub struct Vcpu {
    pub id: u8,
    fd: VcpuFd,
}

impl Vcpu {
    /// Creates vCPU `id` and gives it its CPUID and boot MSRs. The boot vCPU (0) also gets the
    /// entry registers; the others wait for INIT/SIPI in the in-kernel LAPIC.
    pub fn new(
        vm: &VmFd,
        id: u8,
        count: u8,
        host_cpuid: &[kvm_cpuid_entry2],
        host_xsave: bool,
        boot_msrs: &[(u32, u64)],
    ) -> Result<Self, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(|source| VcpuError::Create { id, source })?;
        let entries = cpuid::normalise(host_cpuid, id, count, host_xsave);
        fd.set_cpuid2(&cpuid::to_kvm(&entries)?)
            .map_err(|source| VcpuError::Cpuid { id, source })?;
        msr::setup_msrs(&fd, boot_msrs)?;
        regs::setup_lint(&fd)?;
        Ok(Vcpu { id, fd })
    }

    /// Sets the entry state for the boot vCPU.
    pub fn configure_boot(
        &self,
        mem: &GuestMemoryMmap,
        entry: regs::BootEntry,
    ) -> Result<(), VcpuError> {
        regs::setup_fpu(&self.fd)?;
        regs::setup_regs(&self.fd, entry)?;
        regs::setup_sregs(mem, &self.fd, entry)?;
        Ok(())
    }

    /// Runs the vCPU on a thread of its own until the guest stops it or `stop` is set (and the
    /// thread kicked with [`kick_signal`](crate::machine::kick_signal)). `on_start` runs first on
    /// the new thread (it loads the seccomp filter); if it fails the vCPU never enters the guest.
    pub fn spawn(
        self,
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        events: Sender<VcpuEvent>,
        stop: Arc<AtomicBool>,
        on_start: Option<Box<dyn FnOnce() -> Result<(), String> + Send>>,
    ) -> Result<JoinHandle<()>, VcpuError> {
        let id = self.id;
        std::thread::Builder::new()
            .name(format!("strata-vcpu{id}"))
            .spawn(move || {
                if let Some(f) = on_start {
                    if let Err(reason) = f() {
                        let _ = events.send(VcpuEvent::Failed { cpu: id, reason });
                        return;
                    }
                }
                let ev = self.run_loop(&pio, &mmio, &stop);
                if let Some(ev) = ev {
                    let _ = events.send(ev);
                }
            })
            .map_err(|source| VcpuError::Spawn { id, source })
    }

    fn run_loop(mut self, pio: &Bus, mmio: &Bus, stop: &AtomicBool) -> Option<VcpuEvent> {
        let cpu = self.id;
        loop {
            if stop.load(Ordering::Acquire) {
                return None;
            }
            match self.fd.run() {
                Ok(exit) => match exit {
                    VcpuExit::IoIn(port, data) => {
                        if !pio.read(u64::from(port), data) {
                            data.fill(0xff);
                        }
                    }
                    VcpuExit::IoOut(port, data) => {
                        pio.write(u64::from(port), data);
                    }
                    VcpuExit::MmioRead(addr, data) => {
                        if !mmio.read(addr, data) {
                            data.fill(0);
                        }
                    }
                    VcpuExit::MmioWrite(addr, data) => {
                        mmio.write(addr, data);
                    }
                    VcpuExit::Hlt => return Some(VcpuEvent::Halted { cpu }),
                    VcpuExit::Shutdown => return Some(VcpuEvent::TripleFault { cpu }),
                    VcpuExit::SystemEvent(kind, _) => {
                        return Some(match kind {
                            KVM_SYSTEM_EVENT_SHUTDOWN | KVM_SYSTEM_EVENT_RESET => VcpuEvent::Reset,
                            KVM_SYSTEM_EVENT_CRASH => VcpuEvent::Crash { cpu },
                            other => VcpuEvent::Failed {
                                cpu,
                                reason: format!("unknown system event {other}"),
                            },
                        })
                    }
                    VcpuExit::FailEntry(reason, _) => {
                        return Some(VcpuEvent::Failed {
                            cpu,
                            reason: format!("KVM entry failed, hardware reason {reason:#x}"),
                        })
                    }
                    VcpuExit::InternalError => {
                        let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(0);
                        return Some(VcpuEvent::Failed {
                            cpu,
                            reason: format!(
                                "KVM internal error (emulation failure) at guest rip {rip:#x}"
                            ),
                        });
                    }
                    VcpuExit::Intr => {}
                    other => {
                        return Some(VcpuEvent::Failed {
                            cpu,
                            reason: format!("unexpected vCPU exit {other:?}"),
                        })
                    }
                },
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
                Err(e) => {
                    return Some(VcpuEvent::Failed {
                        cpu,
                        reason: format!("KVM_RUN: {e}"),
                    })
                }
            }
        }
    }
}
