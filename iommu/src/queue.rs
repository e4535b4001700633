//! The register page, the invalidation queue (VT-d queued invalidation) and
//! the page-request queue. Layouts are in [`abi::iommu`].
//!
//! The queue is processed synchronously on the tail write (the doorbell):
//! when `mmio_write(IQT)` returns, every descriptor up to the tail has been
//! carried out, or processing stopped at a malformed one with `STATUS.IQE`
//! set and `IQERCD` saying why. This is the strongest completion order a
//! device can give; a wait descriptor therefore completes "when everything
//! before it is done" by construction, and the only way for a guest to see
//! a stale translation is to not invalidate it (or invalidate it too late).

use abi::iommu::{cap, desc, iqa, iqe, pasid, pqa, prq, reg, status, DevTlbScope, InvDesc, PageRequest, VERSION};
use vm_memory::GuestMemory;

use crate::event::{CacheKind, Event, EvictReason};
use crate::{mem, Iommu, IotlbEntry, IotlbKey, Msi, MsiSource};

/// Register state (power-on: all zero).
#[derive(Clone, Debug, Default)]
pub(crate) struct Regs {
    pub status: u64,
    pub pasid_table: u64,
    pub iqa: u64,
    pub iq_configured: bool,
    pub iqh: u64,
    pub iqt: u64,
    pub iqercd: u64,
    pub pqa: u64,
    pub pq_configured: bool,
    pub pqh: u64,
    pub pqt: u64,
    pub feaddr: u64,
    pub fedata: u64,
    pub ieaddr: u64,
    pub iedata: u64,
    pub peaddr: u64,
    pub pedata: u64,
}

/// An invalidation-queue error, as recorded in `IQERCD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueError {
    /// Byte offset of the faulting descriptor (or the unchanged head).
    pub head: u64,
    /// One of [`abi::iommu::iqe`].
    pub code: u8,
}

/// What an MMIO write made the device do; the VMM delivers `msis`.
#[must_use]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MmioOutcome {
    /// Interrupts to deliver, in order.
    pub msis: Vec<Msi>,
    /// Descriptors completed by this write.
    pub processed: u64,
    /// Processing stopped with this error (`STATUS.IQE` is set).
    pub error: Option<QueueError>,
}

impl Iommu {
    /// Reads the 64-bit register at `offset` (see [`abi::iommu::reg`]).
    /// Unknown or misaligned offsets read as 0.
    pub fn mmio_read(&self, offset: u64) -> u64 {
        let r = &self.regs;
        match offset {
            reg::VERSION => VERSION,
            reg::CAP => self.cap(),
            reg::STATUS => r.status,
            reg::PASID_TABLE => r.pasid_table,
            reg::IQA => r.iqa,
            reg::IQH => r.iqh,
            reg::IQT => r.iqt,
            reg::IQERCD => r.iqercd,
            reg::PQA => r.pqa,
            reg::PQH => r.pqh,
            reg::PQT => r.pqt,
            reg::FEADDR => r.feaddr,
            reg::FEDATA => r.fedata,
            reg::IEADDR => r.ieaddr,
            reg::IEDATA => r.iedata,
            reg::PEADDR => r.peaddr,
            reg::PEDATA => r.pedata,
            _ => 0,
        }
    }

    fn cap(&self) -> u64 {
        let mut c = cap::DW256
            | (desc::MAX_AM as u64) << cap::MAX_AM_SHIFT
            | (pasid::PASID_BITS as u64) << cap::PASID_BITS_SHIFT
            | (self.iotlb.cache.capacity().min(u32::MAX as usize) as u64) << cap::IOTLB_ENTRIES_SHIFT;
        if self.pwc.is_some() {
            c |= cap::PWC;
        }
        if self.devtlb.is_some() {
            c |= cap::DEVTLB;
        }
        c
    }

