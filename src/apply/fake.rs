//! An in-memory kernel for tests of the diff, the executor and undo: it keeps the managed
//! state and enforces the kernel rules the order of changes depends on (no duplicates,
//! no deletion of a class with children or with filters sending to it, a deleted root
//! takes everything below it). `fail_at` makes one call of `send` fail, `fail_from` every
//! call from one on (an undo that cannot finish), `ignore_at` one call succeed without
//! effect (a kernel that acknowledges a change it did not make: verification must notice).

use crate::apply::kernel::{EEXIST, ENOENT, Kernel, KernelError};
use crate::apply::model::*;
use crate::apply::state::{DevState, Live};

const EBUSY: i32 = 16;
const EINVAL: i32 = 22;

/// The in-memory kernel.
#[derive(Debug, Clone, Default)]
pub struct FakeKernel {
    pub live: Live,
    /// Every change sent successfully, in order.
    pub sent: Vec<Change>,
    /// Fail the `send` call with this index (0-based, counting every call).
    pub fail_at: Option<usize>,
    /// Fail every `send` call from this index on.
    pub fail_from: Option<usize>,
    /// Acknowledge the `send` call with this index without doing it.
    pub ignore_at: Option<usize>,
    /// What `default_route_devices` answers.
    pub default_routes: Vec<String>,
    /// Device locks go here when set (the fake's namespace id is `netns`).
    pub lock_dir: Option<std::path::PathBuf>,
    pub netns: u64,
    /// Rename a device (from, to) after the `send` call with this index: the ifindex
    /// stays, as with `ip link set NAME name NEW`.
    pub rename_at: Option<(usize, String, String)>,
    /// Link identities: the ifindex of a name is its position here, plus one.
    ifindexes: Vec<String>,
    /// Renamed devices (old name, new name): changes naming the old one still reach the
    /// device until the next `read`, as netlink's cached ifindexes do.
    aliases: Vec<(String, String)>,
    calls: usize,
}

fn err(c: &Change, errno: i32, msg: &str) -> KernelError {
    KernelError {
        what: c.describe(),
        errno: Some(errno),
        message: msg.into(),
    }
}

fn default_root(dev: &str) -> Qdisc {
    Qdisc {
        dev: dev.to_string(),
        parent: H_ROOT,
        handle: 0,
        kind: QdiscKind::Other {
            name: "noqueue".into(),
        },
    }
}

fn rename_objects(d: &mut DevState, to: &str) {
    for q in d
        .root
        .iter_mut()
        .chain(d.hook.iter_mut())
        .chain(d.leaves.iter_mut())
    {
        q.dev = to.to_string();
    }
    for c in &mut d.classes {
        c.dev = to.to_string();
    }
    for f in d.filters.iter_mut().chain(d.hook_filters.iter_mut()) {
        f.dev = to.to_string();
    }
}

impl FakeKernel {
    /// A kernel with these (physical) devices, each with a default root qdisc.
    pub fn with_devices(names: &[&str]) -> FakeKernel {
        let mut k = FakeKernel::default();
        for n in names {
            k.live.links.push(Link {
                name: n.to_string(),
                kind: "veth".into(),
                up: true,
            });
            k.live.devs.push(DevState {
                name: n.to_string(),
                exists: true,
                root: Some(default_root(n)),
                ..DevState::default()
            });
        }
        k
    }

    /// Renames a device in place (its identity, objects and queues stay).
    fn rename(&mut self, from: &str, to: &str) {
        self.aliases.push((from.to_string(), to.to_string()));
        if let Some(i) = self.ifindexes.iter().position(|x| x == from) {
            self.ifindexes[i] = to.to_string();
        }
        for l in self.live.links.iter_mut().filter(|l| l.name == from) {
            l.name = to.to_string();
        }
        for d in self.live.devs.iter_mut().filter(|d| d.name == from) {
            d.name = to.to_string();
            rename_objects(d, to);
        }
    }

