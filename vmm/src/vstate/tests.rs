//! Exit routing and the hypercall table, without KVM (as Firecracker tests
//! `handle_kvm_exit` against a dummy device).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use abi::hypercall::{Op, HC_PORT};

use super::*;
use crate::fuzzing::{test_memory, TestVm};

/// Remembers what it saw; reads return a counter.
#[derive(Default)]
struct DummyDevice {
    writes: Mutex<Vec<(u64, Vec<u8>)>>,
    reads: AtomicU64,
}

impl BusDevice for DummyDevice {
    fn read(&self, _: &mut VcpuCtx<'_>, offset: u64, data: &mut [u8]) -> Result<(), GuestFault> {
        let n = self.reads.fetch_add(1, Ordering::Relaxed);
        data.fill((n + offset) as u8);
        Ok(())
    }
    fn write(&self, _: &mut VcpuCtx<'_>, offset: u64, data: &[u8]) -> Result<Flow, GuestFault> {
        self.writes.lock().unwrap().push((offset, data.to_vec()));
        if data == [0xee] {
            return Ok(Flow::End(EndReason::GuestExit(7)));
        }
        Ok(Flow::Resume)
    }
}

fn buses_with(dev: Arc<DummyDevice>) -> Buses {
    let mut b = Buses::default();
    b.pio.insert(0x100, 8, dev.clone()).unwrap();
    b.mmio.insert(0xd000_0000, 0x1000, dev).unwrap();
    b
}

#[test]
fn io_out_reaches_the_device_at_its_offset() {
    let dev = Arc::new(DummyDevice::default());
    let buses = buses_with(dev.clone());
    let mem = test_memory();
    let mut ctx = VcpuCtx { cpu: 0, mem: &mem, regs: &NoRegs };
    assert!(matches!(route(&buses, &mut ctx, Exit::IoOut { port: 0x103, data: &[1, 2] }), Ok(Flow::Resume)));
    assert_eq!(dev.writes.lock().unwrap().as_slice(), &[(3, vec![1, 2])]);
}

#[test]
fn io_in_is_served_and_unclaimed_ports_read_all_ones() {
    let dev = Arc::new(DummyDevice::default());
    let buses = buses_with(dev.clone());
    let mem = test_memory();
    let mut ctx = VcpuCtx { cpu: 0, mem: &mem, regs: &NoRegs };
    let mut data = [0u8; 2];
    route(&buses, &mut ctx, Exit::IoIn { port: 0x101, data: &mut data }).unwrap();
    assert_eq!(data, [1, 1]);
    let mut data = [0u8; 4];
    route(&buses, &mut ctx, Exit::IoIn { port: 0x80, data: &mut data }).unwrap();
    assert_eq!(data, [0xff; 4]);
    // Writes to unclaimed ports (legacy probes) are ignored.
    assert!(matches!(route(&buses, &mut ctx, Exit::IoOut { port: 0x80, data: &[0] }), Ok(Flow::Resume)));
}

#[test]
fn a_device_can_end_the_vm() {
    let dev = Arc::new(DummyDevice::default());
    let buses = buses_with(dev);
    let mem = test_memory();
    let mut ctx = VcpuCtx { cpu: 1, mem: &mem, regs: &NoRegs };
    let r = route(&buses, &mut ctx, Exit::IoOut { port: 0x100, data: &[0xee] });
    assert!(matches!(r, Ok(Flow::End(EndReason::GuestExit(7)))));
}

#[test]
fn mmio_goes_to_its_device_and_stray_mmio_is_a_guest_fault() {
    let dev = Arc::new(DummyDevice::default());
    let buses = buses_with(dev.clone());
    let mem = test_memory();
    let mut ctx = VcpuCtx { cpu: 0, mem: &mem, regs: &NoRegs };
    route(&buses, &mut ctx, Exit::MmioWrite { addr: 0xd000_0010, data: &5u64.to_le_bytes() }).unwrap();
    assert_eq!(dev.writes.lock().unwrap()[0].0, 0x10);
    let r = route(&buses, &mut ctx, Exit::MmioWrite { addr: 0xe000_0000, data: &0x5a5au64.to_le_bytes() });
    let e = r.unwrap_err().to_string();
    assert_eq!(e, "stray 8-byte write of 0x5a5a to unbacked address 0xe0000000");
    let mut d = [0u8; 4];
    let e = route(&buses, &mut ctx, Exit::MmioRead { addr: 0xe000_0000, data: &mut d }).unwrap_err();
    assert_eq!(e.to_string(), "stray 4-byte read of unbacked address 0xe0000000");
}

