//! Test helpers shared by unit tests, the integration tests, the tests crate
//! and the benchmark: fake cgroup and proc trees in temp dirs.

pub mod fake_tree;

pub use fake_tree::FakeCgroupTree;
