//! A tree node as Sled pages it in: the base version decoded, then each linked fragment applied
//! in order (Sled's `Node::apply`). Keys and values stay in the message buffers they were read
//! into; the node keeps ranges. The buffers are wiped when the node is dropped: values of a
//! store without a passphrase are the keys themselves.

use std::ops::Range;

use crate::buffer::MessageBody;

use crate::codec::{Cursor, Malformed};
use crate::log::PageId;

/// A byte string inside one of the node's buffers.
#[derive(Debug, Clone, Copy)]
struct Span {
    buf: u32,
    start: u32,
    len: u32,
}

impl Span {
    fn new(buf: usize, range: Range<usize>) -> Self {
        Span {
            buf: buf as u32,
            start: range.start as u32,
            len: (range.end - range.start) as u32,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Leaf,
    Index,
}

pub(crate) struct Node {
    bufs: Vec<MessageBody>,
    pub next: Option<PageId>,
    pub merging_child: Option<PageId>,
    pub merging: bool,
    prefix_len: usize,
    lo: Span,
    hi: Span,
    pub kind: Kind,
    /// Keys without the node's prefix, in order.
    keys: Vec<Span>,
    /// Leaf values, one per key.
    values: Vec<Span>,
    /// Index children, one per key (the key is the child's low bound).
    children: Vec<PageId>,
}

/// A link fragment Sled appends to a page (its `Link`).
enum Link {
    Set(Span, Span),
    Del(Span),
    ParentMergeIntention(PageId),
    ParentMergeConfirm,
    ChildMergeCap,
}

/// Why a node's fragments do not add up to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeError {
    Malformed(Malformed),
    /// The fragments contradict each other or the node (Sled asserts these away).
    Inconsistent(&'static str),
}

impl From<Malformed> for NodeError {
    fn from(m: Malformed) -> Self {
        NodeError::Malformed(m)
    }
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::Malformed(m) => m.fmt(f),
            NodeError::Inconsistent(what) => f.write_str(what),
        }
    }
}

