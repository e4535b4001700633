//! litmus (placeholder until its issue lands).