#[test]
fn fatal_exits_are_guest_faults() {
    let buses = Buses::default();
    let mem = test_memory();
    let mut ctx = VcpuCtx { cpu: 0, mem: &mem, regs: &NoRegs };
    let e = route(&buses, &mut ctx, Exit::Fault(GuestFault::TripleFault)).unwrap_err();
    assert_eq!(e.to_string(), "triple fault (KVM_EXIT_SHUTDOWN)");
    assert!(matches!(route(&buses, &mut ctx, Exit::Handled), Ok(Flow::Resume)));
}

#[test]
fn overlapping_bus_ranges_are_refused() {
    let mut b = Bus::new();
    let dev = Arc::new(DummyDevice::default());
    b.insert(0x100, 8, dev.clone()).unwrap();
    assert!(b.insert(0x107, 2, dev.clone()).is_err());
    assert!(b.insert(0xf8, 9, dev.clone()).is_err());
    b.insert(0x108, 1, dev.clone()).unwrap();
    b.insert(0xf8, 8, dev).unwrap();
    assert_eq!(b.get(0x108).map(|(_, off)| off), Some(0));
    assert!(b.get(0x109).is_none());
    assert!(b.get(u64::MAX).is_none());
}

struct Twice;
impl HypercallHandler for Twice {
    fn name(&self) -> &'static str {
        "twice"
    }
    fn ops(&self) -> &'static [Op] {
        &[Op::Echo]
    }
    fn handle(&self, _: &mut VcpuCtx<'_>, _: &Call<'_>) -> Result<Reply, GuestFault> {
        Ok(Reply::empty())
    }
}

#[test]
fn one_handler_per_op() {
    let mut t = HypercallTable::new();
    t.register(Arc::new(Twice)).unwrap();
    let e = t.register(Arc::new(Twice)).unwrap_err();
    assert_eq!(e.to_string(), "hypercall ECHO is served by both twice and twice");
}

#[test]
fn unknown_and_unserved_ops_are_bad_hypercalls() {
    let vm = TestVm::new(abi::config::TlbModel::Lazy);
    let e = vm.hypercall_raw(0, 0xdead, [0; 8], &[]).unwrap_err();
    assert_eq!(e.to_string(), "bad hypercall: unknown op 0xdead");
    // TRACE_DRAIN has no service in an untraced run.
    let e = vm.hypercall_raw(0, Op::TraceDrain as u64, [0; 8], &[]).unwrap_err();
    assert!(e.to_string().contains("TRACE_DRAIN served by no service"), "{e}");
}

#[test]
fn data_length_beyond_the_mailbox_is_refused() {
    let vm = TestVm::new(abi::config::TlbModel::Lazy);
    let e = vm.hypercall_raw_len(0, Op::Log as u64, [0; 8], &[], u64::MAX).unwrap_err();
    assert!(e.to_string().contains("data length 18446744073709551615 exceeds the mailbox"), "{e}");
}

#[test]
fn the_exit_port_ends_the_vm_with_its_status() {
    let vm = TestVm::new(abi::config::TlbModel::Lazy);
    let r = vm.exit(0, Exit::IoOut { port: abi::hypercall::EXIT_PORT, data: &3u32.to_le_bytes() });
    assert!(matches!(r, Ok(Flow::End(EndReason::GuestExit(3)))));
    // The hypercall port is on the bus like any device.
    assert!(vm.wiring.buses.pio.get(HC_PORT as u64).is_some());
}
