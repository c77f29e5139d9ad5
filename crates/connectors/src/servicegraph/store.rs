//! The pairing store: the half of a call seen so far, waiting for the other half.
//!
//! Entries are keyed by (trace id, caller span id): the key a CLIENT/PRODUCER span has by its
//! own id, and a SERVER/CONSUMER span by its parent id (or its own id when Zipkin shares it).
//! An entry holds at most one caller and one callee half.
//!
//! Apart from them the store keeps *markers*: the note, left by a sidecar's CLIENT span or a
//! Linkerd outbound SERVER span arriving before its parent, that the CLIENT span with that id
//! is a hop inside its own workload and must not become an edge. Markers live in their own
//! map with their own bound (also `max_items`), so a flood of them (parents that never
//! arrive) can never crowd out waiting spans.
//!
//! Neither map holds more than `max_items` entries; what would need a new entry when one is
//! full is refused (and counted by the caller). Each half and marker expires on its own,
//! `ttl` after it was stored; [`Store::expire`] walks both maps, which at the default bound of
//! 100 000 entries takes about a millisecond, once per expiry tick.

use super::hash::FastMap;
use super::identity::NodeId;
use std::hash::{Hash, Hasher};

/// (trace id, span id) of the caller a pair is keyed by.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Key {
    /// Trace id.
    pub trace: [u8; 16],
    /// The caller's span id.
    pub span: [u8; 8],
}

impl Key {
    /// The key of `trace`/`span`, `None` unless they are 16 and 8 bytes and the span id is not
    /// all zeros (OTLP's "no parent").
    pub(crate) fn new(trace: &[u8], span: &[u8]) -> Option<Key> {
        let trace: [u8; 16] = trace.try_into().ok()?;
        let span: [u8; 8] = span.try_into().ok()?;
        if span == [0; 8] {
            return None;
        }
        Some(Key { trace, span })
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Three words, no length prefixes: the ids are already random.
        let (a, b) = self.trace.split_at(8);
        state.write_u64(u64::from_le_bytes(a.try_into().unwrap_or([0; 8])));
        state.write_u64(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
        state.write_u64(u64::from_le_bytes(self.span));
    }
}

/// How an edge's `connection_type` label reads.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub(crate) enum Conn {
    /// A paired call: `""`.
    Paired,
    /// `virtual_node`: from `user`, or to a peer that is neither a database nor a queue.
    Virtual,
    /// `database`.
    Database,
    /// `messaging_system`.
    Messaging,
}

impl Conn {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Conn::Paired => "",
            Conn::Virtual => "virtual_node",
            Conn::Database => "database",
            Conn::Messaging => "messaging_system",
        }
    }
}

/// One side of a call, as much of its span as an edge needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Half {
    /// Interned (node, dimension values) of this side.
    pub side: u32,
    /// Span duration in seconds.
    pub duration: f64,
    /// How many calls this span stands for (1; sampling-adjusted counts later).
    pub weight: u64,
    /// When this half stops waiting, unix nanoseconds.
    pub expires: u64,
    /// For callers: the virtual server node named by a peer attribute, if any.
    pub peer: Option<NodeId>,
    /// For callers: the `connection_type` of the virtual edge.
    pub conn: Conn,
    /// Whether the span failed under the mesh rule.
    pub failed: bool,
    /// Callers: a CLIENT (not PRODUCER) span. Callees: a SERVER (not CONSUMER) span.
    pub rpc: bool,
    /// Callees: a Zipkin shared span (keyed by its own id).
    pub shared: bool,
}

/// What waits under one key.
#[derive(Default, Debug)]
pub(crate) struct Entry {
    /// The CLIENT/PRODUCER span with this id.
    pub caller: Option<Half>,
    /// The SERVER/CONSUMER span it called.
    pub callee: Option<Half>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.caller.is_none() && self.callee.is_none()
    }
}

/// "The CLIENT span with this key is intra-workload", left by its child.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Marker {
    /// When it is forgotten, unix ns.
    pub expires: u64,
    /// The node of the span that left it: it only applies to a caller of the same node (a
    /// hop inside one workload), so the CLIENT child of a Zipkin shared SERVER span, which has
    /// the caller's id as its parent, cannot silence that caller.
    pub node: NodeId,
    /// Left by a SERVER span under its own id (rather than by a CLIENT child under its
    /// parent's id): a later SERVER span of the same node whose parent it is runs inside the
    /// same workload (an application's server span inside its sidecar's).
    pub server: bool,
}

/// What [`Store::expire`] found past its time.
#[derive(Default)]
pub(crate) struct Expired {
    /// Callers that never met their callee, with their own key (its trace id names the
    /// exemplar of the virtual edge they make).
    pub callers: Vec<(Key, Half)>,
    /// Callees that never met their caller.
    pub callees: u64,
}

/// The bounded maps of waiting halves and markers.
pub(crate) struct Store {
    map: FastMap<Key, Entry>,
    markers: FastMap<Key, Marker>,
    max_items: usize,
}

