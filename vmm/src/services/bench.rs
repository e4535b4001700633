//! BENCH_RESULT: the figures the guest measured (`vmm bench`), at most
//! [`MAX_FIGURES`] per run.

use std::sync::{Arc, Mutex};

use abi::hypercall::calls::{self, BenchFigure};
use abi::hypercall::Op;

use crate::vstate::{Call, GuestFault, HypercallHandler, Reply, Service, SetupError, VcpuCtx, VmSetup};

/// The guest reports a handful; more are dropped (and counted).
pub const MAX_FIGURES: usize = 1024;

#[derive(Default)]
pub struct Bench {
    figures: Mutex<(Vec<BenchFigure>, u64)>,
}

impl Bench {
    pub fn new() -> Arc<Self> {
        Arc::new(Bench::default())
    }

    /// The figures reported, and how many beyond the cap were dropped.
    pub fn figures(&self) -> (Vec<BenchFigure>, u64) {
        self.figures.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Service for Bench {
    fn name(&self) -> &'static str {
        "bench"
    }
    fn setup(self: Arc<Self>, vm: &mut VmSetup<'_>) -> Result<(), SetupError> {
        vm.add_hypercalls(self)
    }
}

impl HypercallHandler for Bench {
    fn name(&self) -> &'static str {
        "bench"
    }
    fn ops(&self) -> &'static [Op] {
        &[Op::BenchResult]
    }
    fn handle(&self, _: &mut VcpuCtx<'_>, call: &Call<'_>) -> Result<Reply, GuestFault> {
        let f = call.request::<calls::BenchResult>()?;
        let mut figs = self.figures.lock().unwrap_or_else(|e| e.into_inner());
        if figs.0.len() < MAX_FIGURES {
            figs.0.push(f);
        } else {
            figs.1 = figs.1.saturating_add(1);
        }
        Ok(Reply::empty())
    }
}
