//! IOMMU wire format (MMIO registers, descriptors, PASID table). Filled in by the IOMMU issue.