/// The store was full: nothing was stored.
#[derive(Debug)]
pub(crate) struct Full;

impl Store {
    /// An empty store holding at most `max_items` entries (and as many markers).
    pub(crate) fn new(max_items: usize) -> Store {
        Store {
            map: FastMap::default(),
            markers: FastMap::default(),
            max_items,
        }
    }

    /// Entries holding waiting halves.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Markers held.
    pub(crate) fn markers_len(&self) -> usize {
        self.markers.len()
    }

    /// Whether any marker is held (spans skip the lookups that clear them otherwise).
    pub(crate) fn has_markers(&self) -> bool {
        !self.markers.is_empty()
    }

    /// The entry under `key`.
    pub(crate) fn get_mut(&mut self, key: &Key) -> Option<&mut Entry> {
        self.map.get_mut(key)
    }

    /// Removes the entry under `key` if nothing is left in it.
    pub(crate) fn settle(&mut self, key: &Key) {
        if self.map.get(key).is_some_and(Entry::is_empty) {
            self.map.remove(key);
        }
    }

    /// Stores a new entry under `key` (which must not be present).
    pub(crate) fn insert(&mut self, key: Key, entry: Entry) -> Result<(), Full> {
        if self.map.len() >= self.max_items {
            return Err(Full);
        }
        self.map.insert(key, entry);
        Ok(())
    }

    /// Removes and returns the marker under `key`.
    pub(crate) fn take_marker(&mut self, key: &Key) -> Option<Marker> {
        if self.markers.is_empty() {
            return None;
        }
        self.markers.remove(key)
    }

    /// Leaves a marker under `key`, unless one is there already.
    pub(crate) fn add_marker(&mut self, key: Key, marker: Marker) -> Result<(), Full> {
        if self.markers.contains_key(&key) {
            return Ok(());
        }
        if self.markers.len() >= self.max_items {
            return Err(Full);
        }
        self.markers.insert(key, marker);
        Ok(())
    }

    /// Takes out everything that expired at `now` (everything when `all`).
    pub(crate) fn expire(&mut self, now: u64, all: bool, out: &mut Expired) {
        self.map.retain(|k, e| {
            if let Some(c) = e.caller
                && (all || c.expires <= now)
            {
                out.callers.push((*k, c));
                e.caller = None;
            }
            if let Some(c) = e.callee
                && (all || c.expires <= now)
            {
                out.callees += 1;
                e.callee = None;
            }
            !e.is_empty()
        });
        self.markers.retain(|_, m| !all && m.expires > now);
    }

    /// The nodes of the markers held, for the interner sweep.
    pub(crate) fn marker_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.markers.values().map(|m| m.node)
    }

    /// Every half held, for marking the interned sides and nodes they reference.
    pub(crate) fn halves(&self) -> impl Iterator<Item = &Half> {
        self.map
            .values()
            .flat_map(|e| e.caller.iter().chain(e.callee.iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half(expires: u64) -> Half {
        Half {
            side: 1,
            duration: 0.1,
            weight: 1,
            expires,
            peer: None,
            conn: Conn::Virtual,
            failed: false,
            rpc: true,
            shared: false,
        }
    }

    fn key(i: u8) -> Key {
        Key::new(&[i; 16], &[i; 8]).unwrap()
    }

    #[test]
    fn keys_reject_wrong_lengths_and_the_zero_span_id() {
        assert!(Key::new(&[1; 16], &[0; 8]).is_none());
        assert!(Key::new(&[1; 15], &[1; 8]).is_none());
        assert!(Key::new(&[1; 16], &[]).is_none());
    }

    #[test]
    fn bounded_and_each_part_expires_on_its_own() {
        let mut s = Store::new(2);
        let caller = Entry {
            caller: Some(half(10)),
            ..Default::default()
        };
        s.insert(key(1), caller).unwrap();
        let callee = Entry {
            callee: Some(half(20)),
            ..Default::default()
        };
        s.insert(key(2), callee).unwrap();
        assert!(s.insert(key(3), Entry::default()).is_err());
        // Markers have their own room.
        let m = |expires| Marker {
            expires,
            node: 4,
            server: false,
        };
        s.add_marker(key(3), m(15)).unwrap();
        s.add_marker(key(4), m(30)).unwrap();
        s.add_marker(key(4), m(99)).unwrap();
        assert!(s.add_marker(key(5), m(15)).is_err());
        let mut out = Expired::default();
        s.expire(15, false, &mut out);
        assert_eq!((out.callers.len(), out.callees), (1, 0));
        assert_eq!((s.len(), s.markers_len()), (1, 1));
        assert_eq!(
            s.take_marker(&key(4)).map(|m| m.expires),
            Some(30),
            "the first stays"
        );
        assert!(!s.has_markers());
        s.expire(15, true, &mut out);
        assert_eq!((out.callers.len(), out.callees), (1, 1));
        assert_eq!(s.len(), 0);
    }
}