    fn dev(&mut self, name: &str, c: &Change) -> Result<&mut DevState, KernelError> {
        let name = self
            .aliases
            .iter()
            .find(|(from, _)| from == name)
            .map_or(name, |(_, to)| to.as_str());
        self.live
            .devs
            .iter_mut()
            .find(|d| d.name == name && d.exists)
            .ok_or_else(|| err(c, 19, "no such device"))
    }

    fn apply(&mut self, c: &Change) -> Result<(), KernelError> {
        match c {
            Change::AddLink { link } => self.add_link(c, link),
            Change::SetLinkUp { name, up } => self.set_up(c, name, *up),
            Change::DelLink { link } => self.del_link(c, link),
            Change::AddQdisc { q } => self.add_qdisc(c, q, false),
            Change::ReplaceQdisc { new, .. } => self.add_qdisc(c, new, true),
            Change::ChangeQdisc { new, .. } => self.change_qdisc(c, new),
            Change::DelQdisc { q } => self.del_qdisc(c, q),
            Change::AddClass { c: k } => self.add_class(c, k),
            Change::ChangeClass { new, .. } => self.change_class(c, new),
            Change::DelClass { c: k } => self.del_class(c, k),
            Change::AddFilter { f } => self.add_filter(c, f),
            Change::ReplaceFilter { new, .. } => self.edit_filter(c, new, false),
            Change::DelFilter { f } => self.edit_filter(c, f, true),
        }
    }

    /// A new link starts down, with a default root.
    fn add_link(&mut self, c: &Change, link: &Link) -> Result<(), KernelError> {
        if self.live.link(&link.name).is_some() {
            return Err(err(c, EEXIST, "exists"));
        }
        let mut l = link.clone();
        l.up = false;
        self.live.links.push(l);
        self.live.devs.retain(|d| d.name != link.name);
        self.live.devs.push(DevState {
            name: link.name.clone(),
            exists: true,
            root: Some(default_root(&link.name)),
            ..DevState::default()
        });
        Ok(())
    }

    /// Link up or down.
    fn set_up(&mut self, c: &Change, name: &str, up: bool) -> Result<(), KernelError> {
        let l = self
            .live
            .links
            .iter_mut()
            .find(|l| l.name == name)
            .ok_or_else(|| err(c, 19, "no such device"))?;
        l.up = up;
        Ok(())
    }

    /// A link goes with its qdiscs.
    fn del_link(&mut self, c: &Change, link: &Link) -> Result<(), KernelError> {
        if self.live.link(&link.name).is_none() {
            return Err(err(c, ENOENT, "no such device"));
        }
        self.live.links.retain(|l| l.name != link.name);
        self.live.devs.retain(|d| d.name != link.name);
        Ok(())
    }

    /// A root (takes everything below it), the ingress hook, or a leaf queue.
    fn add_qdisc(&mut self, c: &Change, q: &Qdisc, replace: bool) -> Result<(), KernelError> {
        let d = self.dev(&q.dev.clone(), c)?;
        match q.parent {
            H_ROOT => {
                if !replace && d.root.as_ref().is_some_and(|r| !r.is_kernel_default()) {
                    return Err(err(c, EEXIST, "exists"));
                }
                d.root = Some(q.clone());
                d.classes.clear();
                d.leaves.clear();
                d.filters.clear();
            }
            H_INGRESS => {
                if d.hook.is_some() {
                    return Err(err(c, EEXIST, "exists"));
                }
                d.hook = Some(q.clone());
            }
            p => {
                if !d.classes.iter().any(|k| k.classid == p) {
                    return Err(err(c, ENOENT, "no such class"));
                }
                if d.leaves.iter().any(|l| l.parent == p) && !replace {
                    return Err(err(c, EEXIST, "exists"));
                }
                d.leaves.retain(|l| l.parent != p);
                d.leaves.push(q.clone());
            }
        }
        Ok(())
    }

    /// Parameters of an existing qdisc of the same kind and handle.
    fn change_qdisc(&mut self, c: &Change, new: &Qdisc) -> Result<(), KernelError> {
        let d = self.dev(&new.dev.clone(), c)?;
        let slot = if new.parent == H_ROOT {
            d.root.as_mut()
        } else {
            d.leaves.iter_mut().find(|l| l.parent == new.parent)
        };
        match slot {
            Some(q) if q.handle == new.handle && q.kind.name() == new.kind.name() => {
                *q = new.clone()
            }
            _ => return Err(err(c, ENOENT, "no such qdisc")),
        }
        Ok(())
    }

