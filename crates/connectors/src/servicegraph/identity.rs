//! Who a span belongs to and who it calls: the node identity rule, virtual peer names, and the
//! one-pass attribute lookup they are built on.
//!
//! Every span needs a dozen attributes (identity, `direction`, `component`, peer names,
//! dimensions...). Looking each up with a linear search would walk an Envoy span's ~25
//! attributes a dozen times; [`KeyTable::scan`] walks them once and records where each wanted
//! key sits. Node names are interned ([`Nodes`]), so the pairing path handles `u32`s, not
//! strings.

use super::config::ServiceGraphConfig;
use super::hash::FastMap;
use meshgate_pdata::attributes::value_to_string;
use meshgate_pdata::otlp::{KeyValue, any_value::Value};
use std::borrow::Cow;

/// Index of an attribute in its list, or [`ABSENT`].
pub(crate) const ABSENT: u32 = u32::MAX;

/// A wanted attribute key's position in a [`KeyTable`] scan result.
pub(crate) type Slot = u16;

/// The keys the service graph reads, grouped by length so a scan compares an attribute's key
/// with at most a couple of candidates.
#[derive(Default)]
pub(crate) struct KeyTable {
    by_len: Vec<Vec<(Box<str>, Slot)>>,
    len: usize,
}

impl KeyTable {
    /// The slot of `key`, added on first use.
    pub(crate) fn slot(&mut self, key: &str) -> Slot {
        let l = key.len();
        if let Some(s) = self
            .by_len
            .get(l)
            .and_then(|c| c.iter().find(|(k, _)| &**k == key))
        {
            return s.1;
        }
        if self.by_len.len() <= l {
            self.by_len.resize_with(l + 1, Vec::new);
        }
        let s = self.len as Slot;
        self.by_len[l].push((key.into(), s));
        self.len += 1;
        s
    }

    /// Fills `out` (one entry per slot) with the index in `attrs` of each wanted key's first
    /// occurrence, or [`ABSENT`].
    pub(crate) fn scan(&self, attrs: &[KeyValue], out: &mut Vec<u32>) {
        out.clear();
        out.resize(self.len, ABSENT);
        for (i, kv) in attrs.iter().enumerate() {
            if let Some(cands) = self.by_len.get(kv.key.len()) {
                for (k, s) in cands {
                    if **k == *kv.key && out[*s as usize] == ABSENT {
                        out[*s as usize] = i as u32;
                    }
                }
            }
        }
    }
}

/// The attribute slots the service graph reads, resolved once from the config.
pub(crate) struct Slots {
    /// `identity.service_attributes`, in order.
    pub service: Vec<Slot>,
    /// `identity.namespace_attributes`, in order.
    pub namespace: Vec<Slot>,
    /// Linkerd's `direction` (`inbound`/`outbound`).
    pub direction: Slot,
    /// Envoy's `component` (`proxy`).
    pub component: Slot,
    /// `zipkin.shared`, set by the zipkin receiver.
    pub zipkin_shared: Slot,
    /// `db.system`: the caller calls a database.
    pub db_system: Slot,
    /// `messaging.system`: the caller publishes to a broker.
    pub messaging_system: Slot,
    /// `virtual_node_peer_attributes`, in order.
    pub peer: Vec<Slot>,
    /// `database_name_attributes`, in order.
    pub db_names: Vec<Slot>,
    /// `dimensions`, in order.
    pub dims: Vec<Slot>,
}

impl Slots {
    /// Registers every key the config names in `keys`.
    pub(crate) fn new(cfg: &ServiceGraphConfig, keys: &mut KeyTable) -> Slots {
        let mut many = |v: &[String]| v.iter().map(|k| keys.slot(k)).collect::<Vec<_>>();
        let service = many(&cfg.identity.service_attributes);
        let namespace = many(&cfg.identity.namespace_attributes);
        let peer = many(&cfg.virtual_node_peer_attributes);
        let db_names = many(&cfg.database_name_attributes);
        let dims = many(&cfg.dimensions);
        Slots {
            service,
            namespace,
            peer,
            db_names,
            dims,
            direction: keys.slot("direction"),
            component: keys.slot("component"),
            zipkin_shared: keys.slot("zipkin.shared"),
            db_system: keys.slot("db.system"),
            messaging_system: keys.slot("messaging.system"),
        }
    }
}

