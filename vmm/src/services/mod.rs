//! Services: what the VMM does for the guest, each owning its state and
//! registering its own hypercalls, bus devices, exit hooks and watches
//! (`crate::vstate::service`). The platform, MMU, TLB and IOMMU services
//! make every run ([`standard`]); the others belong to one mode and keep its
//! results: `selftest`, `litmus`, `bench`, `probe`, `trace`.
//!
//! Adding a hypercall: its types in `abi::hypercall`, its handling in one
//! service here (listed in that service's `ops()`); `vstate/` never changes.

pub mod bench;
pub mod explore;
pub mod iommu;
pub mod litmus;
pub mod mmu;
pub mod platform;
pub mod probe;
pub mod sched;
pub mod selftest;
pub mod tlb;
pub mod trace;

use std::sync::Arc;

use ::iommu::IommuConfig;
use abi::config::TlbModel;

use crate::devices::TraceSink;
use crate::vstate::Service;

/// How to build the services every run has.
#[derive(Clone, Default)]
pub struct StandardOptions {
    /// Show the guest's serial console.
    pub console: bool,
    /// Where the guest's failed checks go (the self-test service).
    pub checks: Option<Arc<dyn platform::CheckListener>>,
    pub iommu: IommuConfig,
    /// A traced run's tracer.
    pub trace: Option<Arc<trace::Tracer>>,
}

/// Platform, MMU, TLB, scheduling and IOMMU, wired to each other (PT_TABLE
/// tells the IOMMU which tables are live; a PT_BATCH's flushes reach the
/// TLB; the device's kernel-word stores and a FLUSH's ack wake parked
/// vCPUs; the TLB and the IOMMU record into the trace).
pub fn standard(tlb: TlbModel, seed: u64, opts: StandardOptions) -> Vec<Arc<dyn Service>> {
    let sink: Option<Arc<dyn TraceSink>> = opts.trace.clone().map(|t| t as Arc<dyn TraceSink>);
    let device_sink =
        opts.trace.clone().map(|t| Arc::new(trace::DeviceSink { tracer: t }) as Arc<dyn ::iommu::EventSink>);
    let sched = sched::Sched::new();
    let iommu = iommu::IommuService::new(opts.iommu, device_sink, Some(sched.clone() as Arc<dyn sched::Waker>));
    let tlb = tlb::Tlb::new(tlb, seed, sink, Some(sched.clone() as Arc<dyn sched::Waker>));
    let mut v: Vec<Arc<dyn Service>> = vec![
        platform::Platform::new(opts.console, opts.checks),
        mmu::Mmu::new(Some(iommu.clone() as Arc<dyn mmu::TableTracker>), Some(tlb.clone() as Arc<dyn mmu::LocalFlush>)),
        tlb,
        sched,
        iommu,
    ];
    if let Some(t) = opts.trace {
        v.push(t);
    }
    v
}
#[cfg(test)]
mod tests;
