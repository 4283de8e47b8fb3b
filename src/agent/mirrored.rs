//! `Mirrored`: a `Kernel` that answers `read` from the mirror and sends through rtnetlink.
//! Before answering it takes in every queued event (the kernel queues the notifications of
//! a request before acknowledging it, so a read after a send sees that send) and re-reads
//! only the devices the mirror marked dirty. The apply transaction therefore runs
//! unchanged on top of it, with its snapshot and its read-back verification taken from
//! the mirror instead of a 30,000-object dump.

use crate::agent::events::{Event, Events};
use crate::agent::mirror::Mirror;
use crate::apply::kernel::{Kernel, KernelError, NetlinkKernel};
use crate::apply::model::Change;
use crate::apply::netlink::NlError;
use crate::apply::state::Live;

/// The netlink kernel, its event subscription, and the mirror they keep.
pub struct Mirrored {
    pub inner: NetlinkKernel,
    events: Events,
    mirror: Option<Mirror>,
    /// Events taken in since the caller last looked (`take_events`).
    seen: Vec<Event>,
    /// Full reads done (at start, after overruns, for devices outside the mirror).
    pub full_reads: u64,
    /// Partial reads of dirty devices.
    pub partial_reads: u64,
    /// The mirror's event number at the last `read` or `read_scoped`: what the caller
    /// found there held as of that event (`Mirror::settle`).
    pub last_read_seq: u64,
}

fn nl(what: &str, e: &NlError) -> KernelError {
    KernelError::new(what, e)
}

impl Mirrored {
    /// Subscribes first, then reads: no event between the read and the subscription is
    /// lost.
    pub fn open(inner: NetlinkKernel) -> Result<Mirrored, KernelError> {
        let events = Events::open().map_err(|e| nl("subscribing to rtnetlink events", &e))?;
        Ok(Mirrored {
            inner,
            events,
            mirror: None,
            seen: Vec::new(),
            full_reads: 0,
            partial_reads: 0,
            last_read_seq: 0,
        })
    }

    /// The mirror, if one was built.
    pub fn mirror(&self) -> Option<&Mirror> {
        self.mirror.as_ref()
    }

    /// The objects events changed since they were last settled (`None`: not known, or
    /// no mirror yet).
    pub fn touched(&self) -> Option<crate::apply::state_scope::Scope> {
        self.mirror.as_ref().and_then(Mirror::touched)
    }

    /// See `Mirror::settle`.
    pub fn settle(&mut self, upto: u64, scope: Option<&crate::apply::state_scope::Scope>) {
        if let Some(m) = &mut self.mirror {
            m.settle(upto, scope);
        }
    }

    /// Events taken in since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.seen)
    }

    /// Waits up to `timeout` for events (or for `also` to become readable) and follows
    /// them; returns how many arrived.
    pub fn wait(
        &mut self,
        timeout: std::time::Duration,
        also: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<usize, KernelError> {
        let evs = self
            .events
            .wait(timeout, also)
            .map_err(|e| nl("reading rtnetlink events", &e))?;
        Ok(self.follow(evs))
    }

    fn follow(&mut self, evs: Vec<Event>) -> usize {
        let n = evs.len();
        if let Some(m) = &mut self.mirror {
            for e in &evs {
                m.apply(e);
            }
        }
        self.seen.extend(evs);
        n
    }

    /// Takes in queued events and re-reads the dirty devices.
    pub fn sync(&mut self) -> Result<(), KernelError> {
        let evs = self
            .events
            .drain()
            .map_err(|e| nl("reading rtnetlink events", &e))?;
        self.follow(evs);
        let Some(m) = &self.mirror else {
            return Ok(());
        };
        let dirty = m.dirty();
        if dirty.is_empty() {
            return Ok(());
        }
        let fresh = self.inner.read(&dirty)?;
        self.partial_reads += 1;
        // Events that raced the read are queued and followed by the next sync; one that
        // the read already reflects is applied again, which is idempotent.
        if let Some(m) = &mut self.mirror {
            m.refresh(fresh, self.inner.ifindexes());
        }
        Ok(())
    }

    /// Drops the mirror and reads `devices` afresh (the periodic safety net; also how a
    /// mismatch is measured: the caller compares the two).
    pub fn reread(&mut self, devices: &[String]) -> Result<Live, KernelError> {
        let _ = self.events.drain();
        let live = self.inner.read(devices)?;
        self.full_reads += 1;
        let seq = self.mirror.as_ref().map_or(0, |m| m.seq() + 1);
        self.mirror = Some(Mirror::new(live.clone(), self.inner.ifindexes(), seq));
        self.last_read_seq = seq;
        Ok(live)
    }
}

impl Kernel for Mirrored {
    fn read(&mut self, devices: &[String]) -> Result<Live, KernelError> {
        self.sync()?;
        if let Some(m) = &self.mirror {
            let have = m.devices();
            if devices.iter().all(|d| have.contains(d)) {
                let live = m.live();
                self.last_read_seq = m.seq();
                return Ok(Live {
                    links: live.links.clone(),
                    devs: devices
                        .iter()
                        .filter_map(|d| live.dev(d).cloned())
                        .collect(),
                });
            }
        }
        let mut all: Vec<String> = devices.to_vec();
        if let Some(m) = &self.mirror {
            all.extend(m.devices());
        }
        all.sort();
        all.dedup();
        let full = self.reread(&all)?;
        Ok(Live {
            links: full.links.clone(),
            devs: devices
                .iter()
                .filter_map(|d| full.dev(d).cloned())
                .collect(),
        })
    }

    fn read_scoped(
        &mut self,
        devices: &[String],
        scope: &crate::apply::state_scope::Scope,
    ) -> Result<Live, KernelError> {
        self.sync()?;
        if let Some(m) = &self.mirror {
            let have = m.devices();
            if devices.iter().all(|d| have.contains(d)) {
                self.last_read_seq = m.seq();
                return Ok(scope.restrict_live(m.live(), devices));
            }
        }
        Ok(scope.restrict_live(&self.read(devices)?, devices))
    }

    fn send(&mut self, change: &Change) -> Result<(), KernelError> {
        self.inner.send(change)
    }

    fn send_many(&mut self, changes: &[Change]) -> Vec<Result<(), KernelError>> {
        self.inner.send_many(changes)
    }

    fn default_route_devices(&mut self) -> Result<Vec<String>, KernelError> {
        self.inner.default_route_devices()
    }

    fn warnings(&mut self) -> Vec<String> {
        self.inner.warnings()
    }

    fn device_ids(
        &mut self,
        names: &[String],
    ) -> Result<Vec<(String, crate::apply::device_lock::DeviceId)>, KernelError> {
        self.inner.device_ids(names)
    }

    fn lock_dir(&self) -> Option<std::path::PathBuf> {
        self.inner.lock_dir()
    }
}
