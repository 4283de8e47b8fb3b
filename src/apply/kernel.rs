//! The one seam between netqos and the host: `Kernel` reads the managed state and sends
//! one change. `NetlinkKernel` does it over rtnetlink; tests use an in-memory kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::apply::device_lock::DeviceId;
use crate::apply::model::*;
use crate::apply::netlink::nla::MsgWriter;
use crate::apply::netlink::tc::{self, FilterEntry, Mode, Stats};
use crate::apply::netlink::{Netlink, NlError, link};
use crate::apply::state::{DevState, Live, REDIRECT_PRIO};

/// A failed read or write, with what was being done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    pub what: String,
    pub errno: Option<i32>,
    pub message: String,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.message)
    }
}

impl std::error::Error for KernelError {}

pub const ENOENT: i32 = 2;
pub const EEXIST: i32 = 17;
const EINVAL: i32 = 22;
const EOPNOTSUPP: i32 = 95;

impl KernelError {
    pub fn new(what: impl Into<String>, e: &NlError) -> KernelError {
        KernelError {
            what: what.into(),
            errno: e.errno(),
            message: e.to_string(),
        }
    }

    /// The object was already in the state the change wanted (undo tolerates these).
    pub fn already_done(&self) -> bool {
        matches!(self.errno, Some(ENOENT | EEXIST))
    }
}

