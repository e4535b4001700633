//! iommu (placeholder until its issue lands).
