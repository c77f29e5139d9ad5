//! Liveness and readiness, as the admin endpoint reports them to orchestrators and load
//! balancers.

use std::sync::atomic::{AtomicBool, Ordering};

/// Process health shared by the engine and the admin endpoint.
#[derive(Default)]
pub struct Health {
    running: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    /// Marks every pipeline as running.
    pub fn set_running(&self) {
        self.running.store(true, Ordering::SeqCst);
    }
    /// Marks the start of the drain: readiness turns off so balancers stop sending.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
    /// `Ok` when ready to take traffic, else why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::SeqCst) {
            Err("draining for shutdown")
        } else if !self.running.load(Ordering::SeqCst) {
            Err("starting: pipelines are not running yet")
        } else {
            Ok(())
        }
    }
}