impl Node {
    /// Decodes a base version (Sled's `Serialize for Node`): right sibling, merging child,
    /// merging flag, prefix length, low and high bounds, then the data: a tag (0 leaf, 1 index),
    /// a count, the keys, then the values or child page IDs.
    pub fn decode(base: MessageBody) -> Result<Node, NodeError> {
        let mut c = Cursor::new(&base);
        let next = c.nonzero_option("node")?;
        let merging_child = c.nonzero_option("node")?;
        let merging = c.bool("node")?;
        let prefix_len = usize::from(c.u8("node")?);
        let lo = Span::new(0, c.bytes("node low bound")?);
        let hi = Span::new(0, c.bytes("node high bound")?);
        let kind = match c.u8("node data")? {
            0 => Kind::Leaf,
            1 => Kind::Index,
            _ => return Err(Malformed("node data").into()),
        };
        let count = usize::try_from(c.varint("node data")?).map_err(|_| Malformed("node data"))?;
        // Every key takes at least a byte: a count past the bytes left is damage, not a size.
        if count > c.remaining() {
            return Err(Malformed("node key count").into());
        }
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            keys.push(Span::new(0, c.bytes("node key")?));
        }
        let (mut values, mut children) = (Vec::new(), Vec::new());
        match kind {
            Kind::Leaf => {
                values.reserve(count);
                for _ in 0..count {
                    values.push(Span::new(0, c.bytes("leaf value")?));
                }
            }
            Kind::Index => {
                children.reserve(count);
                for _ in 0..count {
                    children.push(c.varint("index child")?);
                }
            }
        }
        if (lo.len as usize) < prefix_len || (hi.len as usize) < prefix_len {
            return Err(NodeError::Inconsistent(
                "the node's prefix is longer than its bounds",
            ));
        }
        Ok(Node {
            bufs: vec![base],
            next,
            merging_child,
            merging,
            prefix_len,
            lo,
            hi,
            kind,
            keys,
            values,
            children,
        })
    }

    /// Applies one linked fragment (Sled's `Link` encoding: a tag, then its fields).
    pub fn apply(&mut self, body: MessageBody) -> Result<(), NodeError> {
        let buf = self.bufs.len();
        let link = {
            let mut c = Cursor::new(&body);
            match c.u8("link")? {
                0 => Link::Set(
                    Span::new(buf, c.bytes("link key")?),
                    Span::new(buf, c.bytes("link value")?),
                ),
                1 => Link::Del(Span::new(buf, c.bytes("link key")?)),
                2 => Link::ParentMergeIntention(c.varint("link")?),
                3 => Link::ParentMergeConfirm,
                4 => Link::ChildMergeCap,
                _ => return Err(Malformed("link").into()),
            }
        };
        self.bufs.push(body);
        if self.merging {
            return Err(NodeError::Inconsistent(
                "a fragment was linked to a node after it was merged",
            ));
        }
        match link {
            Link::Set(key, value) => {
                if self.kind != Kind::Leaf {
                    return Err(NodeError::Inconsistent("a key was set in an index node"));
                }
                match self.find(self.bytes(key)) {
                    Ok(i) => self.values[i] = value,
                    Err(i) => {
                        self.keys.insert(i, key);
                        self.values.insert(i, value);
                    }
                }
            }
            Link::Del(key) => {
                if self.kind != Kind::Leaf {
                    return Err(NodeError::Inconsistent(
                        "a key was deleted from an index node",
                    ));
                }
                if let Ok(i) = self.find(self.bytes(key)) {
                    self.keys.remove(i);
                    self.values.remove(i);
                }
            }
            Link::ParentMergeIntention(child) => {
                if self.merging_child.is_some() || child == 0 {
                    return Err(NodeError::Inconsistent(
                        "a second merge began in a node already merging a child",
                    ));
                }
                self.merging_child = Some(child);
            }
            Link::ParentMergeConfirm => {
                let child = self.merging_child.take().ok_or(NodeError::Inconsistent(
                    "a merge was confirmed that never began",
                ))?;
                let i = self.children.iter().position(|&c| c == child).ok_or(
                    NodeError::Inconsistent(
                        "a merge was confirmed for a child the node does not have",
                    ),
                )?;
                self.keys.remove(i);
                self.children.remove(i);
            }
            Link::ChildMergeCap => self.merging = true,
        }
        Ok(())
    }

    fn bytes(&self, span: Span) -> &[u8] {
        &self.bufs[span.buf as usize][span.start as usize..(span.start + span.len) as usize]
    }

    /// Position of an encoded key (without the prefix) among the keys.
    fn find(&self, suffix: &[u8]) -> Result<usize, usize> {
        self.keys.binary_search_by(|k| self.bytes(*k).cmp(suffix))
    }

    pub fn lo(&self) -> &[u8] {
        self.bytes(self.lo)
    }

    /// The node's exclusive upper bound; empty for the rightmost node of its level.
    pub fn hi(&self) -> &[u8] {
        self.bytes(self.hi)
    }

    /// The bytes every key of this node starts with (left out of the stored keys).
    pub fn prefix(&self) -> &[u8] {
        &self.lo()[..self.prefix_len]
    }

    /// `key` without this node's prefix, for a key within the node's range.
    fn suffix<'k>(&self, key: &'k [u8]) -> Option<&'k [u8]> {
        key.strip_prefix(self.prefix())
    }

    /// Index nodes: the position (in [`Node::children`]) of the child whose range holds `key`,
    /// and the low bound of the child after it (the end of that range as far as this node knows;
    /// `None` for its last child).
    pub fn child_for(&self, key: &[u8]) -> Result<(usize, Option<Vec<u8>>), NodeError> {
        let suffix = self
            .suffix(key)
            .ok_or(NodeError::Inconsistent("a key outside the node's prefix"))?;
        let i = match self.find(suffix) {
            Ok(i) => i,
            Err(0) => {
                return Err(NodeError::Inconsistent(
                    "an index node with no child for a key in its range",
                ))
            }
            Err(i) => i - 1,
        };
        let end = self
            .keys
            .get(i + 1)
            .map(|k| [self.prefix(), self.bytes(*k)].concat());
        Ok((i, end))
    }

    /// Index nodes: the children's pages, in key order.
    pub fn children(&self) -> &[PageId] {
        &self.children
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Leaves: the entries in key order from `index` on, as (key suffix, value).
    pub fn entries_from(&self, index: usize) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.keys[index.min(self.keys.len())..]
            .iter()
            .zip(&self.values[index.min(self.values.len())..])
            .map(|(k, v)| (self.bytes(*k), self.bytes(*v)))
    }

    /// Leaves: the position of the first entry whose whole key is at or after `key` and at or
    /// after the node's low bound. A key below the low bound is not the node's, whatever its
    /// fragments say: a damaged page can carry a link from one of its versions with another
    /// prefix, whose key decodes below the range (Sled's iterator starts at the bound too).
    pub fn position_of(&self, key: &[u8]) -> usize {
        match self.suffix(key.max(self.lo())) {
            Some(suffix) => self.find(suffix).unwrap_or_else(|i| i),
            // Above the low bound without its prefix: above every key with that prefix.
            None => self.keys.len(),
        }
    }

    /// Leaves: the value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let i = self.find(self.suffix(key)?).ok()?;
        Some(self.bytes(self.values[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::SecretBuf;

    fn ivec(out: &mut Vec<u8>, bytes: &[u8]) {
        out.push(bytes.len() as u8); // lengths below 241 are one byte
        out.extend_from_slice(bytes);
    }

    /// A leaf of keys `lo[..prefix_len] ‖ suffix`, as Sled serializes a node.
    fn leaf(lo: &[u8], hi: &[u8], prefix_len: u8, suffixes: &[&[u8]]) -> MessageBody {
        let mut b = vec![0, 0, 0, prefix_len]; // no sibling, no merging child, not merging
        ivec(&mut b, lo);
        ivec(&mut b, hi);
        b.extend_from_slice(&[0, suffixes.len() as u8]);
        for s in suffixes {
            ivec(&mut b, s);
        }
        for _ in suffixes {
            ivec(&mut b, b"v");
        }
        MessageBody::whole(SecretBuf::from_slice(&b))
    }

    fn set(suffix: &[u8]) -> MessageBody {
        let mut b = vec![0];
        ivec(&mut b, suffix);
        ivec(&mut b, b"w");
        MessageBody::whole(SecretBuf::from_slice(&b))
    }

    #[test]
    fn entries_below_the_low_bound_are_not_the_leafs() {
        // Found on a damaged image: a fragment whose key decodes below the leaf's range.
        let mut node = Node::decode(leaf(b"k00764", b"k008", 3, &[b"767", b"769"])).unwrap();
        node.apply(set(b"70")).unwrap();
        assert_eq!(
            node.len(),
            3,
            "the stray key is stored, in key order, first"
        );
        assert_eq!(node.position_of(b""), 1);
        assert_eq!(node.position_of(b"k00764"), 1);
        assert_eq!(node.position_of(b"k00768"), 2);
        assert_eq!(node.position_of(b"k009"), 3);
    }
}
