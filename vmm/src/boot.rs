//! Getting a guest image into memory: checks with clear messages, the ELF
//! load (linux-loader), boot page tables, GDT, command line and `BootInfo`.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use abi::layout::{self, PAGE_SIZE};
use abi::{BootInfo, BOOT_INFO_MAGIC, BOOT_INFO_VERSION};
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// A guest image that cannot be booted, or boot data that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{}: {reason}", path.display())]
    Bad { path: PathBuf, reason: String },
    #[error("cannot read guest image {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("guest memory: {what}: {source}")]
    Memory {
        what: &'static str,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("guest memory: {what}: {reason}")]
    Boot { what: &'static str, reason: String },
    #[error("--cmdline: {0}")]
    Cmdline(String),
}

pub type Result<T> = std::result::Result<T, ImageError>;

const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;

/// What `load_image` found out about the kernel.
#[derive(Clone, Copy, Debug)]
pub struct LoadedImage {
    pub entry: u64,
    pub start: u64,
    pub end: u64,
    /// PVH entry point (Xen ELF note), if the image has one.
    pub pvh_entry: Option<u64>,
}

fn bad(path: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::Bad { path: path.to_path_buf(), reason: reason.into() }
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// Checks that `image` is an x86-64 ELF64 executable whose loadable
/// segments fit in the kernel window of the memory map and in `mem_size`.
/// Every rejection says what is wrong, so a user can fix the image.
pub fn check_image(path: &Path, image: &[u8], mem_size: u64) -> Result<()> {
    if image.len() < 4 || &image[..4] != b"\x7fELF" {
        let head: Vec<String> = image.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(bad(
            path,
            format!("not an ELF file (starts with bytes [{}], expected 7f 45 4c 46)", head.join(" ")),
        ));
    }
    if image.len() < 64 {
        return Err(bad(path, format!("truncated ELF header ({} bytes, need 64)", image.len())));
    }
    match image[4] {
        2 => {}
        1 => return Err(bad(path, "32-bit ELF (ELFCLASS32); shootdown boots x86-64 ELF64 images")),
        c => return Err(bad(path, format!("invalid ELF class {c}"))),
    }
    if image[5] != 1 {
        return Err(bad(path, "big-endian ELF; x86-64 images are little-endian"));
    }
    let machine = u16_at(image, 18);
    if machine != EM_X86_64 {
        let name = match machine {
            3 => "i386",
            40 => "ARM",
            183 => "AArch64",
            243 => "RISC-V",
            _ => "unknown",
        };
        return Err(bad(path, format!("ELF for machine {machine} ({name}), not x86-64 (62)")));
    }
    let etype = u16_at(image, 16);
    if etype != 2 {
        return Err(bad(
            path,
            format!("ELF type {etype} is not EXEC (2); link the guest as a static, non-PIE executable"),
        ));
    }
    let phoff = u64_at(image, 32) as usize;
    let phentsize = u16_at(image, 54) as usize;
    let phnum = u16_at(image, 56) as usize;
    let table_end = phnum.checked_mul(phentsize).and_then(|n| n.checked_add(phoff));
    if phentsize < 56 || table_end.is_none_or(|e| e > image.len()) {
        return Err(bad(path, "program header table lies outside the file"));
    }
    let window = layout::KERNEL_BASE..layout::KERNEL_BASE + layout::KERNEL_MAX;
    let mut loads = 0;
    for i in 0..phnum {
        let ph = &image[phoff + i * phentsize..];
        if u32_at(ph, 0) != PT_LOAD {
            continue;
        }
        loads += 1;
        let (offset, paddr, filesz, memsz) = (u64_at(ph, 8), u64_at(ph, 24), u64_at(ph, 32), u64_at(ph, 40));
        if offset.checked_add(filesz).is_none_or(|e| e > image.len() as u64) {
            return Err(bad(
                path,
                format!("segment {i}: file data lies beyond the end of the file (truncated image?)"),
            ));
        }
        let end = paddr.checked_add(memsz).ok_or_else(|| bad(path, format!("segment {i}: address overflows")))?;
        if end > mem_size {
            return Err(bad(
                path,
                format!("segment {i} at {paddr:#x}..{end:#x} does not fit in guest memory of {} MiB", mem_size >> 20),
            ));
        }
        if paddr < window.start || end > window.end {
            return Err(bad(path, format!(
                "segment {i} at {paddr:#x}..{end:#x} lies outside the kernel window {:#x}..{:#x} of shootdown's memory map",
                window.start, window.end
            )));
        }
    }
    if loads == 0 {
        return Err(bad(path, "no loadable (PT_LOAD) segments"));
    }
    Ok(())
}

/// Loads a checked image into guest memory.
pub fn load_image(path: &Path, image: &[u8], mem: &GuestMemoryMmap) -> Result<LoadedImage> {
    let mut cursor = Cursor::new(image);
    let r = Elf::load(mem, None, &mut cursor, Some(GuestAddress(layout::KERNEL_BASE)))
        .map_err(|e| bad(path, format!("ELF load failed: {e}")))?;
    let pvh_entry = match r.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(a) => Some(a.0),
        _ => None,
    };
    let start = lowest_load_addr(image);
    Ok(LoadedImage { entry: r.kernel_load.0, start, end: r.kernel_end, pvh_entry })
}

fn lowest_load_addr(image: &[u8]) -> u64 {
    let phoff = u64_at(image, 32) as usize;
    let (phentsize, phnum) = (u16_at(image, 54) as usize, u16_at(image, 56) as usize);
    (0..phnum)
        .map(|i| &image[phoff + i * phentsize..])
        .filter(|ph| u32_at(ph, 0) == PT_LOAD)
        .map(|ph| u64_at(ph, 24))
        .min()
        .unwrap_or(layout::KERNEL_BASE)
}

const PTE_P: u64 = 1;
const PTE_RW: u64 = 1 << 1;
const PTE_PS: u64 = 1 << 7;

/// Identity map of the first 4 GiB with 2 MiB pages: the kernel's direct
/// map. PML4 slots 1..255 stay empty for test address spaces.
pub fn write_boot_page_tables(mem: &GuestMemoryMmap) -> Result<()> {
    let w = |addr: u64, val: u64| {
        mem.write_obj(val, GuestAddress(addr)).map_err(|source| ImageError::Memory { what: "boot page tables", source })
    };
    w(layout::BOOT_PML4, layout::BOOT_PDPT | PTE_P | PTE_RW)?;
    for pd in 0..layout::BOOT_PD_COUNT {
        let pd_addr = layout::BOOT_PD + pd * PAGE_SIZE;
        w(layout::BOOT_PDPT + pd * 8, pd_addr | PTE_P | PTE_RW)?;
        for i in 0..512u64 {
            let phys = (pd << 30) | (i << 21);
            w(pd_addr + i * 8, phys | PTE_P | PTE_RW | PTE_PS)?;
        }
    }
    Ok(())
}

/// Flat GDT: null, 64-bit code (0x08), data (0x10).
pub const GDT_ENTRIES: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];