    /// A root (back to the default, taking everything below), the hook, or a leaf.
    fn del_qdisc(&mut self, c: &Change, q: &Qdisc) -> Result<(), KernelError> {
        let d = self.dev(&q.dev.clone(), c)?;
        match q.parent {
            H_ROOT => {
                if d.root.as_ref().is_none_or(Qdisc::is_kernel_default) {
                    return Err(err(c, ENOENT, "no qdisc"));
                }
                d.root = Some(default_root(&q.dev));
                d.classes.clear();
                d.leaves.clear();
                d.filters.clear();
            }
            H_INGRESS => {
                if d.hook.take().is_none() {
                    return Err(err(c, ENOENT, "no qdisc"));
                }
                d.hook_filters.clear();
            }
            p => {
                let n = d.leaves.len();
                d.leaves.retain(|l| l.parent != p);
                if n == d.leaves.len() {
                    return Err(err(c, ENOENT, "no qdisc"));
                }
            }
        }
        Ok(())
    }

    /// A new class; its id must be free.
    fn add_class(&mut self, c: &Change, k: &Class) -> Result<(), KernelError> {
        let d = self.dev(&k.dev.clone(), c)?;
        if d.classes.iter().any(|x| x.classid == k.classid) {
            return Err(err(c, EEXIST, "exists"));
        }
        d.classes.push(k.clone());
        Ok(())
    }

    /// Parameters of an existing class.
    fn change_class(&mut self, c: &Change, new: &Class) -> Result<(), KernelError> {
        let d = self.dev(&new.dev.clone(), c)?;
        let Some(x) = d.classes.iter_mut().find(|x| x.classid == new.classid) else {
            return Err(err(c, ENOENT, "no class"));
        };
        *x = new.clone();
        Ok(())
    }

    /// Refused while children or filters use it (EBUSY), as HTB does.
    fn del_class(&mut self, c: &Change, k: &Class) -> Result<(), KernelError> {
        let d = self.dev(&k.dev.clone(), c)?;
        if !d.classes.iter().any(|x| x.classid == k.classid) {
            return Err(err(c, ENOENT, "no class"));
        }
        if d.classes.iter().any(|x| x.parent == k.classid)
            || d.filters
                .iter()
                .any(|f| matches!(f.action, Action::Flow { classid } if classid == k.classid))
        {
            return Err(err(c, EBUSY, "HTB class in use"));
        }
        d.classes.retain(|x| x.classid != k.classid);
        d.leaves.retain(|l| l.parent != k.classid);
        d.filters.retain(|f| f.parent != k.classid);
        Ok(())
    }

    /// A u32 node at a free (parent, prio, node) whose parent exists.
    fn add_filter(&mut self, c: &Change, f: &Filter) -> Result<(), KernelError> {
        let d = self.dev(&f.dev.clone(), c)?;
        let hook = f.parent >= H_INGRESS_QDISC;
        let parent_exists = if hook {
            d.hook.is_some()
        } else {
            d.root
                .as_ref()
                .is_some_and(|r| r.handle == f.parent && r.handle != 0)
                || d.classes.iter().any(|k| k.classid == f.parent)
        };
        if !parent_exists {
            return Err(err(c, ENOENT, "no such parent"));
        }
        let list = if hook {
            &mut d.hook_filters
        } else {
            &mut d.filters
        };
        if list
            .iter()
            .any(|l| l.parent == f.parent && l.prio == f.prio && l.ident() == f.ident())
        {
            return Err(err(c, EEXIST, "Filter already exists"));
        }
        let tables = |t: u32| {
            list.iter()
                .any(|l| l.handle == t && matches!(l.action, Action::Table { .. }))
        };
        let home = f.handle & 0xfff0_0000;
        let linked = match f.action {
            Action::Link { link, .. } => Some(link),
            _ => None,
        };
        if (is_netqos_table(f.handle) && !matches!(f.action, Action::Table { .. }) && !tables(home))
            || linked.is_some_and(|t| !tables(t))
        {
            return Err(err(c, EINVAL, "no such hash table"));
        }
        let mut f = f.clone();
        if !is_netqos_table(f.handle) {
            f.handle = 0x8000_0000 | f.node();
        }
        list.push(f);
        Ok(())
    }