/// A span's attributes with its resource's behind them: a key is read from the span first,
/// then from the resource (the rule of `meshgate_pdata::mesh::span_or_resource_str`).
/// Attribute values live as long as the request (`'a`); the scan results only as long as
/// the span is being looked at (`'i`).
#[derive(Clone, Copy)]
pub(crate) struct View<'a, 'i> {
    /// The span's attributes.
    pub span: &'a [KeyValue],
    /// [`KeyTable::scan`] of `span`.
    pub span_idx: &'i [u32],
    /// The resource's attributes.
    pub res: &'a [KeyValue],
    /// [`KeyTable::scan`] of `res`.
    pub res_idx: &'i [u32],
}

impl<'a> View<'a, '_> {
    /// The value of the key in `slot`.
    pub(crate) fn value(&self, slot: Slot) -> Option<&'a Value> {
        let s = self.span_idx[slot as usize];
        if s != ABSENT
            && let Some(v) = self.span[s as usize]
                .value
                .as_ref()
                .and_then(|v| v.value.as_ref())
        {
            return Some(v);
        }
        let r = self.res_idx[slot as usize];
        if r != ABSENT {
            return self.res[r as usize]
                .value
                .as_ref()
                .and_then(|v| v.value.as_ref());
        }
        None
    }

    /// The value as text; an empty string counts as absent.
    pub(crate) fn text(&self, slot: Slot) -> Option<Cow<'a, str>> {
        match self.value(slot)? {
            Value::StringValue(s) if s.is_empty() => None,
            Value::StringValue(s) => Some(Cow::Borrowed(s.as_str())),
            other => Some(Cow::Owned(value_to_string(other))),
        }
    }

    /// Whether the text value equals `want`.
    pub(crate) fn is(&self, slot: Slot, want: &str) -> bool {
        matches!(self.value(slot), Some(Value::StringValue(s)) if s == want)
    }

    /// Whether the value is `true` (boolean or the string `"true"`).
    pub(crate) fn is_true(&self, slot: Slot) -> bool {
        match self.value(slot) {
            Some(Value::BoolValue(b)) => *b,
            Some(Value::StringValue(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        }
    }

    /// Whether the span itself (not its resource) carries any of `slots`.
    pub(crate) fn span_has_any(&self, slots: &[Slot]) -> bool {
        slots.iter().any(|s| self.span_idx[*s as usize] != ABSENT)
    }

    /// The first present value of `slots`.
    pub(crate) fn first(&self, slots: &[Slot]) -> Option<Cow<'a, str>> {
        slots.iter().find_map(|s| self.text(*s))
    }
}

/// Interned node id.
pub(crate) type NodeId = u32;

/// The node every root SERVER span's request comes from.
pub(crate) const USER_NODE: NodeId = 0;

/// Name of [`USER_NODE`], as Tempo and the collector spell it.
pub(crate) const USER: &str = "user";

/// Name of a node whose spans carry no name attribute at all.
pub(crate) const UNKNOWN_SERVICE: &str = "unknown_service";

/// A graph node: its id (the `client`/`server` label value) and the parts it was made of.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// `name.namespace` or `name`: the label value and the topology id.
    pub id: Box<str>,
    /// The service name part.
    pub name: Box<str>,
    /// The namespace, when known.
    pub namespace: Option<Box<str>>,
}

/// The node interner: ids are stable while referenced; [`Nodes::sweep`] frees the rest.
pub(crate) struct Nodes {
    slots: Vec<Option<Node>>,
    by_id: FastMap<Box<str>, NodeId>,
    free: Vec<NodeId>,
    scratch: String,
}

impl Nodes {
    /// An interner holding [`USER_NODE`].
    pub(crate) fn new() -> Nodes {
        let mut n = Nodes {
            slots: Vec::new(),
            by_id: FastMap::default(),
            free: Vec::new(),
            scratch: String::new(),
        };
        let user = n.intern(USER, None);
        debug_assert_eq!(user, USER_NODE);
        n
    }

