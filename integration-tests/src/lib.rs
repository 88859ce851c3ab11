//! Shared harness for chorus integration tests.