    /// Re-points (`del`: removes) an existing node.
    fn edit_filter(&mut self, c: &Change, f: &Filter, del: bool) -> Result<(), KernelError> {
        let d = self.dev(&f.dev.clone(), c)?;
        let list = if f.parent >= H_INGRESS_QDISC {
            &mut d.hook_filters
        } else {
            &mut d.filters
        };
        let Some(i) = list
            .iter()
            .position(|l| l.parent == f.parent && l.prio == f.prio && l.ident() == f.ident())
        else {
            return Err(err(c, ENOENT, "no filter"));
        };
        if del && matches!(list[i].action, Action::Table { .. }) {
            let t = list[i].handle;
            if list
                .iter()
                .any(|l| matches!(l.action, Action::Link { link, .. } if link == t))
            {
                return Err(err(c, EBUSY, "Can not delete in-use filter"));
            }
            // A table goes with its nodes.
            list.retain(|l| l.handle & 0xfff0_0000 != t);
            return Ok(());
        }
        if del {
            list.remove(i);
        } else {
            list[i].action = f.action.clone();
        }
        Ok(())
    }
}

impl Kernel for FakeKernel {
    fn read(&mut self, devices: &[String]) -> Result<Live, KernelError> {
        self.aliases.clear();
        let mut live = Live {
            links: self.live.links.clone(),
            devs: Vec::new(),
        };
        live.links.sort_by(|a, b| a.name.cmp(&b.name));
        for n in devices {
            let mut d = self.live.dev(n).cloned().unwrap_or_else(|| DevState {
                name: n.clone(),
                ..DevState::default()
            });
            d.classes.sort_by_key(|c| c.classid);
            d.leaves.sort_by_key(|q| q.parent);
            d.filters.sort_by_key(|f| {
                let table = !matches!(f.action, Action::Table { .. });
                (f.parent, f.prio, table, f.ident())
            });
            d.hook_filters.sort_by_key(|f| (f.parent, f.prio, f.node()));
            live.devs.push(d);
        }
        Ok(live)
    }

    fn send(&mut self, change: &Change) -> Result<(), KernelError> {
        let call = self.calls;
        self.calls += 1;
        if self.fail_at == Some(call) || self.fail_from.is_some_and(|f| call >= f) {
            return Err(err(change, 22, "injected failure"));
        }
        if self.ignore_at == Some(call) {
            return Ok(());
        }
        self.apply(change)?;
        self.sent.push(change.clone());
        if let Some((at, from, to)) = self.rename_at.clone()
            && at == call
        {
            self.rename(&from, &to);
        }
        Ok(())
    }

    fn default_route_devices(&mut self) -> Result<Vec<String>, KernelError> {
        Ok(self.default_routes.clone())
    }

    fn device_ids(
        &mut self,
        names: &[String],
    ) -> Result<Vec<(String, crate::apply::device_lock::DeviceId)>, KernelError> {
        for l in &self.live.links {
            if !self.ifindexes.contains(&l.name) {
                self.ifindexes.push(l.name.clone());
            }
        }
        Ok(names
            .iter()
            .filter(|n| self.live.link(n).is_some())
            .filter_map(|n| {
                let i = self.ifindexes.iter().position(|x| x == n)?;
                let ifindex = i32::try_from(i + 1).ok()?;
                Some((
                    n.clone(),
                    crate::apply::device_lock::DeviceId {
                        netns: self.netns,
                        ifindex,
                    },
                ))
            })
            .collect())
    }

    fn lock_dir(&self) -> Option<std::path::PathBuf> {
        self.lock_dir.clone()
    }
}
