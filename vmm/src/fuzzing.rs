//! A VM without KVM: guest memory with the real layout and every service
//! wired exactly as `vstate::vm::run` wires them, with exits and hypercalls
//! driven by hand. The unit tests use it, and so do the fuzz targets
//! (`vmm/fuzz`: the hypercall argument decoder and the DMA program
//! decoder), whose bodies [`run_hypercalls`] and [`run_dma_program`] also
//! run seeded in `cargo test`.

use std::sync::Arc;

use abi::config::TlbModel;
use abi::hypercall::{self as hc, Hypercall, Wire, HC_PORT};
use abi::layout;
use iommu::IommuConfig;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::services::bench::Bench;
use crate::services::iommu::IommuService;
use crate::services::litmus::{LitmusBoot, LitmusSession};
use crate::services::platform::{CheckListener, Platform};
use crate::services::probe::Probes;
use crate::services::selftest::Selftest;
use crate::services::{mmu, tlb};
use crate::vstate::{route, Exit, Flow, GuestFault, NoRegs, Service, VcpuCtx, Wiring};

/// vCPUs of a [`TestVm`].
pub const VCPUS: u64 = 2;

/// The guest's memory map with the smallest RAM it allows.
pub fn test_memory() -> GuestMemoryMmap {
    crate::vstate::vm::guest_memory(layout::MIN_MEM).expect("guest memory")
}

/// Every service of a litmus or self-test run, on [`test_memory`].
pub struct TestVm {
    pub mem: GuestMemoryMmap,
    pub wiring: Wiring,
    pub services: Vec<Arc<dyn Service>>,
    pub selftest: Arc<Selftest>,
    pub bench: Arc<Bench>,
    pub probes: Arc<Probes>,
    pub iommu: Arc<IommuService>,
    pub session: Arc<LitmusSession>,
    pub msis: Arc<std::sync::Mutex<Vec<(u64, u32)>>>,
    pub parking: Arc<crate::vstate::Parking>,
}

/// A raw reply: result words and data.
pub type RawReply = ([u64; 4], Vec<u8>);

impl TestVm {
    pub fn new(tlb: TlbModel) -> Self {
        let mem = test_memory();
        let selftest = Selftest::new(false);
        let bench = Bench::new();
        let probes = Probes::new();
        let sched = crate::services::sched::Sched::new();
        let iommu = IommuService::new(
            IommuConfig::default(),
            None,
            Some(sched.clone() as Arc<dyn crate::services::sched::Waker>),
        );
        // A session of 4 iterations with a blob the tests never run.
        let tlb = tlb::Tlb::new(tlb, 1, None, Some(sched.clone() as Arc<dyn crate::services::sched::Waker>));
        let session = LitmusSession::new(vec![0; 64], 1, 0, 4, std::time::Duration::from_secs(3));
        let boot: Arc<LitmusBoot> = session.boot(None);
        let services: Vec<Arc<dyn Service>> = vec![
            Platform::new(false, Some(selftest.clone() as Arc<dyn CheckListener>)),
            mmu::Mmu::new(
                Some(iommu.clone() as Arc<dyn mmu::TableTracker>),
                Some(tlb.clone() as Arc<dyn mmu::LocalFlush>),
            ),
            tlb,
            sched,
            iommu.clone(),
            selftest.clone(),
            bench.clone(),
            probes.clone(),
            boot,
        ];
        let parking = Arc::new(crate::vstate::Parking::new(VCPUS));
        let msis = Arc::new(std::sync::Mutex::new(Vec::new()));
        let m = msis.clone();
        let msi = Arc::new(move |a, d| m.lock().unwrap_or_else(|e| e.into_inner()).push((a, d)));
        let wiring =
            Wiring::wire(&mem, VCPUS, msi, Arc::new(crate::vstate::VmStats::new(VCPUS)), parking.clone(), &services)
                .expect("services wire in");
        TestVm { mem, wiring, services, selftest, bench, probes, iommu, session, msis, parking }
    }

    /// Routes one exit of vCPU `cpu`.
    pub fn exit(&self, cpu: u64, exit: Exit<'_>) -> Result<Flow, GuestFault> {
        let mut ctx = VcpuCtx { cpu, mem: &self.mem, regs: &NoRegs };
        route(&self.wiring.buses, &mut ctx, exit)
    }