    /// An MMIO read as KVM reports it: `data.len()` of 8 (aligned), or 4 (either
    /// half of a register). Other sizes read as zeros.
    pub fn mmio_read_bytes(&self, offset: u64, data: &mut [u8]) {
        let v = self.mmio_read(offset & !7);
        match (data.len(), offset % 8) {
            (8, 0) => data.copy_from_slice(&v.to_le_bytes()),
            (4, 0) => data.copy_from_slice(&(v as u32).to_le_bytes()),
            (4, 4) => data.copy_from_slice(&((v >> 32) as u32).to_le_bytes()),
            _ => data.fill(0),
        }
    }

    /// An MMIO write as KVM reports it: 8 bytes (aligned) or 4 (either half;
    /// the other half keeps its value). Other sizes are ignored.
    pub fn mmio_write_bytes<M: GuestMemory + ?Sized>(&mut self, offset: u64, data: &[u8], mem: &M) -> MmioOutcome {
        let aligned = offset & !7;
        let v = match (data.len(), offset % 8) {
            (8, 0) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(data);
                u64::from_le_bytes(b)
            }
            (4, half @ (0 | 4)) => {
                let mut b = [0u8; 4];
                b.copy_from_slice(data);
                let part = u32::from_le_bytes(b) as u64;
                let cur = self.raw_reg(aligned);
                if half == 0 {
                    (cur & !0xffff_ffff) | part
                } else {
                    (cur & 0xffff_ffff) | (part << 32)
                }
            }
            _ => return MmioOutcome::default(),
        };
        self.mmio_write(aligned, v, mem)
    }

    /// Value a partial write merges with: the register as stored, except
    /// that W1C `STATUS` merges with 0 (writing one half must not clear bits
    /// of the other).
    fn raw_reg(&self, offset: u64) -> u64 {
        match offset {
            reg::STATUS => 0,
            _ => self.mmio_read(offset),
        }
    }

    /// Writes the 64-bit register at `offset`. Writing `IQT` is the doorbell:
    /// the queue is processed up to the new tail before this returns. Writing
    /// 1 to `STATUS.IQE` clears the error and resumes processing from `IQH`.
    pub fn mmio_write<M: GuestMemory + ?Sized>(&mut self, offset: u64, value: u64, mem: &M) -> MmioOutcome {
        let mut out = MmioOutcome::default();
        let r = &mut self.regs;
        match offset {
            reg::STATUS => {
                let was_error = r.status & status::IQE != 0;
                r.status &= !(value & status::ALL);
                if was_error && r.status & status::IQE == 0 {
                    r.iqercd = 0;
                    self.process_queue(mem, &mut out);
                }
            }
            reg::PASID_TABLE => r.pasid_table = value & (pasid::TABLE_BASE_MASK | pasid::PTS_MASK),
            reg::IQA => {
                r.iqa = value & (iqa::BASE_MASK | iqa::DW_256 | iqa::QS_MASK);
                r.iq_configured = true;
                r.iqh = 0;
                r.iqt = 0;
            }
            reg::IQT => self.write_tail(value, mem, &mut out),
            reg::PQA => {
                r.pqa = value & (pqa::BASE_MASK | pqa::QS_MASK);
                r.pq_configured = true;
                r.pqh = 0;
                r.pqt = 0;
            }
            reg::PQH if r.pq_configured && value < pqa::queue_bytes(r.pqa) && value % prq::RECORD_BYTES == 0 => {
                r.pqh = value;
            }
            reg::FEADDR => r.feaddr = value,
            reg::FEDATA => r.fedata = value & 0xffff_ffff,
            reg::IEADDR => r.ieaddr = value,
            reg::IEDATA => r.iedata = value & 0xffff_ffff,
            reg::PEADDR => r.peaddr = value,
            reg::PEDATA => r.pedata = value & 0xffff_ffff,
            _ => {}
        }
        out
    }

    fn write_tail<M: GuestMemory + ?Sized>(&mut self, value: u64, mem: &M, out: &mut MmioOutcome) {
        let r = &self.regs;
        if !r.iq_configured {
            return self.queue_error(iqe::NOT_CONFIGURED, out);
        }
        if value >= iqa::queue_bytes(r.iqa) {
            return self.queue_error(iqe::TAIL_OUT_OF_RANGE, out);
        }
        if value % iqa::desc_bytes(r.iqa) != 0 {
            return self.queue_error(iqe::TAIL_MISALIGNED, out);
        }
        self.regs.iqt = value;
        self.process_queue(mem, out);
    }

    /// Stops the queue: `STATUS.IQE`, `IQERCD`, fault MSI.
    fn queue_error(&mut self, code: u8, out: &mut MmioOutcome) {
        let head = self.regs.iqh;
        self.regs.status |= status::IQE;
        self.regs.iqercd = iqe::encode(head, code);
        self.stats.queue_errors += 1;
        out.error = Some(QueueError { head, code });
        if self.regs.feaddr != 0 {
            out.msis.push(Msi { source: MsiSource::Fault, address: self.regs.feaddr, data: self.regs.fedata as u32 });
        }
        self.emit(Event::QueueError { head, code });
    }

    /// Carries out descriptors from `IQH` to `IQT` (at most one lap).
    fn process_queue<M: GuestMemory + ?Sized>(&mut self, mem: &M, out: &mut MmioOutcome) {
        if self.regs.status & status::IQE != 0 || !self.regs.iq_configured {
            return;
        }
        let base = self.regs.iqa & iqa::BASE_MASK;
        let qbytes = iqa::queue_bytes(self.regs.iqa);
        let dbytes = iqa::desc_bytes(self.regs.iqa);
        while self.regs.iqh != self.regs.iqt {
            let head = self.regs.iqh;
            let gpa = base.wrapping_add(head);
            let mut qw = [0u64; 4];
            let mut fetch_ok = true;
            for (i, w) in qw.iter_mut().take((dbytes / 8) as usize).enumerate() {
                match mem::load_u64(mem, gpa.wrapping_add(8 * i as u64)) {
                    Ok(v) => *w = v,
                    Err(_) => fetch_ok = false,
                }
            }
            if !fetch_ok {
                return self.queue_error(iqe::FETCH_FAILED, out);
            }
            let decoded = if dbytes == 32 { InvDesc::decode256(qw) } else { InvDesc::decode([qw[0], qw[1]]) };
            let d = match decoded {
                Ok(d) => d,
                Err(e) => return self.queue_error(e.code(), out),
            };
            self.emit(Event::InvalidationReceived { head, desc: d });
            if let Err(code) = self.execute(head, d, mem, out) {
                return self.queue_error(code, out);
            }
            self.stats.descriptors += 1;
            out.processed += 1;
            self.regs.iqh = (head + dbytes) % qbytes;
        }
    }

    fn execute<M: GuestMemory + ?Sized>(
        &mut self,
        head: u64,
        d: InvDesc,
        mem: &M,
        out: &mut MmioOutcome,
    ) -> Result<(), u8> {
        let (mut iotlb, mut devtlb, mut pwc) = (0, 0, 0);
        match d {
            InvDesc::PasidPages { pasid, addr, am, leaf_only } => {
                let (start, len) = InvDesc::range(addr, am);
                let gone = self.iotlb.drop_range(pasid, start, len);
                iotlb = self.report_tlb_drops(CacheKind::Iotlb, gone);
                if !leaf_only {
                    pwc = self.drop_pwc(|k| k.pasid == pasid && overlaps_region(k, start, len));
                }
            }
            InvDesc::PasidAll { pasid } => {
                let gone = self.iotlb.drop_where(|k, _| k.pasid == pasid);
                iotlb = self.report_tlb_drops(CacheKind::Iotlb, gone);
                pwc = self.drop_pwc(|k| k.pasid == pasid);
            }
            InvDesc::Global => {
                let gone = self.iotlb.drop_where(|_, _| true);
                iotlb = self.report_tlb_drops(CacheKind::Iotlb, gone);
                pwc = self.drop_pwc(|_| true);
            }
            InvDesc::DevTlb(scope) => {
                if let Some(d) = &mut self.devtlb {
                    let gone = match scope {
                        DevTlbScope::All => d.drop_where(|_, _| true),
                        DevTlbScope::Pasid { pasid } => d.drop_where(|k, _| k.pasid == pasid),
                        DevTlbScope::Pages { pasid, addr, am } => {
                            let (start, len) = InvDesc::range(addr, am);
                            d.drop_range(pasid, start, len)
                        }
                    };
                    devtlb = self.report_tlb_drops(CacheKind::DevTlb, gone);
                }
            }
            InvDesc::Wait { status_addr, data, irq, .. } => {
                if let Some(a) = status_addr {
                    if !self.may_write(a, 4) {
                        return Err(iqe::STATUS_WRITE_FAILED);
                    }
                    mem::store_u32(mem, a, data).map_err(|_| iqe::STATUS_WRITE_FAILED)?;
                }
                if irq {
                    self.regs.status |= status::IWC;
                    if self.regs.ieaddr != 0 {
                        out.msis.push(Msi {
                            source: MsiSource::InvalidationComplete,
                            address: self.regs.ieaddr,
                            data: self.regs.iedata as u32,
                        });
                    }
                }
                self.stats.waits += 1;
                self.emit(Event::WaitCompleted { head, status_addr, data, irq });
                return Ok(());
            }
        }
        self.emit(Event::InvalidationCompleted { head, desc: d, iotlb, devtlb, pwc });
        Ok(())
    }

    fn report_tlb_drops(&mut self, cache: CacheKind, gone: Vec<(IotlbKey, IotlbEntry)>) -> usize {
        for (k, e) in &gone {
            self.emit(Event::Evict {
                cache,
                pasid: k.pasid,
                va: k.vpn << 12,
                level: e.size.level(),
                reason: EvictReason::Invalidation,
            });
        }
        gone.len()
    }

    fn drop_pwc(&mut self, gone: impl Fn(&crate::PwcKey) -> bool) -> usize {
        let Some(p) = &mut self.pwc else { return 0 };
        let mut dropped = Vec::new();
        p.retain(|k, _| !gone(k), |k, _| dropped.push(k));
        for k in &dropped {
            self.sink.record(&Event::Evict {
                cache: CacheKind::Pwc,
                pasid: k.pasid,
                va: k.region().0,
                level: k.level,
                reason: EvictReason::Invalidation,
            });
        }
        dropped.len()
    }

    /// Writes a page-request record; returns (queued, MSI to raise).
    pub(crate) fn prq_push<M: GuestMemory + ?Sized>(&mut self, rec: &PageRequest, mem: &M) -> (bool, Option<Msi>) {
        let record_gpa = (self.regs.pqa & pqa::BASE_MASK).wrapping_add(self.regs.pqt);
        let allowed = self.may_write(record_gpa, prq::RECORD_BYTES);
        let r = &mut self.regs;
        let dropped = |r: &mut Regs, stats: &mut crate::Stats| {
            r.status |= status::PRO;
            stats.page_requests_dropped += 1;
            (false, None)
        };
        if !r.pq_configured || !allowed {
            return dropped(r, &mut self.stats);
        }
        let size = pqa::queue_bytes(r.pqa);
        let next = (r.pqt + prq::RECORD_BYTES) % size;
        if next == r.pqh {
            return dropped(r, &mut self.stats);
        }
        let gpa = (r.pqa & pqa::BASE_MASK).wrapping_add(r.pqt);
        let words = rec.encode();
        for (i, w) in words.iter().enumerate() {
            if mem::store_u64(mem, gpa.wrapping_add(8 * i as u64), *w).is_err() {
                return dropped(r, &mut self.stats);
            }
        }
        r.pqt = next;
        r.status |= status::PPR;
        self.stats.page_requests += 1;
        let msi =
            (r.peaddr != 0).then_some(Msi { source: MsiSource::PageRequest, address: r.peaddr, data: r.pedata as u32 });
        (true, msi)
    }
}

fn overlaps_region(k: &crate::PwcKey, start: u64, len: u64) -> bool {
    let (s, l) = k.region();
    crate::tlb::ranges_overlap(s, l, start, len)
}
