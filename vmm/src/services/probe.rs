//! PROBE_RESULT: native-TLB probe counts (`vmm probe`), at most
//! [`MAX_PROBES`] per run.

use std::sync::{Arc, Mutex};

use abi::hypercall::calls::{self, ProbeReport};
use abi::hypercall::Op;

use crate::vstate::{Call, GuestFault, HypercallHandler, Reply, Service, SetupError, VcpuCtx, VmSetup};

pub const MAX_PROBES: usize = 1024;

#[derive(Default)]
pub struct Probes {
    reports: Mutex<(Vec<ProbeReport>, u64)>,
}

impl Probes {
    pub fn new() -> Arc<Self> {
        Arc::new(Probes::default())
    }

    /// The reports, and how many beyond the cap were dropped.
    pub fn reports(&self) -> (Vec<ProbeReport>, u64) {
        self.reports.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Service for Probes {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn setup(self: Arc<Self>, vm: &mut VmSetup<'_>) -> Result<(), SetupError> {
        vm.add_hypercalls(self)
    }
}

impl HypercallHandler for Probes {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn ops(&self) -> &'static [Op] {
        &[Op::ProbeResult]
    }
    fn handle(&self, _: &mut VcpuCtx<'_>, call: &Call<'_>) -> Result<Reply, GuestFault> {
        let p = call.request::<calls::ProbeResult>()?;
        let mut r = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        if r.0.len() < MAX_PROBES {
            r.0.push(p);
        } else {
            r.1 = r.1.saturating_add(1);
        }
        Ok(Reply::empty())
    }
}