    /// Runs the exit hooks of vCPU `cpu` (after an exit that is activity,
    /// not waiting).
    pub fn after_exit(&self, cpu: u64) {
        let mut ctx = VcpuCtx { cpu, mem: &self.mem, regs: &NoRegs };
        for h in self.wiring.exit_hooks.iter() {
            h.after_exit(&mut ctx, false);
        }
    }

    /// Fills `cpu`'s mailbox (op, args, `data`, declared length `len`) and exits on the hypercall port.
    pub fn hypercall_raw_len(
        &self,
        cpu: u64,
        op: u64,
        args: [u64; 8],
        data: &[u8],
        len: u64,
    ) -> Result<RawReply, GuestFault> {
        self.hypercall_through(HC_PORT, cpu, op, args, data, len)
    }

    /// As [`Self::hypercall_raw_len`], through `port` (`HC_USER_PORT`: the user mailbox).
    fn hypercall_through(
        &self,
        port: u16,
        cpu: u64,
        op: u64,
        args: [u64; 8],
        data: &[u8],
        len: u64,
    ) -> Result<RawReply, GuestFault> {
        let mb = if port == HC_PORT { layout::mailbox(cpu) } else { layout::user_mailbox(cpu) };
        let w = |off: u64, v: u64| self.mem.write_obj(v, GuestAddress(mb + off)).expect("mailbox");
        w(hc::OFF_OP, op);
        for (i, a) in args.iter().enumerate() {
            w(hc::OFF_ARGS + 8 * i as u64, *a);
        }
        w(hc::OFF_LEN, len);
        let n = data.len().min(hc::DATA_LEN);
        self.mem.write_slice(&data[..n], GuestAddress(mb + hc::OFF_DATA)).expect("mailbox");
        match self.exit(cpu, Exit::IoOut { port, data: &[0] })? {
            // A parked vCPU's reply is already written; there is no KVM to sleep in.
            Flow::Resume | Flow::Park => {}
            Flow::End(e) => panic!("a hypercall ended the VM: {e}"),
        }
        let r = |off: u64| self.mem.read_obj::<u64>(GuestAddress(mb + off)).expect("mailbox");
        let ret = [r(hc::OFF_RET), r(hc::OFF_RET + 8), r(hc::OFF_RET + 16), r(hc::OFF_RET + 24)];
        let len = (r(hc::OFF_LEN) as usize).min(hc::DATA_LEN);
        let mut out = vec![0u8; len];
        self.mem.read_slice(&mut out, GuestAddress(mb + hc::OFF_DATA)).expect("mailbox");
        Ok((ret, out))
    }

    pub fn hypercall_raw(&self, cpu: u64, op: u64, args: [u64; 8], data: &[u8]) -> Result<RawReply, GuestFault> {
        self.hypercall_raw_len(cpu, op, args, data, data.len() as u64)
    }

    /// A typed hypercall, as the guest makes it.
    pub fn call<H: Hypercall>(
        &self,
        cpu: u64,
        req: H::Request,
        data: &[u8],
    ) -> Result<(H::Reply, Vec<u8>), GuestFault> {
        let mut args = [0u64; 8];
        req.encode(&mut args);
        let (ret, out) = self.hypercall_raw(cpu, H::OP as u64, args, data)?;
        let reply = H::Reply::decode(&ret).expect("the VMM's reply decodes");
        Ok((reply, out))
    }

    /// A typed hypercall as code at CPL3 makes it (user mailbox, `HC_USER_PORT`).
    pub fn call_user<H: Hypercall>(&self, cpu: u64, req: H::Request) -> Result<H::Reply, GuestFault> {
        let mut args = [0u64; 8];
        req.encode(&mut args);
        let (ret, _) = self.hypercall_through(hc::HC_USER_PORT, cpu, H::OP as u64, args, &[], 0)?;
        Ok(H::Reply::decode(&ret).expect("the VMM's reply decodes"))
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        for s in &self.services {
            s.stopping();
        }
    }
}

