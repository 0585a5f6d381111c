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
    /// How byte arrays are read: the best this CPU has (the tests also try the others).
    blocks: by_blocks::Blocks,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, at: 0, blocks: by_blocks::available() }
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
        // The store's strings (IDs, base64 keys) are ASCII: checked in the same loop, they need no
        // separate UTF-8 validation.
        let mut high_bits = 0u8;
        loop {
            let b = *self.bytes.get(self.at)?;
            match b {
                b'"' => break,
                b'\\' => return None,
                0..=0x1f => return None,
                _ => {
                    high_bits |= b;
                    self.at += 1;
                }
            }
        }
        let raw = &self.bytes[start..self.at];
        let text = if high_bits < 0x80 {
            // SAFETY: every byte is below 0x80, and ASCII is valid UTF-8.
            unsafe { std::str::from_utf8_unchecked(raw) }
        } else {
            std::str::from_utf8(raw).ok()?
        };
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
        let start = out.len();
        // Room for as many elements as the rest of the text can hold (each takes at least two
        // bytes, the last one and the bracket excepted), plus what a block may write past the end.
        let rest = self.bytes.len().saturating_sub(self.at);
        out.resize(start + rest / 2 + 1 + by_blocks::SLACK, 0);
        let written = self.byte_array(&mut out[start..]);
        out.truncate(start + written.unwrap_or(0));
        written.map(|_| ())
    }

    /// `[n, …]` of exactly `out.len()` integers 0–255, into `out`.
    pub(crate) fn byte_array_exact(&mut self, out: &mut [u8]) -> Option<()> {
        (self.byte_array(out)? == out.len()).then_some(())
    }

    /// `[n, n, …]` of integers 0–255, written into `out` in order; how many, or `None` for
    /// anything else or more elements than `out` holds. The compact form serde_json writes
    /// (`[12,0,255]`) is read sixty-four or sixteen bytes of text at a time where the CPU allows
    /// ([`by_blocks`]), then one element from a four-byte window; anything else (whitespace, say)
    /// goes element by element through [`Cursor::byte`].
    #[inline(always)]
    fn byte_array(&mut self, out: &mut [u8]) -> Option<usize> {
        self.eat(b'[')?;
        self.ws();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(0);
        }
        let bytes = self.bytes;
        let blocks = self.blocks;
        let mut n = 0;
        loop {
            // Blocks of text while they are digits and commas (all but the last few elements).
            (self.at, n) = by_blocks::decode_run(blocks, bytes, self.at, out, n);
            // Compact elements one at a time: digits, then ',' or ']'.
            while let Some(window) = bytes.get(self.at..self.at + 4) {
                let window: [u8; 4] = window.try_into().expect("four bytes");
                let Some((value, digits, next)) = compact_byte(window) else {
                    break;
                };
                match next {
                    b',' => {
                        *out.get_mut(n)? = value;
                        n += 1;
                        self.at += digits + 1;
                    }
                    b']' => {
                        *out.get_mut(n)? = value;
                        self.at += digits + 1;
                        return Some(n + 1);
                    }
                    _ => break,
                }
            }
            // Anything else, one element at a time.
            *out.get_mut(n)? = self.byte()?;
            n += 1;
            self.ws();
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(n);
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
/// sixty-four bytes of text at a time with AVX-512, sixteen with SSSE3. Where an element's digits end does not decide
/// where the next block starts (a reader that finds one element after the other waits for each
/// element's length before it can look at the next): every block is read whole, each comma in it
/// ends an element whose value is computed from the (up to four) bytes before the comma, and the
/// values are packed together by the mask of commas. Only the compact form
/// is taken (`12,0,255,3,`: one to three digits, no leading zero, at most 255, each followed by a
/// comma); a block holding anything else (the closing bracket, whitespace, a damaged value) is
/// left, from the start of its first element, to the one-at-a-time path, which judges it.
mod by_blocks {
    /// How far past the last value a block may write: a block of sixty-four packs its values
    /// into one 64-byte write (a block of sixteen, into two of eight bytes).
    pub(super) const SLACK: usize = 64;

    /// What this CPU can read blocks with.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Blocks {
        /// One element at a time (not x86-64, or no SSSE3).
        None,
        /// Sixteen bytes of text a block, the values packed by a shuffle from a table.
        Ssse3,
        /// Sixty-four bytes a block, the values packed by VPCOMPRESSB (AVX-512 VBMI2: Ice Lake,
        /// Zen 4 and later), then sixteen at a time for the rest.
        Avx512,
    }

    /// Checked once, then cached by std.
    #[inline]
    pub(super) fn available() -> Blocks {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512vbmi2") && std::is_x86_feature_detected!("popcnt") {
                return Blocks::Avx512;
            }
            if std::is_x86_feature_detected!("ssse3") && std::is_x86_feature_detected!("popcnt") {
                return Blocks::Ssse3;
            }
        }
        Blocks::None
    }

    /// Reads blocks from `at` (the start of an element, after `[` or a comma) while `out` has
    /// room for a block past `n` values: returns where the first element it did not take starts,
    /// and how many values `out` holds then. `blocks` is what [`available`] said, or less.
    #[inline]
    pub(super) fn decode_run(blocks: Blocks, bytes: &[u8], at: usize, out: &mut [u8], n: usize) -> (usize, usize) {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: `available()` said the CPU has the features each path is compiled for.
            match blocks {
                Blocks::None => (at, n),
                Blocks::Ssse3 => unsafe { x86::decode_run(bytes, at, out, n) },
                Blocks::Avx512 => unsafe {
                    let (at, n) = x86::decode_run_avx512(bytes, at, out, n);
                    x86::decode_run(bytes, at, out, n)
                },
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (blocks, bytes, out);
            (at, n)
        }
    }

    /// For each mask of the commas among eight bytes, the positions of those commas, in order
    /// (then 0x80, for which a shuffle writes 0).
    #[cfg(any(target_arch = "x86_64", test))]
    pub(super) const PACK: [[u8; 8]; 256] = {
        let mut table = [[0x80u8; 8]; 256];
        let mut mask = 0;
        while mask < 256 {
            let (mut bit, mut k) = (0, 0);
            while bit < 8 {
                if mask & (1 << bit) != 0 {
                    table[mask][k] = bit as u8;
                    k += 1;
                }
                bit += 1;
            }
            mask += 1;
        }
        table
    };

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::PACK;
        use std::arch::x86_64::*;

        /// What a block of sixteen may write past its values: two writes of eight bytes.
        const SLACK_16: usize = 16;

        #[target_feature(enable = "ssse3,popcnt")]
        pub(super) unsafe fn decode_run(bytes: &[u8], mut at: usize, out: &mut [u8], mut n: usize) -> (usize, usize) {
            // The block's own bytes start at `p`; the four before it are read for the elements
            // that end at its first commas: `at` ≥ 4 keeps them inside `bytes`.
            let mut p = at;
            if p < 4 {
                return (at, n);
            }
            while p + 16 <= bytes.len() && n + SLACK_16 <= out.len() {
                // SAFETY: p - 4 ≥ 0 and p + 16 ≤ len: every load is inside `bytes`.
                let load = |offset: usize| unsafe { _mm_loadu_si128(bytes.as_ptr().add(p - offset).cast()) };
                let Some((values, commas)) = block(load(0), load(1), load(2), load(3), load(4)) else {
                    break;
                };
                let low = commas & 0xff;
                let high = commas >> 8;
                // The high half's positions are bytes 8–15 of the block: 8 more (0x80 stays ≥ 0x80).
                let pack = _mm_set_epi64x(
                    u64::from_le_bytes(PACK[high as usize]).wrapping_add(0x0808_0808_0808_0808) as i64,
                    u64::from_le_bytes(PACK[low as usize]) as i64,
                );
                let packed = _mm_shuffle_epi8(values, pack);
                let (in_low, in_high) = (low.count_ones() as usize, high.count_ones() as usize);
                // SAFETY: n + 16 ≤ out.len(): both eight-byte writes are inside `out`.
                unsafe {
                    _mm_storel_epi64(out.as_mut_ptr().add(n).cast(), packed);
                    _mm_storel_epi64(out.as_mut_ptr().add(n + in_low).cast(), _mm_srli_si128::<8>(packed));
                }
                n += in_low + in_high;
                if commas != 0 {
                    // The next element starts after the block's last comma.
                    let last_comma = 31 - commas.leading_zeros() as usize;
                    at = p + last_comma + 1;
                }
                p += 16;
            }
            (at, n)
        }

        /// [`decode_run`] sixty-four bytes at a time, with the same checks on masks instead of
        /// vectors; the values at the commas are packed by one VPCOMPRESSB (in a register: its
        /// form that writes to memory is slow on Zen 4) and stored whole.
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,popcnt")]
        pub(super) unsafe fn decode_run_avx512(bytes: &[u8], mut at: usize, out: &mut [u8], mut n: usize) -> (usize, usize) {
            let mut p = at;
            if p < 4 {
                return (at, n);
            }
            let zero_char = _mm512_set1_epi8(b'0' as i8);
            let nine = _mm512_set1_epi8(9);
            let zero = _mm512_setzero_si512();
            // pshufb looks up within each 16-byte lane: the tables are repeated in all four.
            let tens_table = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 0, 0, 0, 0, 0, 0));
            let hundreds_table = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 100, -56, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0));
            while p + 64 <= bytes.len() && n + 64 <= out.len() {
                // SAFETY: p - 4 ≥ 0 and p + 64 ≤ len: every load is inside `bytes`.
                let load = |offset: usize| unsafe { _mm512_loadu_si512(bytes.as_ptr().add(p - offset).cast()) };
                let (b0, d1, d2, d3, b4) = (load(0), _mm512_sub_epi8(load(1), zero_char), _mm512_sub_epi8(load(2), zero_char), _mm512_sub_epi8(load(3), zero_char), load(4));
                let is_digit = |d: __m512i| _mm512_cmple_epu8_mask(d, nine);
                let (is1, is2, is3) = (is_digit(d1), is_digit(d2), is_digit(d3));
                let is4 = is_digit(_mm512_sub_epi8(b4, zero_char));
                let comma = _mm512_cmpeq_epi8_mask(b0, _mm512_set1_epi8(b',' as i8));
                if (is_digit(_mm512_sub_epi8(b0, zero_char)) | comma) != u64::MAX {
                    break;
                }
                // Before a comma: at least one, two, three, four digits.
                let two = is1 & is2;
                let three = two & is3;
                let four = three & is4;
                let only_two = two & !three;
                let tens = _mm512_shuffle_epi8(tens_table, _mm512_maskz_mov_epi8(two, d2));
                let hundreds = _mm512_shuffle_epi8(hundreds_table, _mm512_maskz_mov_epi8(three, d3));
                let below_hundred = _mm512_add_epi8(d1, tens); // ≤ 99
                let values = _mm512_add_epi8(hundreds, below_hundred);
                // Hundreds above 2, or 2xx above 255.
                let too_big = _mm512_cmpgt_epu8_mask(d3, _mm512_set1_epi8(2))
                    | (_mm512_cmpeq_epi8_mask(hundreds, _mm512_set1_epi8(-56)) & _mm512_cmpgt_epu8_mask(below_hundred, _mm512_set1_epi8(55)));
                let bad = !is1 // no digit before the comma
                    | four
                    | (only_two & _mm512_cmpeq_epi8_mask(d2, zero)) // a leading zero
                    | (three & (_mm512_cmpeq_epi8_mask(d3, zero) | too_big));
                if bad & comma != 0 {
                    break;
                }
                // SAFETY: n + 64 ≤ out.len(): the write is inside `out`.
                unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(n).cast(), _mm512_maskz_compress_epi8(comma, values)) };
                n += comma.count_ones() as usize;
                if comma != 0 {
                    // The next element starts after the block's last comma.
                    at = p + (63 - comma.leading_zeros() as usize) + 1;
                }
                p += 64;
            }
            (at, n)
        }

        /// The values of the elements that end at each comma of a block of sixteen bytes (`b0`),
        /// given the same bytes one to four positions earlier, and the mask of those commas;
        /// `None` unless the block is only digits and commas and every element ending in it is
        /// compact.
        #[target_feature(enable = "ssse3")]
        #[inline]
        fn block(b0: __m128i, b1: __m128i, b2: __m128i, b3: __m128i, b4: __m128i) -> Option<(__m128i, u32)> {
            let zero_char = _mm_set1_epi8(b'0' as i8);
            let nine = _mm_set1_epi8(9);
            // Each byte minus '0', and whether it is a digit (at most 9 as an unsigned byte).
            let digit = |b: __m128i| {
                let d = _mm_sub_epi8(b, zero_char);
                (d, _mm_cmpeq_epi8(_mm_min_epu8(d, nine), d))
            };
            let (_, is0) = digit(b0);
            let (d1, is1) = digit(b1);
            let (d2, is2) = digit(b2);
            let (d3, is3) = digit(b3);
            let (_, is4) = digit(b4);
            let comma = _mm_cmpeq_epi8(b0, _mm_set1_epi8(b',' as i8));
            if _mm_movemask_epi8(_mm_or_si128(is0, comma)) != 0xffff {
                return None;
            }
            // Before a comma: at least one, two, three, four digits.
            let two = _mm_and_si128(is1, is2);
            let three = _mm_and_si128(two, is3);
            let four = _mm_and_si128(three, is4);
            let only_two = _mm_andnot_si128(three, two);
            // 10·tens and 100·hundreds by table (pshufb reads a byte's low four bits); a hundreds
            // digit above 2 is refused below.
            let tens = _mm_shuffle_epi8(_mm_setr_epi8(0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 0, 0, 0, 0, 0, 0), _mm_and_si128(d2, two));
            let hundreds = _mm_shuffle_epi8(_mm_setr_epi8(0, 100, -56, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), _mm_and_si128(d3, three));
            let below_hundred = _mm_add_epi8(d1, tens); // ≤ 99
            let values = _mm_add_epi8(hundreds, below_hundred);
            let zero = _mm_setzero_si128();
            let two_hundred = _mm_set1_epi8(-56); // 200
            let bad = _mm_or_si128(
                _mm_or_si128(
                    // No digit before the comma, or a fourth one.
                    _mm_andnot_si128(is1, _mm_set1_epi8(-1)),
                    four,
                ),
                _mm_or_si128(
                    // A leading zero (of two or of three digits).
                    _mm_or_si128(_mm_and_si128(only_two, _mm_cmpeq_epi8(d2, zero)), _mm_and_si128(three, _mm_cmpeq_epi8(d3, zero))),
                    // Hundreds above 2, or 2xx above 255.
                    _mm_and_si128(
                        three,
                        _mm_or_si128(
                            _mm_xor_si128(_mm_cmpeq_epi8(_mm_min_epu8(d3, _mm_set1_epi8(2)), d3), _mm_set1_epi8(-1)),
                            _mm_and_si128(_mm_cmpeq_epi8(hundreds, two_hundred), _mm_cmpeq_epi8(_mm_max_epu8(below_hundred, _mm_set1_epi8(56)), below_hundred)),
                        ),
                    ),
                ),
            );
            if _mm_movemask_epi8(_mm_and_si128(bad, comma)) != 0 {
                return None;
            }
            Some((values, _mm_movemask_epi8(comma) as u32))
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

    /// Every way of reading blocks this CPU has, the one-at-a-time path first.
    fn all_blocks() -> Vec<by_blocks::Blocks> {
        use by_blocks::Blocks;
        let best = by_blocks::available();
        [Blocks::None, Blocks::Ssse3, Blocks::Avx512].into_iter().filter(|b| *b == Blocks::None || *b == best || (*b == Blocks::Ssse3 && best == Blocks::Avx512)).collect()
    }

    /// Arrays long enough for the block paths, compact and then mutated byte by byte (a digit, a
    /// comma, a bracket, a space, a sign or a dot put in): whatever the fast reader accepts,
    /// serde_json reads the same; every compact array is accepted; and every way of reading
    /// blocks this CPU has gives the same answer as the one-at-a-time path.
    #[test]
    fn long_arrays_agree_with_serde_json() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let blocks = all_blocks();
        // After a field name, as in the envelope (blocks may then start at the first element),
        // or alone; appended to what the buffer holds, or into a slice of the expected length.
        let parse_with = |level, s: &[u8], prefixed: bool| {
            let text = if prefixed { [&b"{\"ciphertext\":"[..], s].concat() } else { s.to_vec() };
            let mut out = vec![7u8];
            let mut c = Cursor::new(&text);
            c.blocks = level;
            c.at = if prefixed { 14 } else { 0 };
            c.byte_array_into(&mut out).and_then(|_| c.at_end().then_some(out[1..].to_vec()))
        };
        let exact_with = |level, s: &[u8], len: usize| {
            let mut out = vec![0u8; len];
            let mut c = Cursor::new(s);
            c.blocks = level;
            c.byte_array_exact(&mut out).and_then(|_| c.at_end().then_some(out))
        };
        // The best path's answer, once every path has been checked to give it.
        let parse = |s: &[u8], prefixed: bool| {
            let answers: Vec<_> = blocks.iter().map(|&b| parse_with(b, s, prefixed)).collect();
            assert!(answers.windows(2).all(|w| w[0] == w[1]), "{blocks:?} disagree on {}", String::from_utf8_lossy(s));
            answers.into_iter().last().unwrap()
        };
        let exact = |s: &[u8], len: usize| {
            let answers: Vec<_> = blocks.iter().map(|&b| exact_with(b, s, len)).collect();
            assert!(answers.windows(2).all(|w| w[0] == w[1]), "{blocks:?} disagree on {}", String::from_utf8_lossy(s));
            answers.into_iter().last().unwrap()
        };
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..20_000 {
            let prefixed = round % 4 != 0;
            // Ciphertext lengths too, now and then.
            let len = (next() % [64, 64, 300, 2000][round % 4]) as usize;
            // Small values often, so that one- and two-digit elements come in runs too.
            let values: Vec<u8> = (0..len).map(|_| (next() % [256, 10, 100][round % 3]) as u8).collect();
            let mut text = serde_json::to_vec(&values).unwrap();
            assert_eq!(parse(&text, prefixed), Some(values.clone()), "{}", String::from_utf8_lossy(&text));
            assert_eq!(exact(&text, len), Some(values.clone()), "{}", String::from_utf8_lossy(&text));
            assert_eq!(exact(&text, len + 1), None);
            for _ in 0..(next() % 3) {
                let at = (next() as usize) % text.len();
                let put = b"0123456789,] -.e0009"[(next() % 20) as usize];
                if next() % 2 == 0 {
                    text[at] = put;
                } else {
                    text.insert(at, put);
                }
            }
            let ours = parse(&text, prefixed);
            let theirs = serde_json::from_slice::<Vec<u8>>(&text).ok();
            if let Some(values) = &ours {
                assert_eq!(exact(&text, values.len()).as_ref(), Some(values));
            }
            if ours.is_some() {
                assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(&text));
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        assert!(accepted > 5_000 && refused > 5_000, "{accepted} accepted, {refused} refused");
    }

    /// The packing table lists the set bits of each mask in order.
    #[test]
    fn packing_table_lists_the_commas_in_order() {
        let z = 0x80;
        assert_eq!(by_blocks::PACK[0], [z; 8]);
        assert_eq!(by_blocks::PACK[0b1010_0110], [1, 2, 5, 7, z, z, z, z]);
        assert_eq!(by_blocks::PACK[0xff], [0, 1, 2, 3, 4, 5, 6, 7]);
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
        // Past the ASCII shortcut: valid UTF-8 is taken, a broken sequence after it is not.
        assert_eq!(Cursor::new("\"!räum:ß.org\"".as_bytes()).string(), Some("!räum:ß.org"));
        assert_eq!(Cursor::new(b"\"ab\xc3\"").string(), None);
        assert_eq!(Cursor::new(b"\"ab\xed\xa0\x80\"").string(), None);
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
