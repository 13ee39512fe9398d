//! Actions: killing a runaway process safely (pidfd, re-check, mrelease).

pub mod killer;
