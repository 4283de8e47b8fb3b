//! Per-class counters for `/metrics`, `status --format prometheus` and `top`: one link
//! dump and one class dump per device (no filters, no qdiscs), on a socket of its own so
//! that a scrape never waits for, or disturbs, an apply.

use std::collections::BTreeMap;

use crate::apply::kernel::KernelError;
use crate::apply::netlink::tc::{self, Stats};
use crate::apply::netlink::{Netlink, link};

/// Counters by (device, classid).
pub type ClassStats = BTreeMap<(String, u32), Stats>;

/// A counter reader.
pub struct Counters {
    nl: Netlink,
}

impl Counters {
    pub fn open() -> Result<Counters, KernelError> {
        Ok(Counters {
            nl: Netlink::open().map_err(|e| KernelError::new("opening rtnetlink", &e))?,
        })
    }

    /// The HTB class counters of `devices` (absent devices have none).
    pub fn read(&mut self, devices: &[String]) -> Result<ClassStats, KernelError> {
        let what = "reading class counters";
        let mut index = BTreeMap::new();
        for m in self
            .nl
            .dump(&link::dump_request())
            .map_err(|e| KernelError::new(what, &e))?
        {
            let (i, l) = link::decode(&m).map_err(|e| KernelError::new(what, &e.into()))?;
            index.insert(l.name, i);
        }
        let mut out = BTreeMap::new();
        for d in devices {
            let Some(&i) = index.get(d) else { continue };
            let msgs = self
                .nl
                .dump(&tc::dump_request(tc::RTM_GETTCLASS, i, 0))
                .map_err(|e| KernelError::new(what, &e))?;
            for m in msgs {
                if let Some((ifindex, c, s)) =
                    tc::decode_class(&m).map_err(|e| KernelError::new(what, &e.into()))?
                    && ifindex == i
                {
                    out.insert((d.clone(), c.classid), s);
                }
            }
        }
        Ok(out)
    }
}