    /// The node named `name` in `namespace`: id `name.namespace` unless the name already
    /// ends with `.namespace`, else `name`. No allocation when the node exists.
    pub(crate) fn intern(&mut self, name: &str, namespace: Option<&str>) -> NodeId {
        self.scratch.clear();
        self.scratch.push_str(name);
        let ns = namespace.filter(|ns| !ends_with_segment(name, ns));
        if let Some(ns) = ns {
            self.scratch.push('.');
            self.scratch.push_str(ns);
        }
        if let Some(id) = self.by_id.get(self.scratch.as_str()) {
            let id = *id;
            // A node first seen without its namespace (`service.name=reviews.default`)
            // learns it from a later span that names it.
            if let (Some(node), Some(ns)) = (self.slots[id as usize].as_mut(), namespace)
                && node.namespace.is_none()
                && let Some(base) = strip_segment(&node.id, ns)
            {
                node.name = base.into();
                node.namespace = Some(ns.into());
            }
            return id;
        }
        let id_str: &str = &self.scratch;
        let node = Node {
            id: id_str.into(),
            // `reviews` + `default` and `reviews.default` + `default` both name `reviews`.
            name: namespace
                .and_then(|ns| strip_segment(id_str, ns))
                .unwrap_or(id_str)
                .into(),
            namespace: namespace.map(Into::into),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(node);
                id
            }
            None => {
                self.slots.push(Some(node));
                (self.slots.len() - 1) as NodeId
            }
        };
        self.by_id.insert(self.scratch.as_str().into(), id);
        id
    }

    /// The node `id` (which must be live).
    pub(crate) fn get(&self, id: NodeId) -> &Node {
        self.slots[id as usize]
            .as_ref()
            .expect("node ids held by the graph are live")
    }

    /// Number of slots (live or free), the length a mark vector needs.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Number of live nodes.
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Frees every node not marked (except [`USER_NODE`]).
    pub(crate) fn sweep(&mut self, marks: &[bool]) {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if i as NodeId == USER_NODE || marks.get(i).copied().unwrap_or(false) {
                continue;
            }
            if let Some(node) = slot.take() {
                self.by_id.remove(&node.id);
                self.free.push(i as NodeId);
            }
        }
    }
}

/// Whether `name` ends with `.ns`.
fn ends_with_segment(name: &str, ns: &str) -> bool {
    strip_segment(name, ns).is_some()
}

/// `name` without its `.ns` suffix, when it has one and something is left.
fn strip_segment<'a>(name: &'a str, ns: &str) -> Option<&'a str> {
    name.strip_suffix(ns)
        .and_then(|b| b.strip_suffix('.'))
        .filter(|b| !b.is_empty())
}

/// The node name and namespace of a span under the identity rule (the caller interns them).
pub(crate) fn identity<'a>(
    view: &View<'a, '_>,
    slots: &Slots,
) -> (Cow<'a, str>, Option<Cow<'a, str>>) {
    let name = view
        .first(&slots.service)
        .unwrap_or(Cow::Borrowed(UNKNOWN_SERVICE));
    (name, view.first(&slots.namespace))
}

/// A peer name taken apart: an Istio cluster name (`outbound|9080||host`) gives its host, and
/// a Kubernetes service name `<svc>.<ns>.svc[.<domain>]` gives `(svc, Some(ns))`, so
/// it interns to the node id `svc.ns` an instrumented `svc` in `ns` has. `None` when nothing
/// usable is left (`inbound|9080||`).
pub(crate) fn peer_parts(raw: &str) -> Option<(&str, Option<&str>)> {
    let host = if raw.contains('|') {
        raw.rsplit('|').next().unwrap_or_default()
    } else {
        raw
    };
    let host = host.trim().trim_end_matches('.');
    if host.is_empty() {
        return None;
    }
    let mut it = host.splitn(4, '.');
    if let (Some(svc), Some(ns), Some("svc")) = (it.next(), it.next(), it.next())
        && !svc.is_empty()
        && !ns.is_empty()
    {
        return Some((svc, Some(ns)));
    }
    Some((host, None))
}

/// The virtual server node of an unpaired caller: the first usable peer attribute, then (for
/// database calls) the first database name attribute.
pub(crate) fn peer_node(view: &View<'_, '_>, slots: &Slots, nodes: &mut Nodes) -> Option<NodeId> {
    let db = view.value(slots.db_system).is_some();
    let extra: &[Slot] = if db { &slots.db_names } else { &[] };
    for s in slots.peer.iter().chain(extra) {
        if let Some(t) = view.text(*s)
            && let Some((name, ns)) = peer_parts(&t)
        {
            return Some(nodes.intern(name, ns));
        }
    }
    None
}

