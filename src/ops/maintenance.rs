//! Maintenance (read-only) mode: the operator's switch, with its audit line, metric and bus
//! event. The mode itself lives in the [`WritePlane`], which every write consults.
//!
//! Invariant: every switch, changed or not, writes one `audit=1` line.

use super::WritePlane;
use crate::bus::{Bus, Event};
use crate::metrics::m;
use std::sync::Arc;

/// Maintenance (read-only) mode: write routes answer 503, reads work, `/readyz` stays ready and
/// lists the reason. Switched by `--read-only`, `[maintenance]` (SIGHUP) and
/// `POST /admin/maintenance`.
pub struct Maintenance {
    plane: Arc<WritePlane>,
    bus: Arc<Bus>,
}

impl Maintenance {
    pub fn new(
        read_only: bool,
        reason: Option<String>,
        plane: Arc<WritePlane>,
        bus: Arc<Bus>,
    ) -> Maintenance {
        m().registry_read_only.set(read_only as i64);
        plane.set_read_only(read_only, reason.filter(|_| read_only));
        Maintenance { plane, bus }
    }

    pub fn is_on(&self) -> bool {
        self.plane.read_only()
    }

    pub fn reason(&self) -> Option<String> {
        self.plane.maintenance_reason()
    }

    /// Switch maintenance on or off (`source`: "admin", "sighup"). Always logs an audit line;
    /// returns whether the mode changed.
    pub fn set(&self, on: bool, reason: Option<String>, source: &str, corr_id: &str) -> bool {
        let reason = on.then(|| reason.unwrap_or_else(|| "no reason given".to_string()));
        let (was, shown) = self.plane.set_read_only(on, reason);
        m().registry_read_only.set(on as i64);
        let poisoned = self.plane.poisoned();
        let write_ready = self.plane.write_ready();
        m().registry_write_plane_ready.set(write_ready as i64);
        log::warn!(
            "msg=\"maintenance switched\" audit=1 source={source} corr_id={corr_id} read_only={on} was={was} reason={:?}",
            shown.as_deref().unwrap_or("")
        );
        if was != on {
            self.bus.publish(Event::WritePlane {
                ready: write_ready,
                reason: shown.clone().or(poisoned),
            });
            if write_ready {
                log::info!(
                    "ready=1 service=svc-registry role=write-plane source={source} msg=\"maintenance ended\""
                );
            }
        }
        was != on
    }
}
