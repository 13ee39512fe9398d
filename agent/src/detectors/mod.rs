//! Detectors: stall windows against the client watchdog, and the runaway
//! catcher's policy.