pub fn write_gdt(mem: &GuestMemoryMmap) -> Result<()> {
    for (i, e) in GDT_ENTRIES.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(layout::GDT + 8 * i as u64))
            .map_err(|source| ImageError::Memory { what: "GDT", source })?;
    }
    Ok(())
}

/// PVH boot (Xen `XEN_ELFNOTE_PHYS32_ENTRY`): `hvm_start_info` with the
/// command line and an E820-style memory map of guest RAM, for an image that
/// brings itself up from 32-bit protected mode.
pub fn write_pvh_start_info(mem: &GuestMemoryMmap, mem_size: u64) -> Result<()> {
    use linux_loader::configurator::pvh::PvhBootConfigurator;
    use linux_loader::configurator::{BootConfigurator, BootParams};
    use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_start_info};
    const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
    const E820_RAM: u32 = 1;
    let memmap = [hvm_memmap_table_entry { addr: 0, size: mem_size, type_: E820_RAM, reserved: 0 }];
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: layout::CMDLINE,
        memmap_paddr: layout::PVH_MEMMAP,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut params = BootParams::new(&info, GuestAddress(layout::PVH_START_INFO));
    params.set_sections(&memmap, GuestAddress(layout::PVH_MEMMAP));
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
        .map_err(|e| ImageError::Boot { what: "PVH start info", reason: e.to_string() })
}

/// Writes the command line (via linux-loader's `Cmdline`, which checks it)
/// and returns its length.
pub fn write_cmdline(mem: &GuestMemoryMmap, text: &str) -> Result<u64> {
    let mut cl = Cmdline::new(layout::CMDLINE_MAX as usize).map_err(|e| ImageError::Cmdline(e.to_string()))?;
    if !text.trim().is_empty() {
        cl.insert_str(text.trim()).map_err(|e| ImageError::Cmdline(e.to_string()))?;
    }
    linux_loader::loader::load_cmdline(mem, GuestAddress(layout::CMDLINE), &cl)
        .map_err(|e| ImageError::Cmdline(e.to_string()))?;
    Ok(cl.as_cstring().map(|c| c.as_bytes().len() as u64).unwrap_or(0))
}

pub fn write_boot_info(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<()> {
    let fields = [
        BOOT_INFO_MAGIC,
        BOOT_INFO_VERSION,
        info.num_vcpus,
        info.mem_size,
        info.cmdline_addr,
        info.cmdline_len,
        info.tsc_khz,
        info.kernel_start,
        info.kernel_end,
        info.free_start,
        info.mode,
        info.mode_arg,
    ];
    const _: () = assert!(std::mem::size_of::<BootInfo>() == 12 * 8);
    for (i, f) in fields.iter().enumerate() {
        mem.write_obj(*f, GuestAddress(layout::BOOT_INFO + 8 * i as u64))
            .map_err(|source| ImageError::Memory { what: "BootInfo", source })?;
    }
    Ok(())
}
