//! Loading a kernel and describing the machine to it: the ELF (PVH) or bzImage loader from
//! linux-loader, the initramfs, the command line, and the zero page (`boot_params` with its e820
//! map) or the PVH `hvm_start_info` (with its memory map and module list).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{self, BzImage, Cmdline, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    self, CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIMEM_START, PVH_INFO_START,
    PVH_MEMMAP_START, PVH_MODLIST_START, ZERO_PAGE_START,
};
use super::regs::BootEntry;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
const XLF_KERNEL_64: u16 = 1 << 0;
const PAGE_SIZE: u64 = 0x1000;

/// Errors loading the kernel or initramfs, or describing the machine to the guest.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("opening the kernel {path}")]
    OpenKernel {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither an ELF vmlinux nor a bzImage: {reason}")]
    BadKernel { path: String, reason: String },
    #[error("the bzImage {path} has no 64-bit entry point (boot protocol 2.12 or later with XLF_KERNEL_64); use a 64-bit kernel")]
    No64BitEntry { path: String },
    #[error("the ELF kernel {path} has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); build it with CONFIG_PVH=y")]
    NoPvhNote { path: String },
    #[error("opening the initramfs {path}")]
    OpenInitrd {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the initramfs ({size} bytes) does not fit in guest memory above the kernel ({room} bytes free); give the machine more memory")]
    InitrdTooLarge { size: u64, room: u64 },
    #[error("reading the initramfs into guest memory: {0}")]
    ReadInitrd(String),
    #[error("the kernel command line is invalid: {0}")]
    Cmdline(String),
    #[error("writing the boot parameters: {0}")]
    Params(String),
}

/// Where the kernel and initramfs were put.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    pub entry: BootEntry,
    pub kernel_end: u64,
    pub initrd: Option<(u64, u64)>,
}

/// Builds the kernel command line, checking it fits.
pub fn cmdline(text: &str) -> Result<Cmdline, BootError> {
    let mut c = Cmdline::new(CMDLINE_MAX_SIZE).map_err(|e| BootError::Cmdline(e.to_string()))?;
    c.insert_str(text)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    Ok(c)
}

enum Format {
    Elf,
    BzImage,
}

fn sniff(path: &Path, f: &mut File) -> Result<Format, BootError> {
    let bad = |reason: String| BootError::BadKernel {
        path: path.display().to_string(),
        reason,
    };
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)
        .map_err(|e| bad(format!("cannot read its header ({e})")))?;
    if &magic == b"\x7fELF" {
        return Ok(Format::Elf);
    }
    let mut hdrs = [0u8; 4];
    f.seek(SeekFrom::Start(0x202))
        .and_then(|_| f.read_exact(&mut hdrs))
        .map_err(|e| bad(format!("too short for a bzImage header ({e})")))?;
    if u32::from_le_bytes(hdrs) == KERNEL_HDR_MAGIC {
        return Ok(Format::BzImage);
    }
    Err(bad("no ELF magic and no \"HdrS\" setup header".into()))
}

/// Loads the kernel at `path` into `mem`, the initramfs (if any) at the top of low RAM, and the
/// command line; writes the zero page or the PVH start info. Returns how the boot vCPU enters.
pub fn load(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &Cmdline,
) -> Result<LoadedKernel, BootError> {
    let kpath = kernel.display().to_string();
    let mut f = File::open(kernel).map_err(|source| BootError::OpenKernel {
        path: kpath.clone(),
        source,
    })?;
    let format = sniff(kernel, &mut f)?;
    let bad = |e: loader::Error| BootError::BadKernel {
        path: kpath.clone(),
        reason: e.to_string(),
    };
    let (result, pvh_entry) = match format {
        Format::Elf => {
            let r = Elf::load(mem, None, &mut f, Some(GuestAddress(HIMEM_START))).map_err(bad)?;
            match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => (r, Some(addr.raw_value())),
                _ => return Err(BootError::NoPvhNote { path: kpath }),
            }
        }
        Format::BzImage => {
            let r =
                BzImage::load(mem, None, &mut f, Some(GuestAddress(HIMEM_START))).map_err(bad)?;
            (r, None)
        }
    };

    let initrd = match initrd {
        Some(p) => Some(load_initrd(
            mem,
            mem_size,
            result.kernel_end,
            p,
            result.setup_header.as_ref(),
        )?),
        None => None,
    };

    loader::load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    let cmdline_len = cmdline
        .as_cstring()
        .map_err(|e| BootError::Cmdline(e.to_string()))?
        .as_bytes_with_nul()
        .len();

    let entry = match pvh_entry {
        Some(entry) => {
            write_pvh_start_info(mem, mem_size, cmdline_len, initrd)?;
            BootEntry::Pvh {
                entry,
                start_info: PVH_INFO_START,
            }
        }
        None => {
            let hdr = result.setup_header.ok_or_else(|| BootError::BadKernel {
                path: kpath.clone(),
                reason: "no setup header".into(),
            })?;
            let xloadflags = hdr.xloadflags;
            let version = hdr.version;
            if version < 0x020c || xloadflags & XLF_KERNEL_64 == 0 {
                return Err(BootError::No64BitEntry { path: kpath });
            }
            write_zero_page(mem, mem_size, cmdline_len, initrd, hdr)?;
            BootEntry::Linux64 {
                // The 64-bit entry is 0x200 bytes into the protected-mode kernel.
                entry: result.kernel_load.raw_value() + 0x200,
                zero_page: ZERO_PAGE_START,
            }
        }
    };
    Ok(LoadedKernel {
        entry,
        kernel_end: result.kernel_end,
        initrd,
    })
}

fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel_end: u64,
    path: &Path,
    hdr: Option<&linux_loader::loader::bootparam::setup_header>,
) -> Result<(u64, u64), BootError> {
    let open_err = |source| BootError::OpenInitrd {
        path: path.display().to_string(),
        source,
    };
    let mut f = File::open(path).map_err(open_err)?;
    let size = f.metadata().map_err(open_err)?.len();
    // The initramfs goes at the top of low RAM, page aligned, and below the kernel's
    // `initrd_addr_max` when it states one.
    let mut top = layout::low_ram_end(mem_size);
    if let Some(h) = hdr {
        let max = h.initrd_addr_max;
        if max != 0 {
            top = top.min(u64::from(max) + 1);
        }
    }
    let bottom = kernel_end.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let room = top.saturating_sub(bottom);
    if size > room {
        return Err(BootError::InitrdTooLarge { size, room });
    }
    let addr = (top - size) & !(PAGE_SIZE - 1);
    mem.read_exact_volatile_from(GuestAddress(addr), &mut f, size as usize)
        .map_err(|e| BootError::ReadInitrd(e.to_string()))?;
    Ok((addr, size))
}

/// The e820 map: RAM below the EBDA, RAM from 1 MiB to the gap, RAM above 4 GiB.
fn e820_entries(mem_size: u64) -> Vec<(u64, u64, u32)> {
    let mut v = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for (start, size) in layout::ram_regions(mem_size) {
        if start == 0 {
            v.push((HIMEM_START, size - HIMEM_START, E820_RAM));
        } else {
            v.push((start, size, E820_RAM));
        }
    }
    v
}

fn write_zero_page(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
    hdr: linux_loader::loader::bootparam::setup_header,
) -> Result<(), BootError> {
    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    for (i, (addr, size, type_)) in e820_entries(mem_size).into_iter().enumerate() {
        params.e820_table[i].addr = addr;
        params.e820_table[i].size = size;
        params.e820_table[i].r#type = type_;
        params.e820_entries = (i + 1) as u8;
    }
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new::<boot_params>(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(|e| BootError::Params(e.to_string()))
}

fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    _cmdline_len: usize,
    initrd: Option<(u64, u64)>,
) -> Result<(), BootError> {
    let memmap: Vec<hvm_memmap_table_entry> = e820_entries(mem_size)
        .into_iter()
        .map(|(addr, size, type_)| hvm_memmap_table_entry {
            addr,
            size,
            type_,
            reserved: 0,
        })
        .collect();
    let mut start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut modules = Vec::new();
    if let Some((addr, size)) = initrd {
        modules.push(hvm_modlist_entry {
            paddr: addr,
            size,
            ..Default::default()
        });
        start_info.nr_modules = 1;
        start_info.modlist_paddr = PVH_MODLIST_START;
    }
    let mut params = BootParams::new::<hvm_start_info>(&start_info, GuestAddress(PVH_INFO_START));
    params.set_sections::<hvm_memmap_table_entry>(&memmap, GuestAddress(PVH_MEMMAP_START));
    if !modules.is_empty() {
        params.set_modules::<hvm_modlist_entry>(&modules, GuestAddress(PVH_MODLIST_START));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
        .map_err(|e| BootError::Params(e.to_string()))
}
