//! Litmus bytecode (host compiler -> guest interpreter). Filled in by the litmus issue.
