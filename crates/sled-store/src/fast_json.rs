//! A strict, allocation-light JSON reader for the two shapes every session value has: the
//! encrypted envelope `{"version":1,"ciphertext":[ints…],"nonce":[24 ints]}` and the session
//! pickle. It accepts a *subset* of what serde_json accepts (no escapes in keys or in the strings
//! it returns, no `null` for known fields, no duplicate known fields, plain unsigned integers) and
//! returns `None` for anything else, so that the caller falls back to the serde path, which stays
//! the single authority on damage and its classification. Whatever it accepts, serde_json accepts
//! with the same result (checked against it by the tests in `room_key`).

/// Nesting bound for skipped values (serde_json's own recursion limit is 128).
const MAX_DEPTH: u32 = 100;

pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, at: 0 }
    }

    #[inline]
    pub(crate) fn ws(&mut self) {
        while let Some(&b) = self.bytes.get(self.at) {
            if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                self.at += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Skips whitespace, then consumes `byte` or fails.
    #[inline]
    pub(crate) fn eat(&mut self, byte: u8) -> Option<()> {
        self.ws();
        if self.peek()? == byte {
            self.at += 1;
            Some(())
        } else {
            None
        }
    }

    /// Only whitespace is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.ws();
        self.at == self.bytes.len()
    }

    /// A string without escapes and without control characters, valid UTF-8, borrowed.
    pub(crate) fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            let b = *self.bytes.get(self.at)?;
            match b {
                b'"' => break,
                b'\\' => return None,
                0..=0x1f => return None,
                _ => self.at += 1,
            }
        }
        let text = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
        self.at += 1;
        Some(text)
    }

    /// An unsigned JSON integer (no sign, fraction or exponent; no leading zero) up to `max`.
    #[inline]
    pub(crate) fn uint(&mut self, max: u64) -> Option<u64> {
        self.ws();
        let first = *self.bytes.get(self.at)?;
        if !first.is_ascii_digit() {
            return None;
        }
        let mut value = u64::from(first - b'0');
        self.at += 1;
        if first == b'0' {
            // JSON forbids leading zeros; "0" itself is followed by a non-digit.
            if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return None;
            }
        } else {
            while let Some(&b) = self.bytes.get(self.at) {
                if !b.is_ascii_digit() {
                    break;
                }
                value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
                if value > max {
                    return None;
                }
                self.at += 1;
            }
        }
        if value > max || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(value)
    }

    /// `[n, n, …]` of integers 0–255, appended to `out`.
    pub(crate) fn byte_array_into(&mut self, out: &mut Vec<u8>) -> Option<()> {
        self.byte_array(|values| {
            out.extend_from_slice(values);
            Some(())
        })
    }

    /// `[n, …]` of exactly `out.len()` integers 0–255, into `out`.
    pub(crate) fn byte_array_exact(&mut self, out: &mut [u8]) -> Option<()> {
        let mut n = 0;
        self.byte_array(|values| {
            out.get_mut(n..n + values.len())?.copy_from_slice(values);
            n += values.len();
            Some(())
        })?;
        (n == out.len()).then_some(())
    }

    /// `[n, n, …]` of integers 0–255, handed to `sink` in order (one to four at a time). The
    /// compact form serde_json writes (`[12,0,255]`) is read four elements at a time where the CPU
    /// allows ([`four_at_once`]), then one element from a four-byte window; anything else
    /// (whitespace, say) goes element by element through [`Cursor::byte`].
    #[inline(always)]
    fn byte_array(&mut self, mut sink: impl FnMut(&[u8]) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        self.ws();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(());
        }
        let bytes = self.bytes;
        let simd = four_at_once::available();
        loop {
            // Four compact elements at a time while sixteen bytes are left (all but the last few).
            if simd {
                self.at = four_at_once::decode_run(bytes, self.at, &mut sink)?;
            }
            // Compact elements one at a time: digits, then ',' or ']'.
            while let Some(window) = bytes.get(self.at..self.at + 4) {
                let window: [u8; 4] = window.try_into().expect("four bytes");
                let Some((value, digits, next)) = compact_byte(window) else {
                    break;
                };
                match next {
                    b',' => {
                        sink(&[value])?;
                        self.at += digits + 1;
                    }
                    b']' => {
                        sink(&[value])?;
                        self.at += digits + 1;
                        return Some(());
                    }
                    _ => break,
                }
            }
            // Anything else, one element at a time.
            sink(&[self.byte()?])?;
            self.ws();
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// One integer 0–255, when it is not in the compact form.
    #[inline]
    fn byte(&mut self) -> Option<u8> {
        self.ws();
        let b = self.bytes;
        let i = self.at;
        let d0 = b.get(i)?.wrapping_sub(b'0');
        if d0 > 9 {
            return None;
        }
        let d1 = b.get(i + 1).map_or(10, |c| c.wrapping_sub(b'0'));
        if d1 > 9 || d0 == 0 {
            self.at = i + 1;
            return self.after_number(d0, d1);
        }
        let d2 = b.get(i + 2).map_or(10, |c| c.wrapping_sub(b'0'));
        if d2 > 9 {
            self.at = i + 2;
            return self.after_number(d0 * 10 + d1, d2);
        }
        let value = u16::from(d0) * 100 + u16::from(d1) * 10 + u16::from(d2);
        let d3 = b.get(i + 3).map_or(10, |c| c.wrapping_sub(b'0'));
        if value > 255 {
            return None;
        }
        self.at = i + 3;
        self.after_number(value as u8, d3)
    }

    /// `next` is the byte after the digits minus `b'0'` (10 at the end of input): another digit
    /// (a leading zero or a number too long), a fraction or an exponent is for serde to judge.
    #[inline]
    fn after_number(&mut self, value: u8, next: u8) -> Option<u8> {
        const DOT: u8 = b'.'.wrapping_sub(b'0');
        const LOWER_E: u8 = b'e'.wrapping_sub(b'0');
        const UPPER_E: u8 = b'E'.wrapping_sub(b'0');
        if next <= 9 || next == DOT || next == LOWER_E || next == UPPER_E {
            return None;
        }
        Some(value)
    }

    /// Skips one value of any type, checking its syntax as strictly as serde_json would.
    pub(crate) fn skip_value(&mut self) -> Option<()> {
        self.skip_nested(0)
    }

    fn skip_nested(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' => self.sequence(b'{', b'}', |c| {
                c.string()?;
                c.eat(b':')?;
                c.skip_nested(depth + 1)
            }),
            b'[' => self.sequence(b'[', b']', |c| c.skip_nested(depth + 1)),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.uint(u64::MAX).map(|_| ()),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.bytes.get(self.at..self.at + word.len())? == word {
            self.at += word.len();
            Some(())
        } else {
            None
        }
    }

    pub(crate) fn bool(&mut self) -> Option<bool> {
        self.ws();
        match self.peek()? {
            b't' => self.literal(b"true").map(|_| true),
            b'f' => self.literal(b"false").map(|_| false),
            _ => None,
        }
    }

    /// Walks an object: `field` is called with each key and must consume its value.
    pub(crate) fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.sequence(b'{', b'}', |c| {
            let key = c.string()?;
            c.eat(b':')?;
            field(c, key)
        })
    }

    /// `[ "…", … ]` of plain strings.
    pub(crate) fn string_array(&mut self) -> Option<Vec<String>> {
        let mut out = Vec::new();
        self.sequence(b'[', b']', |c| {
            out.push(c.string()?.to_owned());
            Some(())
        })?;
        Some(out)
    }

    /// `open item , item … close` (or `open close`): every list and object of JSON. `item` consumes
    /// one element.
    fn sequence(&mut self, open: u8, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(open)?;
        self.ws();
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            item(self)?;
            self.ws();
            match self.peek()? {
                b',' => self.at += 1,
                b if b == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// An integer 0–255 at the start of `w`, its digit count and the byte after it, found without
/// data-dependent branches (the digit counts of ciphertext bytes are random, so branching on them
/// mispredicts about once per element); `None` for anything else (a leading zero, a fourth digit,
/// a value above 255, no digit at all), which the caller leaves to the general path.
#[inline(always)]
fn compact_byte(w: [u8; 4]) -> Option<(u8, usize, u8)> {
    // Each byte minus '0' (for a digit: 0–9), and the high bit of every byte that is not a digit.
    let t = u32::from_le_bytes(w) ^ 0x3030_3030;
    let not_digit = (((t & 0x7f7f_7f7f) + 0x7676_7676) | t) & 0x8080_8080;
    let n = (not_digit.trailing_zeros() / 8) as usize; // 4 when all four are digits
    if n == 0 || n == 4 {
        return None;
    }
    let digits = t & (u32::MAX >> (32 - 8 * n));
    if n > 1 && digits & 0xff == 0 {
        return None; // a leading zero
    }
    // Right-align the digits in the low three bytes: [d0 d1 d2], [0 d0 d1] or [0 0 d0].
    let x = digits << (8 * (3 - n));
    let value = (x & 0xff) * 100 + ((x >> 8) & 0xff) * 10 + ((x >> 16) & 0xff);
    let value = u8::try_from(value).ok()?;
    Some((value, n, w[n]))
}

/// Sets a field once: a second occurrence is for serde to judge ("duplicate field").
#[inline]
pub(crate) fn once<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value?);
    Some(())
}

