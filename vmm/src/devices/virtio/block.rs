//! virtio-blk on a raw image file, read-only or read-write.
//!
//! Requests are parsed with virtio-queue's `Reader`/`Writer`, which check every descriptor against
//! guest memory; the sector range is checked against the image; data is copied through a fixed
//! 64 KiB buffer, so a request's size costs the host nothing beyond the copy.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{
    read_config_bytes, DeviceError, IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_MMIO_INT_VRING,
};

/// The virtio device ID of a block device.
pub const TYPE_BLOCK: u32 = 2;
const QUEUE_SIZE: u16 = 256;
const SECTOR_SIZE: u64 = 512;
const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
const VIRTIO_BLK_T_IN: u32 = 0;
const VIRTIO_BLK_T_OUT: u32 = 1;
const VIRTIO_BLK_T_FLUSH: u32 = 4;
const VIRTIO_BLK_T_GET_ID: u32 = 8;
const VIRTIO_BLK_S_OK: u8 = 0;
const VIRTIO_BLK_S_IOERR: u8 = 1;
const VIRTIO_BLK_S_UNSUPP: u8 = 2;
const VIRTIO_BLK_ID_BYTES: usize = 20;

/// A disk for the machine: `PATH` or `PATH:ro`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
}

impl DiskConfig {
    /// Parses `PATH[:ro]` (`:rw` is accepted too).
    pub fn parse(s: &str) -> Self {
        if let Some(p) = s.strip_suffix(":ro") {
            DiskConfig {
                path: p.into(),
                read_only: true,
            }
        } else {
            DiskConfig {
                path: s.strip_suffix(":rw").unwrap_or(s).into(),
                read_only: false,
            }
        }
    }
}

/// The request header (virtio_blk_outhdr): type, reserved, sector; 16 bytes, little endian.
#[derive(Clone, Copy, Default)]
struct RequestHeader {
    type_: u32,
    sector: u64,
}

impl RequestHeader {
    fn read(r: &mut impl Read) -> std::io::Result<Self> {
        let mut b = [0u8; 16];
        r.read_exact(&mut b)?;
        let mut t = [0u8; 4];
        t.copy_from_slice(&b[0..4]);
        let mut sec = [0u8; 8];
        sec.copy_from_slice(&b[8..16]);
        Ok(RequestHeader {
            type_: u32::from_le_bytes(t),
            sector: u64::from_le_bytes(sec),
        })
    }
}

struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    irq: Arc<IrqTrigger>,
}

/// A virtio-blk device.
pub struct Block {
    file: File,
    read_only: bool,
    sectors: u64,
    id: [u8; VIRTIO_BLK_ID_BYTES],
    active: Option<Active>,
}

