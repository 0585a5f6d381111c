//! Sled 0.34's byte encodings (its `serialization.rs`), decoded with every length checked: Sled
//! itself indexes past the end of a buffer or panics on bytes that pass a CRC but make no sense;
//! here they are a [`Malformed`] error naming what was being read.

use std::fmt;

/// Bytes that do not decode as what Sled would have written there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed {}", self.0)
    }
}

pub(crate) type Decoded<T> = Result<T, Malformed>;

/// A cursor over a buffer, consuming Sled's encodings front to back.
#[derive(Clone, Copy)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    /// Offset of `buf[0]` in the buffer the cursor started on (slices are returned as ranges).
    at: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, at: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.at
    }

    fn take(&mut self, n: usize, what: &'static str) -> Decoded<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Malformed(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        self.at += n;
        Ok(head)
    }

    pub fn u8(&mut self, what: &'static str) -> Decoded<u8> {
        Ok(self.take(1, what)?[0])
    }

    pub fn bool(&mut self, what: &'static str) -> Decoded<bool> {
        Ok(self.u8(what)? != 0)
    }

    pub fn u32_le(&mut self, what: &'static str) -> Decoded<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    pub fn i64_le(&mut self, what: &'static str) -> Decoded<i64> {
        Ok(i64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    /// Sled's variable-length unsigned integer: one byte up to 240, two up to 2287, three up to
    /// 67823, then a marker byte (250..=255) and 3 to 8 little-endian bytes.
    pub fn varint(&mut self, what: &'static str) -> Decoded<u64> {
        let first = self.u8(what)?;
        Ok(match first {
            0..=240 => u64::from(first),
            241..=248 => {
                let second = self.u8(what)?;
                240 + 256 * (u64::from(first) - 241) + u64::from(second)
            }
            249 => {
                let b = self.take(2, what)?;
                2288 + 256 * u64::from(b[0]) + u64::from(b[1])
            }
            marker => {
                let n = usize::from(marker) - 247;
                let mut le = [0u8; 8];
                le[..n].copy_from_slice(self.take(n, what)?);
                u64::from_le_bytes(le)
            }
        })
    }

    /// Sled's `Option<u64>`: the value plus one, zero for none.
    pub fn varint_option(&mut self, what: &'static str) -> Decoded<Option<u64>> {
        Ok(self.varint(what)?.checked_sub(1))
    }

    /// Sled's `Option<i64>` (a snapshot's stable LSN): eight bytes, zero for none, non-negative
    /// values shifted up by one.
    pub fn i64_option(&mut self, what: &'static str) -> Decoded<Option<i64>> {
        let v = self.i64_le(what)?;
        Ok(match v {
            0 => None,
            v if v < 0 => Some(v),
            v => Some(v - 1),
        })
    }

    /// Sled's `Option<NonZeroU64>` (a node's right sibling): the value itself, zero for none.
    pub fn nonzero_option(&mut self, what: &'static str) -> Decoded<Option<u64>> {
        let v = self.varint(what)?;
        Ok((v != 0).then_some(v))
    }

    /// A length-prefixed byte string (Sled's `IVec`), returned as its range in the original buffer.
    pub fn bytes(&mut self, what: &'static str) -> Decoded<std::ops::Range<usize>> {
        let len = self.varint(what)?;
        let len = usize::try_from(len).map_err(|_| Malformed(what))?;
        let start = self.at;
        self.take(len, what)?;
        Ok(start..start + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoder, as Sled's `Serialize for u64` lays the bytes out, to check the decoder.
    fn encode(v: u64) -> Vec<u8> {
        if v <= 240 {
            vec![v as u8]
        } else if v <= 2287 {
            vec![((v - 240) / 256 + 241) as u8, ((v - 240) % 256) as u8]
        } else if v <= 67823 {
            vec![249, ((v - 2288) / 256) as u8, ((v - 2288) % 256) as u8]
        } else {
            let n = (8 - v.leading_zeros() as usize / 8).max(3);
            let mut out = vec![(247 + n) as u8];
            out.extend_from_slice(&v.to_le_bytes()[..n]);
            out
        }
    }

    #[test]
    fn varints_round_trip_at_every_width_boundary() {
        for v in [
            0u64,
            1,
            240,
            241,
            2287,
            2288,
            67823,
            67824,
            0xFF_FFFF,
            0x100_0000,
            0xFFFF_FFFF,
            0x1_0000_0000,
            0xFF_FFFF_FFFF,
            0xFFFF_FFFF_FFFF,
            0xFF_FFFF_FFFF_FFFF,
            u64::MAX,
        ] {
            let bytes = encode(v);
            let mut c = Cursor::new(&bytes);
            assert_eq!(c.varint("v"), Ok(v), "{v}");
            assert!(c.is_empty(), "{v}: {} bytes left", c.remaining());
        }
    }

    #[test]
    fn short_input_is_malformed_not_a_panic() {
        assert_eq!(Cursor::new(&[249, 1]).varint("x"), Err(Malformed("x")));
        assert_eq!(Cursor::new(&[255, 1, 2]).varint("x"), Err(Malformed("x")));
        assert_eq!(Cursor::new(&[5, 1, 2]).bytes("key"), Err(Malformed("key")));
        assert_eq!(Cursor::new(&[1, 2, 3]).i64_le("lsn"), Err(Malformed("lsn")));
    }

    #[test]
    fn byte_strings_come_back_as_ranges_of_the_buffer() {
        let buf = [2, b'h', b'i', 0, 3, b'a', b'b', b'c'];
        let mut c = Cursor::new(&buf);
        assert_eq!(c.bytes("a"), Ok(1..3));
        assert_eq!(c.bytes("b"), Ok(4..4));
        assert_eq!(c.bytes("c"), Ok(5..8));
        assert!(c.is_empty());
    }

    #[test]
    fn options_follow_sleds_shifts() {
        assert_eq!(Cursor::new(&[0]).varint_option("o"), Ok(None));
        assert_eq!(Cursor::new(&[8]).varint_option("o"), Ok(Some(7)));
        assert_eq!(Cursor::new(&0i64.to_le_bytes()).i64_option("o"), Ok(None));
        assert_eq!(
            Cursor::new(&1i64.to_le_bytes()).i64_option("o"),
            Ok(Some(0))
        );
        assert_eq!(
            Cursor::new(&(-5i64).to_le_bytes()).i64_option("o"),
            Ok(Some(-5))
        );
        assert_eq!(Cursor::new(&[0]).nonzero_option("o"), Ok(None));
        assert_eq!(Cursor::new(&[9]).nonzero_option("o"), Ok(Some(9)));
    }
}