/// Whatever the guest puts in its mailbox, the VMM answers or reports a
/// guest fault; it never panics, hangs or grows without bound. Input:
/// records of (vCPU byte, op byte, 8 argument words, length word, data
/// byte count, data); arguments are biased towards the interesting GPAs.
pub fn run_hypercalls(data: &[u8]) {
    let vm = TestVm::new(if data.first().is_some_and(|b| b & 1 == 1) {
        TlbModel::Evict { ppm: 500_000 }
    } else {
        TlbModel::Lazy
    });
    let mut b = Input(data);
    let interesting = [
        0,
        layout::PT_BASE,
        layout::PT_BASE + 8,
        layout::SHADOW_BASE,
        layout::FREE_START,
        layout::FREE_START + 4096,
        layout::LITMUS_VARS,
        layout::USER_BASE + 0x1000,
        layout::MIN_MEM - 8,
        u64::MAX,
        u64::MAX - 7,
        u64::MAX / 8 + 1,
        1,
        2,
        3,
    ];
    for _ in 0..32 {
        let Some(cpu) = b.u8() else { break };
        let Some(op) = b.u8() else { break };
        let mut args = [0u64; 8];
        for a in &mut args {
            let Some(sel) = b.u8() else { break };
            *a = match sel & 3 {
                0 => interesting[(sel >> 2) as usize % interesting.len()],
                1 => (sel >> 2) as u64,
                _ => b.u64().unwrap_or(0),
            };
        }
        let len = match b.u8() {
            Some(l) if l & 0x80 != 0 => b.u64().unwrap_or(0),
            Some(l) => l as u64 * 8,
            None => 0,
        };
        let n = (len as usize).min(b.0.len()).min(hc::DATA_LEN);
        let payload = b.take(n);
        // Sometimes an op number nobody knows, or a known one.
        let op = if op & 0x80 != 0 { op as u64 * 0x101 } else { (op % 32) as u64 };
        let _ = vm.hypercall_raw_len(cpu as u64 % VCPUS, op, args, payload, len);
        vm.after_exit(cpu as u64 % VCPUS);
    }
    // Whatever was submitted stops now (Drop), within milliseconds.
}

/// Any bytes as a device program at a guest address, run to its end or its
/// first error on the calling thread: never a panic or a hang (waits and
/// retries are bounded by the engine's stop, set here after a few ms).
pub fn run_dma_program(data: &[u8]) {
    let vm = TestVm::new(TlbModel::Lazy);
    let mut b = Input(data);
    let at = match b.u8() {
        Some(0) => layout::PT_BASE,
        Some(1) => layout::SHADOW_BASE - 8,
        Some(2) => layout::MIN_MEM - 32,
        _ => layout::FREE_START + 0x1000,
    };
    let header = [b.u64().unwrap_or(1) & 0xff, b.u64().unwrap_or(0) % 64];
    for (i, w) in header.iter().enumerate() {
        let _ = vm.mem.write_obj(*w, GuestAddress(at + 8 * i as u64));
    }
    let mut i = 0u64;
    while let Some(kind) = b.u8() {
        let value = b.u64().unwrap_or(0) % 50; // short delays, small operands
        let va = match b.u8() {
            Some(0) => layout::PT_BASE,
            Some(1) => layout::SHADOW_BASE,
            Some(2) => layout::LITMUS_VARS,
            Some(3) => u64::MAX - 7,
            Some(x) => layout::USER_BASE + x as u64 * 8,
            None => 0,
        };
        let flags = match b.u8() {
            Some(f) => (f as u64 & 3) << 8,
            None => 0,
        };
        let op = (kind as u64 % 13) | flags;
        let rec = abi::dma::OpRecord { op, va, value, result: 0 };
        let _ = abi::dma::decode_op(i, &rec);
        let Some(gpa) = abi::dma::op_gpa(at, i) else { break };
        for (k, w) in [rec.op, rec.va, rec.value, 0].iter().enumerate() {
            let _ = vm.mem.write_obj(*w, GuestAddress(gpa + 8 * k as u64));
        }
        i += 1;
    }
    // The VM "stops" 5 ms in: parked waits, retries and delays end at once.
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            vm.iommu.stopping();
        });
        let _ = vm.iommu.run_program_now(at);
    });
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(2), "a program outlived the engine's stop: {took:?}");
}

/// Reads the fuzz input.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&x, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(x)
    }
    fn u64(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..8 {
            v |= (self.u8()? as u64) << (8 * i);
        }
        Some(v)
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        a
    }
}