impl Block {
    /// Opens the image. It must exist and be a whole number of sectors.
    pub fn open(cfg: &DiskConfig) -> Result<Self, DeviceError> {
        let path = cfg.path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(!cfg.read_only)
            .open(&cfg.path)
            .map_err(|source| DeviceError::OpenDisk {
                path: path.clone(),
                source,
            })?;
        let size = file
            .metadata()
            .map_err(|source| DeviceError::OpenDisk {
                path: path.clone(),
                source,
            })?
            .len();
        if size % SECTOR_SIZE != 0 {
            return Err(DeviceError::DiskSize { path, size });
        }
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES];
        let name = cfg
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (d, s) in id.iter_mut().zip(name.bytes()) {
            *d = s;
        }
        Ok(Block {
            file,
            read_only: cfg.read_only,
            sectors: size / SECTOR_SIZE,
            id,
            active: None,
        })
    }

    /// Handles one request; returns the number of bytes written into the chain.
    fn handle(&mut self, mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) -> u32 {
        let Ok(mut reader) = chain.clone().reader(mem) else {
            return 0;
        };
        let Ok(mut writer) = chain.writer(mem) else {
            return 0;
        };
        let Ok(hdr) = RequestHeader::read(&mut reader) else {
            return 0;
        };
        let avail = writer.available_bytes();
        if avail == 0 {
            return 0;
        }
        // The status byte is the last writable byte of the chain.
        let Ok(mut status_w) = writer.split_at(avail - 1) else {
            return 0;
        };
        let (status, written) = match hdr.type_ {
            VIRTIO_BLK_T_IN => self.read_into(&mut writer, hdr.sector),
            VIRTIO_BLK_T_OUT => (self.write_from(&mut reader, hdr.sector), 0),
            VIRTIO_BLK_T_FLUSH => {
                let ok = self.read_only || self.file.sync_all().is_ok();
                (
                    if ok {
                        VIRTIO_BLK_S_OK
                    } else {
                        VIRTIO_BLK_S_IOERR
                    },
                    0,
                )
            }
            VIRTIO_BLK_T_GET_ID => {
                let n = writer.available_bytes().min(VIRTIO_BLK_ID_BYTES);
                match writer.write_all(&self.id[..n]) {
                    Ok(()) => (VIRTIO_BLK_S_OK, n),
                    Err(_) => (VIRTIO_BLK_S_IOERR, 0),
                }
            }
            _ => (VIRTIO_BLK_S_UNSUPP, 0),
        };
        if status_w.write_all(&[status]).is_err() {
            return written as u32;
        }
        (written + 1) as u32
    }

    /// The byte range of `len` bytes from `sector`, if it lies within the image.
    fn range(&self, sector: u64, len: usize) -> Option<u64> {
        let start = sector.checked_mul(SECTOR_SIZE)?;
        let end = start.checked_add(len as u64)?;
        (end <= self.sectors * SECTOR_SIZE && (len as u64).is_multiple_of(SECTOR_SIZE))
            .then_some(start)
    }

    fn read_into(&mut self, w: &mut virtio_queue::Writer<'_, ()>, sector: u64) -> (u8, usize) {
        let len = w.available_bytes();
        let Some(mut off) = self.range(sector, len) else {
            return (VIRTIO_BLK_S_IOERR, 0);
        };
        let mut buf = [0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len());
            if self.file.read_exact_at(&mut buf[..n], off).is_err()
                || w.write_all(&buf[..n]).is_err()
            {
                return (VIRTIO_BLK_S_IOERR, len - left);
            }
            off += n as u64;
            left -= n;
        }
        (VIRTIO_BLK_S_OK, len)
    }

    fn write_from(&mut self, r: &mut virtio_queue::Reader<'_, ()>, sector: u64) -> u8 {
        if self.read_only {
            return VIRTIO_BLK_S_IOERR;
        }
        let len = r.available_bytes();
        let Some(mut off) = self.range(sector, len) else {
            return VIRTIO_BLK_S_IOERR;
        };
        let mut buf = [0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len());
            if r.read_exact(&mut buf[..n]).is_err()
                || self.file.write_all_at(&buf[..n], off).is_err()
            {
                return VIRTIO_BLK_S_IOERR;
            }
            off += n as u64;
            left -= n;
        }
        VIRTIO_BLK_S_OK
    }

    fn process(&mut self) {
        let Some(mut a) = self.active.take() else {
            return;
        };
        let mut used = false;
        // At most one pass over the ring per notification: a guest that keeps refilling it
        // cannot hold the vCPU thread here forever.
        for _ in 0..a.queue.size() {
            let Some(chain) = a.queue.pop_descriptor_chain(&a.mem) else {
                break;
            };
            let head = chain.head_index();
            let len = self.handle(&a.mem, chain);
            if a.queue.add_used(&a.mem, head, len).is_err() {
                break;
            }
            used = true;
        }
        if used && a.queue.needs_notification(&a.mem).unwrap_or(true) {
            a.irq.trigger(VIRTIO_MMIO_INT_VRING);
        }
        self.active = Some(a);
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut f = VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH;
        if self.read_only {
            f |= VIRTIO_BLK_F_RO;
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // virtio_blk_config starts with `capacity`, in 512-byte sectors.
        read_config_bytes(&self.sectors.to_le_bytes(), offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        mut queues: Vec<Queue>,
        irq: Arc<IrqTrigger>,
    ) -> Result<(), DeviceError> {
        if queues.len() != 1 {
            return Err(DeviceError::QueueCount {
                got: queues.len(),
                want: 1,
            });
        }
        let queue = queues.remove(0);
        self.active = Some(Active { mem, queue, irq });
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        if index == 0 {
            self.process();
        }
    }

    fn reset(&mut self) {
        self.active = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_disk_flags() {
        assert_eq!(
            DiskConfig::parse("/a/b.img:ro"),
            DiskConfig {
                path: "/a/b.img".into(),
                read_only: true
            }
        );
        assert!(!DiskConfig::parse("/a/b.img").read_only);
        assert_eq!(DiskConfig::parse("x:rw").path, PathBuf::from("x"));
    }
}
