//! The machine's errors. Each says what failed; a guest that stopped badly carries the tail of
//! its console.

use std::time::Duration;

use crate::arch::x86_64::{boot::BootError, cpuid::CpuidError};
use crate::devices::bus::BusOverlap;
use crate::devices::virtio::DeviceError;
use crate::vstate::memory::MemoryError;
use crate::vstate::vcpu::VcpuError;
use crate::vstate::vm::VmError;

/// Errors building, running or stopping a machine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid machine configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error(transparent)]
    Cpuid(#[from] CpuidError),
    #[error(transparent)]
    Mptable(#[from] crate::arch::x86_64::mptable::MptableError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Bus(#[from] BusOverlap),
    #[error("creating an eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("registering an irqfd")]
    Irqfd(#[source] kvm_ioctls::Error),
    #[error("installing the vCPU kick signal handler: {0}")]
    Signal(String),
    #[error("the guest kernel panicked; console tail:\n{console_tail}")]
    GuestPanic { console_tail: String },
    #[error("vCPU {cpu} triple-faulted (KVM_EXIT_SHUTDOWN); console tail:\n{console_tail}")]
    TripleFault { cpu: u8, console_tail: String },
    #[error("vCPU {cpu} halted with interrupts off; console tail:\n{console_tail}")]
    Halted { cpu: u8, console_tail: String },
    #[error("vCPU {cpu} failed: {reason}; console tail:\n{console_tail}")]
    VcpuFailed {
        cpu: u8,
        reason: String,
        console_tail: String,
    },
    #[error("the guest did not finish within {after:?}; console tail:\n{console_tail}")]
    Timeout {
        after: Duration,
        console_tail: String,
    },
    #[error("the guest was not ready within {after:?} (last attempt: {last_attempt}); console tail:\n{console_tail}")]
    NotReady {
        after: Duration,
        last_attempt: String,
        console_tail: String,
    },
    #[error("the guest shut down before it was ready; console tail:\n{console_tail}")]
    StoppedBeforeReady { console_tail: String },
}

impl Error {
    /// The console tail, for errors that carry one.
    pub fn console_tail(&self) -> Option<&str> {
        match self {
            Error::GuestPanic { console_tail }
            | Error::TripleFault { console_tail, .. }
            | Error::Halted { console_tail, .. }
            | Error::VcpuFailed { console_tail, .. }
            | Error::Timeout { console_tail, .. }
            | Error::NotReady { console_tail, .. }
            | Error::StoppedBeforeReady { console_tail } => Some(console_tail),
            _ => None,
        }
    }
}