/// Interned side id: a node plus the values of the configured dimensions on that side.
pub(crate) type SideId = u32;

struct SideData {
    node: NodeId,
    dims: Box<[Option<Box<str>>]>,
    hash: u64,
    /// Next side with the same hash (`u32::MAX` ends the chain).
    next: SideId,
}

/// The interner of edge ends: (node, dimension values). The pairing store and the series
/// keys hold these `u32`s; looking one up from a span's borrowed values allocates nothing.
pub(crate) struct Sides {
    slots: Vec<Option<SideData>>,
    heads: FastMap<u64, SideId>,
    free: Vec<SideId>,
    hasher: super::hash::FoldBuild,
}

const END: SideId = u32::MAX;

impl Sides {
    /// An empty interner.
    pub(crate) fn new() -> Sides {
        Sides {
            slots: Vec::new(),
            heads: FastMap::default(),
            free: Vec::new(),
            hasher: Default::default(),
        }
    }

    fn hash(&self, node: NodeId, dims: &[Option<Cow<'_, str>>]) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = self.hasher.build_hasher();
        h.write_u32(node);
        for d in dims {
            match d {
                None => h.write_u8(0),
                Some(v) => {
                    h.write_u8(1);
                    v.as_ref().hash(&mut h);
                }
            }
        }
        h.finish()
    }

    /// The side of `node` with these dimension values (one per configured dimension).
    pub(crate) fn intern(&mut self, node: NodeId, dims: &[Option<Cow<'_, str>>]) -> SideId {
        let hash = self.hash(node, dims);
        let mut at = self.heads.get(&hash).copied().unwrap_or(END);
        let head = at;
        while at != END {
            let Some(s) = self.slots[at as usize].as_ref() else {
                break;
            };
            let same = s.node == node
                && s.dims.len() == dims.len()
                && s.dims
                    .iter()
                    .zip(dims)
                    .all(|(a, b)| a.as_deref() == b.as_deref());
            if same {
                return at;
            }
            at = s.next;
        }
        let data = SideData {
            node,
            dims: dims.iter().map(|d| d.as_deref().map(Into::into)).collect(),
            hash,
            next: head,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(data);
                id
            }
            None => {
                self.slots.push(Some(data));
                (self.slots.len() - 1) as SideId
            }
        };
        self.heads.insert(hash, id);
        id
    }

    /// The node of side `id`.
    pub(crate) fn node(&self, id: SideId) -> NodeId {
        self.slots[id as usize]
            .as_ref()
            .map(|s| s.node)
            .expect("side ids held by the graph are live")
    }

    /// The dimension values of side `id`.
    pub(crate) fn dims(&self, id: SideId) -> &[Option<Box<str>>] {
        self.slots[id as usize]
            .as_ref()
            .map(|s| &*s.dims)
            .unwrap_or(&[])
    }

    /// Number of slots (live or free), the length a mark vector needs.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Number of live sides.
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Frees every side not marked and returns the nodes the remaining ones use.
    pub(crate) fn sweep(&mut self, marks: &[bool], live_nodes: &mut [bool]) {
        self.heads.clear();
        for i in 0..self.slots.len() {
            let keep = marks.get(i).copied().unwrap_or(false);
            if !keep {
                if self.slots[i].take().is_some() {
                    self.free.push(i as SideId);
                }
                continue;
            }
            let Some(s) = self.slots[i].as_ref() else {
                continue;
            };
            let (hash, node) = (s.hash, s.node);
            if let Some(m) = live_nodes.get_mut(node as usize) {
                *m = true;
            }
            let next = self.heads.insert(hash, i as SideId).unwrap_or(END);
            if let Some(s) = self.slots[i].as_mut() {
                s.next = next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_pdata::attributes::{kv, kv_str};

    #[test]
    fn istio_cluster_names_and_service_fqdns_are_normalised() {
        assert_eq!(
            peer_parts("outbound|9080||reviews.default.svc.cluster.local"),
            Some(("reviews", Some("default")))
        );
        assert_eq!(
            peer_parts("outbound|9080|v2|ratings.prod.svc"),
            Some(("ratings", Some("prod")))
        );
        assert_eq!(peer_parts("inbound|9080||"), None);
        assert_eq!(peer_parts("api.stripe.com"), Some(("api.stripe.com", None)));
        assert_eq!(peer_parts("orders-db"), Some(("orders-db", None)));
        assert_eq!(
            peer_parts("a.b.service.local"),
            Some(("a.b.service.local", None))
        );
    }

    #[test]
    fn node_ids_join_name_and_namespace_once() {
        let mut n = Nodes::new();
        let a = n.intern("reviews", Some("default"));
        let b = n.intern("reviews.default", Some("default"));
        assert_eq!(a, b);
        assert_eq!(&*n.get(a).id, "reviews.default");
        assert_eq!(&*n.get(a).name, "reviews");
        assert_eq!(n.get(a).namespace.as_deref(), Some("default"));
        let c = n.intern("reviews.default", None);
        assert_eq!(a, c);
        let d = n.intern("payments", None);
        assert_eq!(n.get(d).namespace, None);
        assert_eq!(n.intern(USER, None), USER_NODE);
        // A node first seen without a namespace learns it.
        let e = n.intern("cart.shop", None);
        assert_eq!(n.intern("cart", Some("shop")), e);
        assert_eq!(&*n.get(e).name, "cart");
        assert_eq!(n.get(e).namespace.as_deref(), Some("shop"));
        // Sweeping frees unmarked nodes but never `user`.
        let mut marks = vec![false; n.capacity()];
        marks[a as usize] = true;
        n.sweep(&marks);
        assert_eq!(n.len(), 2);
        assert_eq!(n.intern(USER, None), USER_NODE);
        assert_eq!(n.intern("reviews", Some("default")), a);
    }

    #[test]
    fn sides_intern_by_node_and_dimension_values() {
        let mut s = Sides::new();
        let a = s.intern(3, &[Some(Cow::Borrowed("v1")), None]);
        let b = s.intern(3, &[Some(Cow::Owned("v1".to_string())), None]);
        let c = s.intern(3, &[None, Some(Cow::Borrowed("v1"))]);
        let d = s.intern(4, &[Some(Cow::Borrowed("v1")), None]);
        assert_eq!(a, b);
        assert!(a != c && a != d && c != d);
        assert_eq!(s.node(d), 4);
        assert_eq!(s.dims(c)[1].as_deref(), Some("v1"));
        let mut marks = vec![false; s.capacity()];
        marks[c as usize] = true;
        let mut nodes = vec![false; 5];
        s.sweep(&marks, &mut nodes);
        assert_eq!(s.len(), 1);
        assert_eq!(nodes, [false, false, false, true, false]);
        assert_eq!(s.intern(3, &[None, Some(Cow::Borrowed("v1"))]), c);
        let e = s.intern(9, &[None, None]);
        assert!(e == a || e == d, "freed slots are reused");
    }

    #[test]
    fn span_attributes_shadow_resource_attributes() {
        let cfg = ServiceGraphConfig::default();
        let mut keys = KeyTable::default();
        let slots = Slots::new(&cfg, &mut keys);
        let span = vec![
            kv_str("istio.canonical_service", "reviews"),
            kv_str("istio.namespace", "default"),
            kv("zipkin.shared", Value::BoolValue(true)),
        ];
        let res = vec![
            kv_str("service.name", "reviews.default"),
            kv_str("direction", ""),
        ];
        let (mut si, mut ri) = (Vec::new(), Vec::new());
        keys.scan(&span, &mut si);
        keys.scan(&res, &mut ri);
        let v = View {
            span: &span,
            span_idx: &si,
            res: &res,
            res_idx: &ri,
        };
        let (name, ns) = identity(&v, &slots);
        assert_eq!((&*name, ns.as_deref()), ("reviews", Some("default")));
        assert!(v.is_true(slots.zipkin_shared));
        assert_eq!(v.text(slots.direction), None, "empty strings are absent");
        let empty: Vec<KeyValue> = Vec::new();
        let v = View {
            span: &empty,
            span_idx: &vec![ABSENT; keys.len],
            res: &empty,
            res_idx: &vec![ABSENT; keys.len],
        };
        assert_eq!(identity(&v, &slots).0, UNKNOWN_SERVICE);
    }
}
