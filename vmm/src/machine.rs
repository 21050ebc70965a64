//! A machine: builds the VM from a [`MachineConfig`] (memory, kernel, devices, vCPUs), runs it,
//! and turns how it stopped into an [`Exit`] or an [`Error`] carrying the console's tail.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::arch::x86_64::layout::{self, SERIAL_IRQ};
use crate::arch::x86_64::{boot, cpuid, mptable, msr};
use crate::console::{Console, ConsoleWriter};
use crate::devices::bus::{Bus, BusDevice};
use crate::devices::i8042::{ResetTrigger, I8042, I8042_BASE, I8042_LEN};
use crate::devices::serial::{SerialDevice, COM1_BASE, COM1_LEN};
use crate::devices::virtio::block::{Block, DiskConfig};
use crate::devices::virtio::fs::{Fs, FsConfig};
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::{Net, NetConfig};
use crate::devices::virtio::vsock::{Vsock, VsockConfig};
use crate::devices::virtio::VirtioDevice;
use crate::devices::EventFdTrigger;
use crate::error::Error;
use crate::vstate::memory;
use crate::vstate::vcpu::Vcpu;
use crate::vstate::vm::Vm;

/// The default kernel command line (Firecracker's, for a machine with no PCI and a minimal
/// i8042).
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd";

/// How much of the console an error quotes.
const TAIL_LINES: usize = 20;

/// What to boot.
pub struct MachineConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub mem_mib: u32,
    pub vcpus: u8,
    pub disks: Vec<DiskConfig>,
    pub vsock: Option<VsockConfig>,
    /// Network devices, each on a tap descriptor open in this process (which keeps it; the
    /// device works on a duplicate), after the disks and vsock on the MMIO bus.
    pub nets: Vec<NetConfig>,
    /// virtio-fs devices, each served by a vhost-user back end already listening on its socket
    /// (virtiofsd). With any, guest memory is a shared memfd, which the back ends map.
    pub fs: Vec<FsConfig>,
    /// Where the console is echoed, besides the ring buffer.
    pub console_echo: Option<Box<dyn Write + Send>>,
    /// Load the VMM threads' seccomp filters ([`crate::seccomp`]). On by default.
    pub seccomp: bool,
}

impl MachineConfig {
    /// A machine with 128 MiB, one vCPU, the default command line and no devices.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        MachineConfig {
            kernel: kernel.into(),
            initrd: None,
            cmdline: DEFAULT_CMDLINE.to_string(),
            mem_mib: 128,
            vcpus: 1,
            disks: Vec::new(),
            vsock: None,
            nets: Vec::new(),
            fs: Vec::new(),
            console_echo: None,
            seccomp: true,
        }
    }
}

/// How a vCPU thread stopped, or what a device asked for.
#[derive(Debug)]
pub enum VcpuEvent {
    /// The guest asked for a reset (i8042 0xfe, or a KVM system event): a clean shutdown.
    Reset,
    /// KVM_EXIT_SHUTDOWN: a triple fault.
    TripleFault { cpu: u8 },
    /// KVM_SYSTEM_EVENT_CRASH (a guest panic reported through the hypervisor).
    Crash { cpu: u8 },
    /// A HLT that KVM handed to user space.
    Halted { cpu: u8 },
    /// The vCPU could not go on.
    Failed { cpu: u8, reason: String },
}

/// A clean end of the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest asked for a reset or power-off.
    Reset,
}

/// The signal that kicks a vCPU out of KVM_RUN.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn noop_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn install_kick_handler() -> Result<(), Error> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        register_signal_handler(kick_signal(), noop_handler).map_err(|e| e.to_string())
    })
    .clone()
    .map_err(Error::Signal)
}

/// A running machine.
pub struct Machine {
    vm: Option<Vm>,
    vcpus: Vec<JoinHandle<()>>,
    events: Receiver<VcpuEvent>,
    stop: Arc<AtomicBool>,
    console: Arc<Console>,
    started_at: Instant,
    first_vcpu_entry: Arc<Mutex<Option<Instant>>>,
    devices: Vec<Arc<Mutex<MmioTransport>>>,
    /// Host-side workers (vsock, net) stopped with the machine.
    workers: Vec<Box<dyn crate::devices::virtio::Worker>>,
    serial: Arc<Mutex<SerialDevice>>,
}

