//! The device's configuration: cache geometries and models, typed setters
//! (the VMM parses `iotlb=`/`pwc=` once at its edge and calls these).

use crate::cache::{CacheConfig, ConfigError, Eviction, Replacement};

/// Configuration of the device. The `Default` is a small lazy device:
/// 64-entry IOTLB (16 sets x 4 ways, LRU), 16-entry PWC (4 x 4, LRU), no
/// device TLB, table tracking off, stale-hit checking on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IommuConfig {
    pub iotlb: CacheConfig,
    /// `None` = no paging-structure cache (`pwc=off`): every IOTLB miss walks
    /// from the root.
    pub pwc: Option<CacheConfig>,
    /// `Some` = the device has its own TLB (ATS); it is looked up before the
    /// IOTLB and needs its own device-TLB invalidation descriptors.
    pub devtlb: Option<CacheConfig>,
    /// Seeds random replacement and `evict:P`.
    pub seed: u64,
    /// Start with live-table tracking on (see [`TableRegistry`]).
    pub track_tables: bool,
    /// Compare every cache hit with a side-effect-free walk and report
    /// [`Event::StaleHit`]. Costs one walk per hit.
    pub stale_hit_check: bool,
}

impl Default for IommuConfig {
    fn default() -> Self {
        IommuConfig {
            iotlb: CacheConfig::new(16, 4, Replacement::Lru),
            pwc: Some(CacheConfig::new(4, 4, Replacement::Lru)),
            devtlb: None,
            seed: 0,
            track_tables: false,
            stale_hit_check: true,
        }
    }
}

impl IommuConfig {
    /// The PWC geometry `pwc=on` restores after `pwc=off`.
    pub const DEFAULT_PWC: CacheConfig = CacheConfig::new(4, 4, Replacement::Lru);

    /// The IOTLB's (and the device TLB's) eviction model (`iotlb=`).
    pub fn set_iotlb_eviction(&mut self, e: Eviction) {
        self.iotlb.eviction = e;
        if let Some(d) = &mut self.devtlb {
            d.eviction = e;
        }
    }

    /// The paging-structure cache on (its default geometry if it was off)
    /// or off (`pwc=`).
    pub fn set_pwc(&mut self, on: bool) {
        match (on, self.pwc.is_some()) {
            (true, false) => self.pwc = Some(Self::DEFAULT_PWC),
            (false, _) => self.pwc = None,
            _ => {}
        }
    }

    /// The PWC's eviction model (turns it on if it was off).
    pub fn set_pwc_eviction(&mut self, e: Eviction) {
        self.pwc.get_or_insert(Self::DEFAULT_PWC).eviction = e;
    }

    /// A device TLB (ATS) with the IOTLB's geometry and eviction, or none.
    pub fn set_devtlb(&mut self, on: bool) {
        match (on, self.devtlb.is_some()) {
            (true, false) => self.devtlb = Some(self.iotlb),
            (false, _) => self.devtlb = None,
            _ => {}
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.iotlb.validate()?;
        if let Some(p) = &self.pwc {
            p.validate()?;
        }
        if let Some(d) = &self.devtlb {
            d.validate()?;
        }
        Ok(())
    }
}