/// Reads and writes the kernel's traffic-control state. `Send`: `txn::execute` talks to
/// the kernel from a second thread while it journals the next changes.
pub trait Kernel: Send {
    /// The managed state of `devices` (absent ones marked so) and every link.
    fn read(&mut self, devices: &[String]) -> Result<Live, KernelError>;
    /// `read`, restricted to the objects in `scope` (a kernel that keeps a mirror answers
    /// without copying the rest).
    fn read_scoped(
        &mut self,
        devices: &[String],
        scope: &crate::apply::state_scope::Scope,
    ) -> Result<Live, KernelError> {
        Ok(scope.restrict_live(&self.read(devices)?, devices))
    }
    /// Sends one change.
    fn send(&mut self, change: &Change) -> Result<(), KernelError>;
    /// Sends changes that do not depend on the kernel's answers to each other (see
    /// `batchable`), returning one result per change sent. Sequential by default, stopping
    /// at the first failure; the netlink kernel sends them in one message (the kernel still
    /// processes them one by one, in order, and answers each).
    fn send_many(&mut self, changes: &[Change]) -> Vec<Result<(), KernelError>> {
        sequential(self, changes)
    }
    /// The names of the devices that carry a default route (IPv4 or IPv6, any table).
    fn default_route_devices(&mut self) -> Result<Vec<String>, KernelError> {
        Ok(Vec::new())
    }
    /// Warnings the kernel attached to successful requests since the last call.
    fn warnings(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// The identities (namespace, ifindex) of those of `names` that exist, read afresh.
    fn device_ids(&mut self, _names: &[String]) -> Result<Vec<(String, DeviceId)>, KernelError> {
        Ok(Vec::new())
    }
    /// Where this kernel's device locks live (`device_lock`); `None`: not shared.
    fn lock_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
}

fn sequential<K: Kernel + ?Sized>(k: &mut K, changes: &[Change]) -> Vec<Result<(), KernelError>> {
    let mut out = Vec::with_capacity(changes.len());
    for c in changes {
        let r = k.send(c);
        let stop = r.is_err();
        out.push(r);
        if stop {
            break;
        }
    }
    out
}

/// Changes whose request can be built without asking the kernel anything first.
pub fn batchable(c: &Change) -> bool {
    matches!(
        c,
        Change::AddQdisc { .. }
            | Change::ReplaceQdisc { .. }
            | Change::ChangeQdisc { .. }
            | Change::DelQdisc { .. }
            | Change::AddClass { .. }
            | Change::ChangeClass { .. }
            | Change::DelClass { .. }
            | Change::AddFilter { .. }
    )
}

/// Counters of the objects last read, by (device, kind, handle).
pub type StatsMap = BTreeMap<(String, &'static str, u32), Stats>;

/// A filter dump: the priorities of the dumped parent's own lists, and every node seen
/// with its redirect target's ifindex.
type DumpedFilters = (Vec<u16>, Vec<(Filter, Option<i32>)>);

/// The kernel over rtnetlink.
pub struct NetlinkKernel {
    nl: Netlink,
    ifindex: BTreeMap<String, i32>,
    /// Counters seen by the last `read`.
    pub stats: StatsMap,
    /// Filter priorities to look for on every class with children (those of the plan).
    pub prio_hints: Vec<u16>,
}

/// Gives each hash table netqos made (and its nodes) to the list whose nodes link to it,
/// through as many levels as there are.
fn adopt_hash_tables(
    nodes: &[(Filter, Option<i32>)],
    owner: &mut BTreeMap<(u32, u16), (u32, u16)>,
) {
    for _ in 0..8 {
        let mut grew = false;
        for (f, _) in nodes {
            let Action::Link { link, .. } = f.action else {
                continue;
            };
            let Some(&o) = owner.get(&(f.handle & 0xfff0_0000, f.prio)) else {
                continue;
            };
            let key = (link & 0xfff0_0000, f.prio);
            if is_netqos_table(link) && !owner.contains_key(&key) {
                owner.insert(key, o);
                grew = true;
            }
        }
        if !grew {
            return;
        }
    }
}

impl NetlinkKernel {
    pub fn open() -> Result<NetlinkKernel, KernelError> {
        let nl = Netlink::open().map_err(|e| KernelError::new("opening rtnetlink", &e))?;
        Ok(NetlinkKernel {
            nl,
            ifindex: BTreeMap::new(),
            stats: BTreeMap::new(),
            prio_hints: vec![
                crate::lower::PRIO_V4,
                crate::lower::PRIO_V6,
                crate::lower::PRIO_CATCH_ALL,
            ],
        })
    }

    /// The ifindex of every device seen by the last `read` (the agent's mirror follows
    /// events by ifindex).
    pub fn ifindexes(&self) -> &BTreeMap<String, i32> {
        &self.ifindex
    }

    fn links(&mut self) -> Result<Vec<(i32, Link)>, KernelError> {
        let msgs = self
            .nl
            .dump(&link::dump_request())
            .map_err(|e| KernelError::new("listing links", &e))?;
        let mut out = Vec::new();
        for m in msgs {
            out.push(link::decode(&m).map_err(|e| KernelError::new("listing links", &e.into()))?);
        }
        self.ifindex = out.iter().map(|(i, l)| (l.name.clone(), *i)).collect();
        Ok(out)
    }

    fn index(&mut self, dev: &str) -> Result<i32, KernelError> {
        if let Some(i) = self.ifindex.get(dev) {
            return Ok(*i);
        }
        self.links()?;
        self.ifindex.get(dev).copied().ok_or_else(|| KernelError {
            what: format!("device {dev}"),
            errno: Some(19),
            message: "no such device".into(),
        })
    }

    /// One filter dump: the priorities listed for `parent` itself, and every node seen.
    fn dump_filters(
        &mut self,
        ifindex: i32,
        parent: u32,
        prio: Option<u16>,
        dev: &str,
    ) -> Result<DumpedFilters, KernelError> {
        let what = || format!("listing filters of {} on {dev}", fmt_handle(parent));
        let msgs = self
            .nl
            .dump(&tc::filter_dump(ifindex, parent, prio))
            .map_err(|e| KernelError::new(what(), &e))?;
        let mut heads = Vec::new();
        let mut nodes = Vec::new();
        for m in msgs {
            match tc::decode_filter(&m).map_err(|e| KernelError::new(what(), &e.into()))? {
                FilterEntry::Head { prio, .. } => heads.push(prio),
                FilterEntry::Table {
                    handle,
                    protocol,
                    prio,
                    divisor,
                } if is_netqos_table(handle) => nodes.push((
                    Filter {
                        dev: dev.to_string(),
                        parent,
                        prio,
                        protocol,
                        handle,
                        keys: Vec::new(),
                        action: Action::Table { divisor },
                    },
                    None,
                )),
                FilterEntry::Table { .. } => {}
                FilterEntry::Node {
                    ifindex: i,
                    mut filter,
                    redirect,
                } if i == ifindex => {
                    filter.dev = dev.to_string();
                    nodes.push((filter, redirect));
                }
                FilterEntry::Node { .. } => {}
            }
        }
        Ok((heads, nodes))
    }

    /// The hash-table id and protocol of the u32 list at (`parent`, `prio`), if there is one.
    fn root_table(
        &mut self,
        ifindex: i32,
        parent: u32,
        prio: u16,
    ) -> Result<Option<(u32, u16)>, KernelError> {
        match self.nl.query(&tc::filter_get_root(ifindex, parent, prio)) {
            Ok(msgs) => {
                for m in msgs {
                    if let Ok(FilterEntry::Table {
                        handle, protocol, ..
                    }) = tc::decode_filter(&m)
                    {
                        return Ok(Some((handle & 0xfff0_0000, protocol)));
                    }
                }
                Ok(None)
            }
            Err(e) if matches!(e.errno(), Some(ENOENT | EINVAL | EOPNOTSUPP)) => Ok(None),
            Err(e) => Err(KernelError::new(
                format!("looking up filters at {} prio {prio}", fmt_handle(parent)),
                &e,
            )),
        }
    }

    /// The u32 filters of `parents` (the root qdisc and classes) of one HTB tree. u32 shares
    /// its tables across a qdisc, so a dump of one parent lists the nodes of every parent
    /// at that priority: each priority is dumped once, and nodes are given to the parent
    /// whose list owns their hash table (asked with `filter_get_root`).
    fn tree_filters(
        &mut self,
        ifindex: i32,
        dev: &str,
        parents: &[u32],
        names: &BTreeMap<i32, String>,
    ) -> Result<Vec<Filter>, KernelError> {
        let Some(&root) = parents.first() else {
            return Ok(Vec::new());
        };
        let (heads, mut nodes) = self.dump_filters(ifindex, root, None, dev)?;
        let mut prios: BTreeSet<u16> = self.prio_hints.iter().copied().collect();
        prios.extend(heads.iter().copied());
        let mut dumped: BTreeSet<u16> = heads.into_iter().collect();
        let mut owner: BTreeMap<(u32, u16), (u32, u16)> = BTreeMap::new();
        for &p in parents {
            for &prio in &prios {
                if let Some((table, protocol)) = self.root_table(ifindex, p, prio)? {
                    owner.insert((table, prio), (p, protocol));
                    if dumped.insert(prio) {
                        nodes.extend(self.dump_filters(ifindex, p, Some(prio), dev)?.1);
                    }
                }
            }
        }
        adopt_hash_tables(&nodes, &mut owner);
        let mut out: Vec<Filter> = Vec::new();
        let mut seen = BTreeSet::new();
        for (mut f, redirect) in nodes {
            let Some(&(parent, protocol)) = owner.get(&(f.handle & 0xfff0_0000, f.prio)) else {
                continue; // a table netqos does not use (hash tables, other tools)
            };
            if !seen.insert((f.prio, f.handle)) {
                continue;
            }
            f.parent = parent;
            f.protocol = protocol;
            if let Some(r) = redirect {
                f.action = Action::Redirect {
                    to: names
                        .get(&r)
                        .cloned()
                        .unwrap_or_else(|| format!("ifindex {r}")),
                };
            }
            out.push(f);
        }
        // Hash tables before the nodes that link to them (the order a restore adds them).
        out.sort_by_key(|f| {
            let table = !matches!(f.action, Action::Table { .. });
            (f.parent, f.prio, table, f.ident())
        });
        Ok(out)
    }

    /// The filters of the ingress hook at `parent` (one list per priority, no sharing).
    fn hook_filters(
        &mut self,
        ifindex: i32,
        dev: &str,
        parent: u32,
        names: &BTreeMap<i32, String>,
    ) -> Result<Vec<Filter>, KernelError> {
        let (_, nodes) = self.dump_filters(ifindex, parent, Some(REDIRECT_PRIO), dev)?;
        Ok(nodes
            .into_iter()
            .filter(|(f, _)| f.prio == REDIRECT_PRIO)
            .map(|(mut f, r)| {
                f.parent = parent;
                if let Some(r) = r {
                    f.action = Action::Redirect {
                        to: names
                            .get(&r)
                            .cloned()
                            .unwrap_or_else(|| format!("ifindex {r}")),
                    };
                }
                f
            })
            .collect())
    }

    fn read_dev(
        &mut self,
        name: &str,
        ifindex: i32,
        qdiscs: &[(i32, Qdisc, Stats)],
        names: &BTreeMap<i32, String>,
    ) -> Result<DevState, KernelError> {
        let mut d = DevState {
            name: name.to_string(),
            exists: true,
            ..DevState::default()
        };
        let mine: Vec<&(i32, Qdisc, Stats)> = qdiscs.iter().filter(|q| q.0 == ifindex).collect();
        for (_, q, s) in &mine {
            let mut q = q.clone();
            q.dev = name.to_string();
            self.stats.insert((name.to_string(), "qdisc", q.handle), *s);
            match q.parent {
                H_ROOT => d.root = Some(q),
                H_INGRESS => d.hook = Some(q),
                _ => {}
            }
        }
        let root_major = d.root.as_ref().map_or(0, |r| r.handle & 0xffff_0000);
        if root_major != 0 {
            for (_, q, _) in &mine {
                if q.parent != H_ROOT
                    && q.parent != H_INGRESS
                    && q.parent & 0xffff_0000 == root_major
                {
                    let mut q = q.clone();
                    q.dev = name.to_string();
                    d.leaves.push(q);
                }
            }
            let what = format!("listing classes on {name}");
            let msgs = self
                .nl
                .dump(&tc::dump_request(tc::RTM_GETTCLASS, ifindex, 0))
                .map_err(|e| KernelError::new(what.clone(), &e))?;
            for m in msgs {
                if let Some((i, mut c, s)) =
                    tc::decode_class(&m).map_err(|e| KernelError::new(what.clone(), &e.into()))?
                    && i == ifindex
                    && c.classid & 0xffff_0000 == root_major
                {
                    c.dev = name.to_string();
                    self.stats.insert((name.to_string(), "class", c.classid), s);
                    d.classes.push(c);
                }
            }
            d.classes.sort_by_key(|c| c.classid);
            // The root and the classes with children: netqos attaches filters nowhere else.
            let mut parents = vec![root_major];
            let with_children: BTreeSet<u32> = d.classes.iter().map(|c| c.parent).collect();
            parents.extend(
                d.classes
                    .iter()
                    .map(|c| c.classid)
                    .filter(|id| with_children.contains(id)),
            );
            d.filters = self.tree_filters(ifindex, name, &parents, names)?;
            d.leaves.sort_by_key(|q| q.parent);
        }
        if d.hook.is_some() {
            let parent = H_CLSACT_INGRESS;
            d.hook_filters = self.hook_filters(ifindex, name, parent, names)?;
        }
        Ok(d)
    }

    /// The full handle of a filter known only by its node number, if it exists.
    fn resolve_filter(&mut self, f: &Filter) -> Result<Option<u32>, KernelError> {
        if f.handle & 0xfff0_0000 != 0 {
            return Ok(Some(f.handle));
        }
        let ifindex = self.index(&f.dev)?;
        let Some((table, _)) = self.root_table(ifindex, f.parent, f.prio)? else {
            return Ok(None);
        };
        Ok(Some(table | f.node()))
    }

    /// The request of a change that needs nothing from the kernel first (no link created
    /// just before, no filter to look up): such requests may be sent many at a time.
    fn encode_simple(&mut self, change: &Change) -> Result<Option<MsgWriter>, NlError> {
        let w = match change {
            Change::AddQdisc { q } => {
                tc::qdisc_request(self.index(&q.dev).map_err(kerr)?, q, Mode::Add)
            }
            Change::ReplaceQdisc { new, .. } => {
                tc::qdisc_request(self.index(&new.dev).map_err(kerr)?, new, Mode::Replace)
            }
            Change::ChangeQdisc { new, .. } => {
                tc::qdisc_request(self.index(&new.dev).map_err(kerr)?, new, Mode::Change)
            }
            Change::DelQdisc { q } => tc::qdisc_delete(self.index(&q.dev).map_err(kerr)?, q),
            Change::AddClass { c } => {
                tc::class_request(self.index(&c.dev).map_err(kerr)?, c, Mode::Add)
            }
            Change::ChangeClass { new, .. } => {
                tc::class_request(self.index(&new.dev).map_err(kerr)?, new, Mode::Change)
            }
            Change::DelClass { c } => tc::class_delete(self.index(&c.dev).map_err(kerr)?, c),
            Change::AddFilter { f } => {
                let redirect = match &f.action {
                    Action::Redirect { to } => Some(self.index(to).map_err(kerr)?),
                    _ => None,
                };
                tc::filter_request(self.index(&f.dev).map_err(kerr)?, f, Mode::Add, redirect)
            }
            _ => return Ok(None),
        };
        Ok(Some(w))
    }

    fn exec(&mut self, change: &Change) -> Result<(), NlError> {
        if let Some(w) = self.encode_simple(change)? {
            return self.nl.request(&w);
        }
        let msg = match change {
            Change::AddLink { link: l } => {
                let r = self.nl.request(&link::add(l));
                self.ifindex.clear();
                return r;
            }
            Change::SetLinkUp { name, up } => link::set_up(self.index(name).map_err(kerr)?, *up),
            Change::DelLink { link: l } => {
                let i = self.index(&l.name).map_err(kerr)?;
                let r = self.nl.request(&link::delete(i));
                self.ifindex.clear();
                return r;
            }
            Change::ReplaceFilter { new: f, .. } => {
                let redirect = match &f.action {
                    Action::Redirect { to } => Some(self.index(to).map_err(kerr)?),
                    _ => None,
                };
                let mut f = f.clone();
                match self.resolve_filter(&f).map_err(kerr)? {
                    Some(h) => f.handle = h,
                    None => {
                        return Err(NlError::Kernel {
                            errno: ENOENT,
                            message: Some("filter to re-point is gone".into()),
                        });
                    }
                }
                tc::filter_request(
                    self.index(&f.dev).map_err(kerr)?,
                    &f,
                    Mode::Change,
                    redirect,
                )
            }
            Change::DelFilter { f } => {
                let Some(h) = self.resolve_filter(f).map_err(kerr)? else {
                    return Err(NlError::Kernel {
                        errno: ENOENT,
                        message: Some("filter already gone".into()),
                    });
                };
                let mut f = f.clone();
                f.handle = h;
                tc::filter_delete(self.index(&f.dev).map_err(kerr)?, &f)
            }
            // Handled by encode_simple.
            _ => return Ok(()),
        };
        self.nl.request(&msg)
    }
}

fn kerr(e: KernelError) -> NlError {
    NlError::Kernel {
        errno: e.errno.unwrap_or(5),
        message: Some(e.to_string()),
    }
}

impl NetlinkKernel {
    fn read_once(&mut self, devices: &[String]) -> Result<Live, KernelError> {
        self.stats.clear();
        let links = self.links()?;
        let names: BTreeMap<i32, String> =
            links.iter().map(|(i, l)| (*i, l.name.clone())).collect();
        let what = "listing qdiscs";
        let msgs = self
            .nl
            .dump(&tc::dump_request(tc::RTM_GETQDISC, 0, 0))
            .map_err(|e| KernelError::new(what, &e))?;
        let mut qdiscs = Vec::new();
        for m in msgs {
            qdiscs.push(tc::decode_qdisc(&m).map_err(|e| KernelError::new(what, &e.into()))?);
        }
        let mut devs = Vec::new();
        for name in devices {
            match self.ifindex.get(name).copied() {
                Some(i) => devs.push(self.read_dev(name, i, &qdiscs, &names)?),
                None => devs.push(DevState {
                    name: name.clone(),
                    ..DevState::default()
                }),
            }
        }
        let mut links: Vec<Link> = links.into_iter().map(|(_, l)| l).collect();
        links.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Live { links, devs })
    }
}

/// How often a read is retried when a dump came back interrupted (another writer).
const READ_TRIES: usize = 8;

impl Kernel for NetlinkKernel {
    /// Reads the devices; a dump the kernel marks interrupted (someone changed the state
    /// while it was read) restarts the whole read, so a snapshot is never inconsistent.
    fn read(&mut self, devices: &[String]) -> Result<Live, KernelError> {
        let mut tries = 1;
        loop {
            match self.read_once(devices) {
                Err(e)
                    if e.errno == Some(crate::apply::netlink::socket::EINTR)
                        && tries < READ_TRIES =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20 * tries as u64));
                }
                r => return r,
            }
        }
    }

    fn warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.nl.warnings)
    }

    fn device_ids(&mut self, names: &[String]) -> Result<Vec<(String, DeviceId)>, KernelError> {
        let netns = crate::apply::device_lock::current_netns().map_err(|e| KernelError {
            what: "reading the network namespace".into(),
            errno: e.raw_os_error(),
            message: e.to_string(),
        })?;
        let links = self.links()?;
        Ok(names
            .iter()
            .filter_map(|n| {
                let (i, _) = links.iter().find(|(_, l)| &l.name == n)?;
                Some((n.clone(), DeviceId { netns, ifindex: *i }))
            })
            .collect())
    }

    fn lock_dir(&self) -> Option<std::path::PathBuf> {
        Some(crate::apply::device_lock::LOCK_DIR.into())
    }

    /// The names of the devices that carry a default route (IPv4 or IPv6, any table).
    fn default_route_devices(&mut self) -> Result<Vec<String>, KernelError> {
        use crate::apply::netlink::route;
        let what = "listing routes";
        let mut ifindexes = Vec::new();
        for family in [route::AF_INET, route::AF_INET6] {
            let msgs = self
                .nl
                .dump(&route::dump_request(family))
                .map_err(|e| KernelError::new(what, &e))?;
            for m in msgs {
                ifindexes.extend(
                    route::default_route_oifs(&m).map_err(|e| KernelError::new(what, &e.into()))?,
                );
            }
        }
        let links = self.links()?;
        let mut names: Vec<String> = links
            .into_iter()
            .filter(|(i, _)| ifindexes.contains(i))
            .map(|(_, l)| l.name)
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn send(&mut self, change: &Change) -> Result<(), KernelError> {
        self.exec(change)
            .map_err(|e| KernelError::new(change.describe(), &e))
    }

    fn send_many(&mut self, changes: &[Change]) -> Vec<Result<(), KernelError>> {
        let mut msgs = Vec::with_capacity(changes.len());
        for c in changes {
            match self.encode_simple(c) {
                Ok(Some(w)) => msgs.push(w),
                // Not batchable after all: one at a time.
                _ => return sequential(self, changes),
            }
        }
        match self.nl.request_many(&msgs) {
            Ok(results) => results
                .into_iter()
                .zip(changes)
                .map(|(r, c)| r.map_err(|e| KernelError::new(c.describe(), &e)))
                .collect(),
            Err(e) => vec![Err(KernelError::new("sending a batch of changes", &e))],
        }
    }
}