/// The input side of the guest console (COM1's receive FIFO).
#[derive(Clone)]
pub struct ConsoleInput(Arc<Mutex<SerialDevice>>);

impl ConsoleInput {
    /// Queues as much of `bytes` as the UART's 64-byte FIFO takes; returns how much that was.
    pub fn send(&self, bytes: &[u8]) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .enqueue_input(bytes)
    }
}

impl Machine {
    /// Builds the machine and starts its vCPUs.
    pub fn start(mut cfg: MachineConfig) -> Result<Machine, Error> {
        let started_at = Instant::now();
        if cfg.vcpus == 0 {
            return Err(Error::Config("a machine needs at least one vCPU".into()));
        }
        if cfg.mem_mib < 16 {
            return Err(Error::Config(format!(
                "{} MiB of memory is too little; give at least 16",
                cfg.mem_mib
            )));
        }
        if let Err(source) = std::fs::File::open(&cfg.kernel) {
            return Err(Error::Boot(boot::BootError::OpenKernel {
                path: cfg.kernel.display().to_string(),
                source,
            }));
        }
        install_kick_handler()?;
        let mem_size = u64::from(cfg.mem_mib) << 20;

        // Devices first: a missing disk fails before any memory is touched.
        let (tx, rx) = mpsc::channel();
        let mut virtio: Vec<Box<dyn VirtioDevice>> = Vec::new();
        for d in &cfg.disks {
            virtio.push(Box::new(Block::open(d)?));
        }
        let mut workers: Vec<Box<dyn crate::devices::virtio::Worker>> = Vec::new();
        if let Some(v) = &cfg.vsock {
            let (dev, worker) = Vsock::new(v)?;
            virtio.push(Box::new(dev));
            workers.push(Box::new(worker));
        }
        for n in &cfg.nets {
            let (dev, worker) = Net::new(n)?;
            virtio.push(Box::new(dev));
            workers.push(Box::new(worker));
        }
        for f in &cfg.fs {
            let (dev, worker) = Fs::new(f)?;
            virtio.push(Box::new(dev));
            workers.push(Box::new(worker));
        }
        let max_devices = (layout::VIRTIO_IRQ_MAX - layout::VIRTIO_IRQ_BASE + 1) as usize;
        if virtio.len() > max_devices {
            return Err(Error::Config(format!(
                "{} virtio devices asked for; at most {max_devices}",
                virtio.len()
            )));
        }

        let mut cmdline = cfg.cmdline.clone();
        for i in 0..virtio.len() {
            let base = layout::MMIO_GAP_START + i as u64 * layout::VIRTIO_MMIO_SIZE;
            let irq = layout::VIRTIO_IRQ_BASE + i as u32;
            cmdline.push_str(&format!(" virtio_mmio.device=4K@{base:#x}:{irq}"));
        }
        let cmdline = boot::cmdline(cmdline.trim())?;

        let mem = if cfg.fs.is_empty() {
            memory::create(mem_size)?
        } else {
            memory::create_shared(mem_size)?
        };
        let loaded = boot::load(&mem, mem_size, &cfg.kernel, cfg.initrd.as_deref(), &cmdline)?;
        mptable::setup(&mem, cfg.vcpus)?;
        let vm = Vm::new(mem, cfg.vcpus)?;

        let console = Console::new(cfg.console_echo.take());
        let mut pio = Bus::new();
        let serial_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        vm.fd
            .register_irqfd(&serial_evt, SERIAL_IRQ)
            .map_err(Error::Irqfd)?;
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            EventFdTrigger(serial_evt),
            ConsoleWriter(console.clone()),
        )));
        let serial_bus: Arc<Mutex<dyn BusDevice>> = serial.clone();
        pio.insert(serial_bus, COM1_BASE, COM1_LEN)?;
        let i8042: Arc<Mutex<dyn BusDevice>> =
            Arc::new(Mutex::new(I8042::new(ResetTrigger(tx.clone()))));
        pio.insert(i8042, I8042_BASE, I8042_LEN)?;

        let mut mmio = Bus::new();
        let mut devices = Vec::new();
        for (i, dev) in virtio.into_iter().enumerate() {
            let base = layout::MMIO_GAP_START + i as u64 * layout::VIRTIO_MMIO_SIZE;
            let irq = layout::VIRTIO_IRQ_BASE + i as u32;
            let irq_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
            vm.fd.register_irqfd(&irq_evt, irq).map_err(Error::Irqfd)?;
            let t = Arc::new(Mutex::new(MmioTransport::new(
                dev,
                vm.memory.clone(),
                irq_evt,
            )));
            mmio.insert(t.clone(), base, layout::VIRTIO_MMIO_SIZE)?;
            devices.push(t);
        }

        let host_cpuid = cpuid::supported(&vm.kvm)?;
        let host_xsave =
            cpuid::host_has_xsave(&host_cpuid, vm.kvm.check_extension(kvm_ioctls::Cap::Xsave));
        let boot_msrs =
            msr::supported_boot_msrs(&vm.kvm).map_err(crate::vstate::vcpu::VcpuError::from)?;
        let mut vcpus = Vec::new();
        for id in 0..cfg.vcpus {
            let v = Vcpu::new(&vm.fd, id, cfg.vcpus, &host_cpuid, host_xsave, &boot_msrs)?;
            if id == 0 {
                v.configure_boot(&vm.memory, loaded.entry)?;
            }
            vcpus.push(v);
        }

        let pio = Arc::new(pio);
        let mmio = Arc::new(mmio);
        let stop = Arc::new(AtomicBool::new(false));
        let first_vcpu_entry = Arc::new(Mutex::new(None));
        for w in workers.iter_mut() {
            w.start(tx.clone(), cfg.seccomp)?;
        }
        let mut handles = Vec::new();
        for v in vcpus {
            let first = first_vcpu_entry.clone();
            let seccomp = cfg.seccomp;
            let on_start: Box<dyn FnOnce() -> Result<(), String> + Send> = Box::new(move || {
                if seccomp {
                    crate::seccomp::apply(crate::seccomp::ThreadRole::Vcpu)
                        .map_err(|e| e.to_string())?;
                }
                let mut f = first.lock().unwrap_or_else(|p| p.into_inner());
                f.get_or_insert_with(Instant::now);
                Ok(())
            });
            match v.spawn(
                pio.clone(),
                mmio.clone(),
                tx.clone(),
                stop.clone(),
                Some(on_start),
            ) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    let mut m = Machine {
                        vm: Some(vm),
                        vcpus: handles,
                        events: rx,
                        stop,
                        console,
                        started_at,
                        first_vcpu_entry,
                        devices,
                        workers,
                        serial,
                    };
                    m.shutdown();
                    return Err(e.into());
                }
            }
        }
        tracing::debug!(
            vcpus = cfg.vcpus,
            mem_mib = cfg.mem_mib,
            entry = loaded.entry.entry(),
            "machine started"
        );
        Ok(Machine {
            vm: Some(vm),
            vcpus: handles,
            events: rx,
            stop,
            console,
            started_at,
            first_vcpu_entry,
            devices,
            workers,
            serial,
        })
    }

    /// The guest console.
    pub fn console(&self) -> Arc<Console> {
        self.console.clone()
    }

    /// A handle that types into the guest console.
    pub fn console_input(&self) -> ConsoleInput {
        ConsoleInput(self.serial.clone())
    }

    /// The host address ranges `[start, end)` that back guest memory (for accounting).
    pub fn guest_memory_host_ranges(&self) -> Vec<(u64, u64)> {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
        let Some(vm) = self.vm.as_ref() else {
            return Vec::new();
        };
        vm.memory
            .iter()
            .filter_map(|r| {
                let host = vm.memory.get_host_address(r.start_addr()).ok()? as u64;
                Some((host, host + r.len()))
            })
            .collect()
    }

    /// When [`Machine::start`] was called.
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// When the first vCPU thread was about to enter the guest.
    pub fn first_vcpu_entry(&self) -> Option<Instant> {
        *self
            .first_vcpu_entry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the guest stops, or `timeout` passes. A clean reset is `Ok`; a triple fault,
    /// a panic, a failed vCPU or the timeout is an error quoting the console's tail. The machine is
    /// stopped either way.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Exit, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let ev = loop {
            let r = match deadline {
                Some(d) => self
                    .events
                    .recv_timeout(d.saturating_duration_since(Instant::now())),
                None => self
                    .events
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match r {
                Ok(VcpuEvent::Halted { .. }) if self.vcpus.len() > 1 => continue,
                Ok(ev) => break Some(ev),
                Err(RecvTimeoutError::Timeout) => break None,
                Err(RecvTimeoutError::Disconnected) => {
                    break Some(VcpuEvent::Failed {
                        cpu: 0,
                        reason: "every vCPU thread ended".into(),
                    })
                }
            }
        };
        self.finish(ev, timeout.unwrap_or_default())
    }

    /// Stops the machine and turns how it ended into the result `wait` returns.
    fn finish(&mut self, ev: Option<VcpuEvent>, after: Duration) -> Result<Exit, Error> {
        self.shutdown();
        let tail = self.console.tail(TAIL_LINES);
        let panicked = self.console.contents().contains("Kernel panic");
        match ev {
            None => Err(Error::Timeout {
                after,
                console_tail: tail,
            }),
            Some(VcpuEvent::Reset) if panicked => Err(Error::GuestPanic { console_tail: tail }),
            Some(VcpuEvent::Reset) => Ok(Exit::Reset),
            Some(VcpuEvent::Crash { .. }) => Err(Error::GuestPanic { console_tail: tail }),
            Some(VcpuEvent::TripleFault { cpu }) => Err(Error::TripleFault {
                cpu,
                console_tail: tail,
            }),
            Some(VcpuEvent::Halted { cpu }) => Err(Error::Halted {
                cpu,
                console_tail: tail,
            }),
            Some(VcpuEvent::Failed { cpu, reason }) => Err(Error::VcpuFailed {
                cpu,
                reason,
                console_tail: tail,
            }),
        }
    }

    /// Waits until `ready` succeeds (tried every 20 ms: the agent answering, a line on the
    /// console), the guest stops, or `timeout` passes. The guest stopping first, cleanly or not,
    /// or the timeout, is an error carrying the console's tail, and the machine is stopped then;
    /// on success it keeps running.
    pub fn wait_until<T, E: std::fmt::Display>(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> Result<T, E>,
    ) -> Result<T, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.events.try_recv() {
                Ok(VcpuEvent::Halted { .. }) if self.vcpus.len() > 1 => continue,
                Ok(ev) => {
                    return match self.finish(Some(ev), timeout) {
                        Ok(Exit::Reset) => Err(Error::StoppedBeforeReady {
                            console_tail: self.console.tail(TAIL_LINES),
                        }),
                        Err(e) => Err(e),
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return self
                        .finish(
                            Some(VcpuEvent::Failed {
                                cpu: 0,
                                reason: "every vCPU thread ended".into(),
                            }),
                            timeout,
                        )
                        .and_then(unreachable_reset);
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
            }
            let last = match ready() {
                Ok(v) => return Ok(v),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                self.shutdown();
                return Err(Error::NotReady {
                    after: timeout,
                    last_attempt: last,
                    console_tail: self.console.tail(TAIL_LINES),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the vCPUs and the device workers; idempotent.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        for w in self.workers.iter_mut() {
            w.stop();
        }
        let sig = kick_signal();
        for h in self.vcpus.drain(..) {
            // A vCPU that was between its stop check and KVM_RUN when the first kick came is
            // kicked again until it notices.
            let t0 = Instant::now();
            while !h.is_finished() {
                let _ = h.kill(sig);
                std::thread::sleep(Duration::from_millis(1));
                if t0.elapsed() > Duration::from_secs(5) {
                    tracing::warn!("a vCPU thread did not stop in 5 s; leaving it");
                    break;
                }
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        self.devices.clear();
        self.vm.take();
    }
}

/// `finish` with a `Failed` event never returns `Ok`; this keeps the types honest without a panic.
fn unreachable_reset<T>(_: Exit) -> Result<T, Error> {
    Err(Error::Config(
        "the machine reported a clean exit after a failure".into(),
    ))
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
