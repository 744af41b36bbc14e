//! Integration tests: one binary, real processes.