/// Ciphertexts are arrays of a thousand or more bytes, so most of their elements are read here,
/// four at a time with SSSE3 (the general path reads one element per step, its next position
/// depending on the digits just read). It takes only the compact form (`12,0,255,3,`: one to
/// three digits, no leading zero, at most 255, each followed by a comma) and leaves anything else,
/// the closing bracket included, to the one-at-a-time path, which judges it.
mod four_at_once {
    /// Whether this CPU can run [`decode_run`]'s fast path (checked once, then cached by std).
    #[inline]
    pub(super) fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("ssse3")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Decodes groups of four compact elements from `at` on, each group's values handed to
    /// `sink`; returns where the first group it could not take starts. `None` when `sink` refuses
    /// a group.
    #[inline]
    pub(super) fn decode_run(bytes: &[u8], at: usize, sink: &mut impl FnMut(&[u8]) -> Option<()>) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: only called when `available()` said the CPU has SSSE3.
            unsafe { x86::decode_run(bytes, at, sink) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (bytes, sink);
            Some(at)
        }
    }

    /// Where each of four numbers' digits go, by their lengths: lane `k` (bytes `4k..4k+4`) holds
    /// the hundreds, tens and ones digit of number `k`, and a zero byte (0x80: pshufb writes 0).
    /// Indexed by `(l0-1) + 3(l1-1) + 9(l2-1) + 27(l3-1)`.
    #[cfg(any(target_arch = "x86_64", test))]
    pub(super) const SHUFFLES: [[u8; 16]; 81] = {
        let mut table = [[0x80u8; 16]; 81];
        let mut index = 0;
        while index < 81 {
            let mut start = 0;
            let mut k = 0;
            let mut rest = index;
            while k < 4 {
                let len = rest % 3 + 1;
                rest /= 3;
                // Right-aligned in the lane's first three bytes: the ones digit at byte 2.
                let mut d = 0;
                while d < len {
                    table[index][4 * k + 3 - len + d] = (start + d) as u8;
                    d += 1;
                }
                start += len + 1; // the digits and their comma
                k += 1;
            }
            index += 1;
        }
        table
    };

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::SHUFFLES;
        use std::arch::x86_64::*;

        #[target_feature(enable = "ssse3")]
        pub(super) unsafe fn decode_run(bytes: &[u8], mut at: usize, sink: &mut impl FnMut(&[u8]) -> Option<()>) -> Option<usize> {
            while let Some(block) = bytes.get(at..at + 16) {
                let Some((values, used)) = group(block) else {
                    break;
                };
                sink(&values)?;
                at += used;
            }
            Some(at)
        }

        /// Four compact elements at the start of `block` (16 bytes): their values and the bytes
        /// they take, commas included.
        #[target_feature(enable = "ssse3")]
        #[inline]
        unsafe fn group(block: &[u8]) -> Option<([u8; 4], usize)> {
            debug_assert_eq!(block.len(), 16);
            // SAFETY: `block` has 16 bytes; unaligned loads are allowed.
            let raw = unsafe { _mm_loadu_si128(block.as_ptr().cast()) };
            let digits = _mm_sub_epi8(raw, _mm_set1_epi8(b'0' as i8));
            // A digit is a byte whose value minus '0' is at most 9 (as an unsigned byte).
            let is_digit = _mm_cmpeq_epi8(_mm_min_epu8(digits, _mm_set1_epi8(9)), digits);
            let digit_mask = _mm_movemask_epi8(is_digit) as u32;
            let comma_mask = _mm_movemask_epi8(_mm_cmpeq_epi8(raw, _mm_set1_epi8(b',' as i8))) as u32;
            let zero_mask = _mm_movemask_epi8(_mm_cmpeq_epi8(raw, _mm_set1_epi8(b'0' as i8))) as u32;

            // The four numbers' lengths, from the positions of the non-digits (bit 16: the end).
            let separators = !digit_mask & 0x1_ffff;
            let l0 = separators.trailing_zeros();
            let s1 = separators >> (l0 + 1);
            let l1 = s1.trailing_zeros();
            let s2 = s1 >> (l1 + 1);
            let l2 = s2.trailing_zeros();
            let s3 = s2 >> (l2 + 1);
            let l3 = s3.trailing_zeros();
            if !(1..=3).contains(&l0) || !(1..=3).contains(&l1) || !(1..=3).contains(&l2) || !(1..=3).contains(&l3) {
                return None;
            }
            let used = (l0 + l1 + l2 + l3 + 4) as usize;
            let taken = (1u32 << used) - 1; // used ≤ 16
            // Every non-digit taken is a comma, and no number of two or three digits starts with 0.
            let starts = (digit_mask & !(digit_mask << 1)) & taken; // digits after a non-digit
            let longer = starts & (digit_mask >> 1); // ... followed by another digit
            if (separators & taken) & !comma_mask != 0 || longer & zero_mask != 0 {
                return None;
            }

            let index = (l0 - 1) + 3 * (l1 - 1) + 9 * (l2 - 1) + 27 * (l3 - 1);
            // SAFETY: `index` < 81 and every table row has 16 bytes.
            let shuffle = unsafe { _mm_loadu_si128(SHUFFLES[index as usize].as_ptr().cast()) };
            let lanes = _mm_shuffle_epi8(digits, shuffle);
            // 100·h + 10·t in one 16-bit half of each lane, the ones digit in the other, then summed.
            let weights = _mm_setr_epi8(100, 10, 1, 0, 100, 10, 1, 0, 100, 10, 1, 0, 100, 10, 1, 0);
            let values = _mm_madd_epi16(_mm_maddubs_epi16(lanes, weights), _mm_set1_epi16(1));
            if _mm_movemask_epi8(_mm_cmpgt_epi32(values, _mm_set1_epi32(255))) != 0 {
                return None;
            }
            let bytes = _mm_packus_epi16(_mm_packs_epi32(values, values), _mm_setzero_si128());
            Some(((_mm_cvtsi128_si32(bytes) as u32).to_le_bytes(), used))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_arrays_take_only_plain_bytes() {
        let parse = |s: &str| {
            let mut out = Vec::new();
            let mut c = Cursor::new(s.as_bytes());
            c.byte_array_into(&mut out).and_then(|_| c.at_end().then_some(out))
        };
        let exact = |s: &str| {
            let mut out = [0u8; 3];
            Cursor::new(s.as_bytes()).byte_array_exact(&mut out).map(|_| out)
        };
        assert_eq!(exact("[1,2,3]"), Some([1, 2, 3]));
        assert_eq!(exact("[ 1 , 2 , 3 ]"), Some([1, 2, 3]));
        assert_eq!(exact("[1,2]"), None);
        assert_eq!(exact("[1,2,3,4]"), None);
        assert_eq!(parse("[0, 1,255 ,9]"), Some(vec![0, 1, 255, 9]));
        assert_eq!(parse("[]"), Some(vec![]));
        assert_eq!(parse(" [ 10 ] "), Some(vec![10]));
        assert_eq!(parse("[7]"), Some(vec![7]));
        assert_eq!(parse("[200,0,9,10,255,99,100]"), Some(vec![200, 0, 9, 10, 255, 99, 100]));
        assert_eq!(parse("[1,2 ,3, 4]"), Some(vec![1, 2, 3, 4]));
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(parse(&serde_json::to_string(&all).unwrap()), Some(all));
        for bad in ["[256]", "[01]", "[00]", "[0.5]", "[255e0]", "[12.]", "[1]]x", "[300,1]", "[1,01]", "[1,256]", "[-1]", "[1.0]", "[1e2]", "[1,]", "[,1]", "[1 2]", "[1", "[1000]", "[\"1\"]", "[2555]"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    /// Arrays long enough for the four-at-a-time path, compact and then mutated byte by byte
    /// (a digit, a comma, a bracket, a space, a sign or a dot put in): whatever the fast reader
    /// accepts, serde_json reads the same; every compact array is accepted.
    #[test]
    fn long_arrays_agree_with_serde_json() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let parse = |s: &[u8]| {
            let mut out = Vec::new();
            let mut c = Cursor::new(s);
            c.byte_array_into(&mut out).and_then(|_| c.at_end().then_some(out))
        };
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..20_000 {
            let len = (next() % 64) as usize;
            // Small values often, so that one- and two-digit elements come in runs too.
            let values: Vec<u8> = (0..len).map(|_| (next() % [256, 10, 100][round % 3]) as u8).collect();
            let mut text = serde_json::to_vec(&values).unwrap();
            assert_eq!(parse(&text), Some(values.clone()), "{}", String::from_utf8_lossy(&text));
            for _ in 0..(next() % 3) {
                let at = (next() as usize) % text.len();
                let put = b"0123456789,] -.e0009"[(next() % 20) as usize];
                if next() % 2 == 0 {
                    text[at] = put;
                } else {
                    text.insert(at, put);
                }
            }
            let ours = parse(&text);
            let theirs = serde_json::from_slice::<Vec<u8>>(&text).ok();
            if ours.is_some() {
                assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(&text));
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        assert!(accepted > 5_000 && refused > 5_000, "{accepted} accepted, {refused} refused");
    }

    /// The shuffle table puts each number's digits right-aligned in its lane.
    #[test]
    fn four_at_once_table_aligns_the_digits() {
        // Lengths 3, 1, 2, 3: "123,4,56,789," → lanes [1 2 3 _] [_ _ 4 _] [_ 5 6 _] [7 8 9 _].
        let index = |lengths: [usize; 4]| lengths.iter().rev().fold(0, |i, l| i * 3 + l - 1);
        let row = four_at_once::SHUFFLES[index([3, 1, 2, 3])];
        let z = 0x80;
        assert_eq!(row, [0, 1, 2, z, z, z, 4, z, z, 6, 7, z, 9, 10, 11, z]);
    }

    /// The branch-free reading of a window agrees with the element-by-element one on every window
    /// over digits and the bytes that can follow them.
    #[test]
    fn compact_windows_agree_with_the_general_path() {
        let alphabet = b"0123456789,] .eE-x/:";
        let mut checked = 0;
        for &a in alphabet { for &b in alphabet { for &c in alphabet { for &d in alphabet {
            let w = [a, b, c, d];
            let compact = compact_byte(w).filter(|(_, _, next)| matches!(next, b',' | b']'));
            let mut cursor = Cursor::new(&w);
            let general = cursor.byte().map(|v| (v, cursor.at)).filter(|&(_, at)| at < 4 && matches!(w[at], b',' | b']'));
            // The general path also skips leading whitespace; the compact one leaves that to it.
            if compact.is_some() || w[0] != b' ' {
                assert_eq!(compact.map(|(v, n, _)| (v, n)), general, "{:?}", std::str::from_utf8(&w));
            }
            checked += usize::from(general.is_some());
        }}}}
        assert!(checked > 1000);
    }

    #[test]
    fn strings_and_skips_are_strict() {
        assert_eq!(Cursor::new(br#""a/b+c""#).string(), Some("a/b+c"));
        assert_eq!(Cursor::new(br#""a\"b""#).string(), None);
        assert_eq!(Cursor::new(b"\"a\x01\"").string(), None);
        assert_eq!(Cursor::new(b"\"\xff\"").string(), None);
        for ok in [r#"{"a":[1,{"b":null}],"c":true}"#, "[]", "{}", "false", "0", "123"] {
            let mut c = Cursor::new(ok.as_bytes());
            assert!(c.skip_value().is_some() && c.at_end(), "{ok}");
        }
        for bad in [r#"{"a":}"#, "[1,]", "tru", "nul", "-1", "1.5", "{\"a\" 1}", "01"] {
            let mut c = Cursor::new(bad.as_bytes());
            assert!(c.skip_value().is_none() || !c.at_end(), "{bad}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(Cursor::new(deep.as_bytes()).skip_value().is_none());
    }
}
