//! The log file `db`: fixed-size segments, each starting with a 20-byte header, holding messages
//! (a CRC-checked header and a body) one after another; bodies too large for a segment live in
//! `blobs/<lsn>` with a pointer in the log. Facts from Sled 0.34.7's `pagecache/logger.rs`,
//! `iterator.rs` and `blob_io.rs`.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use zeroize::Zeroizing;

use crate::buffer::{MessageBody, SecretBuf};

use crate::codec::{Cursor, Malformed};

pub type Lsn = i64;
pub type LogOffset = u64;
pub type PageId = u64;

/// A segment's header: CRC (xor 0xFFFFFFFF), LSN and highest stable LSN (each xor i64::MAX).
pub(crate) const SEG_HEADER_LEN: usize = 20;
/// Messages never start within this many bytes of a segment's end.
pub(crate) const MAX_MSG_HEADER_LEN: usize = 32;
/// Sled reads this much to decode a message header (headers are varint-sized).
const HEADER_PROBE: usize = 128;

pub(crate) const META_PID: PageId = 0;
pub(crate) const COUNTER_PID: PageId = 1;
/// Sled's pids fit in 37 bits on 64-bit targets; anything larger is not a page of this store.
pub(crate) const MAX_PID: PageId = (1 << 37) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageKind {
    Corrupted,
    Canceled,
    Cap,
    BatchManifest,
    Free,
    Counter,
    InlineMeta,
    BlobMeta,
    InlineNode,
    BlobNode,
    InlineLink,
    BlobLink,
}

impl MessageKind {
    pub fn from_byte(byte: u8) -> Self {
        use MessageKind::*;
        match byte {
            1 => Canceled,
            2 => Cap,
            3 => BatchManifest,
            4 => Free,
            5 => Counter,
            6 => InlineMeta,
            7 => BlobMeta,
            8 => InlineNode,
            9 => BlobNode,
            10 => InlineLink,
            11 => BlobLink,
            _ => Corrupted,
        }
    }

    fn is_blob(self) -> bool {
        matches!(
            self,
            MessageKind::BlobMeta | MessageKind::BlobNode | MessageKind::BlobLink
        )
    }

    /// What the message does to its page, as recovery applies it.
    pub fn page_effect(self) -> Option<PageEffect> {
        use MessageKind::*;
        match self {
            Free => Some(PageEffect::Free),
            Counter | InlineMeta | BlobMeta | InlineNode | BlobNode => Some(PageEffect::Replace),
            InlineLink | BlobLink => Some(PageEffect::Link),
            Corrupted | Canceled | Cap | BatchManifest => None,
        }
    }

    /// What the body decodes as, Inline and Blob alike.
    pub fn body(self) -> Option<Body> {
        use MessageKind::*;
        match self {
            InlineMeta | BlobMeta => Some(Body::Meta),
            InlineNode | BlobNode => Some(Body::Node),
            InlineLink | BlobLink => Some(Body::Link),
            Counter => Some(Body::Counter),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageEffect {
    /// A whole new version of the page (node, meta, counter): earlier fragments no longer count.
    Replace,
    /// One more fragment on top of the page's current version.
    Link,
    Free,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    Meta,
    Node,
    Link,
    Counter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub lsn: Lsn,
    pub max_stable_lsn: Lsn,
    pub ok: bool,
}

impl SegmentHeader {
    pub fn parse(buf: &[u8; SEG_HEADER_LEN]) -> Self {
        let stored_crc = u32::from_le_bytes(buf[0..4].try_into().unwrap()) ^ 0xFFFF_FFFF;
        let lsn = i64::from_le_bytes(buf[4..12].try_into().unwrap()) ^ i64::MAX;
        let max_stable_lsn = i64::from_le_bytes(buf[12..20].try_into().unwrap()) ^ i64::MAX;
        SegmentHeader {
            lsn,
            max_stable_lsn,
            ok: crc32fast::hash(&buf[4..20]) == stored_crc,
        }
    }

    pub fn read(file: &File, offset: LogOffset) -> std::io::Result<Self> {
        let mut buf = [0u8; SEG_HEADER_LEN];
        file.read_exact_at(&mut buf, offset)?;
        Ok(SegmentHeader::parse(&buf))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageHeader {
    pub crc32: u32,
    pub kind: MessageKind,
    pub len: u64,
    pub segment_number: u64,
    pub pid: PageId,
}

impl MessageHeader {
    /// Decodes a header from the start of `probe`; returns it and its encoded length.
    fn parse(probe: &[u8]) -> Result<(Self, usize), Malformed> {
        let mut c = Cursor::new(probe);
        let header = MessageHeader {
            crc32: c.u32_le("message header")?,
            kind: MessageKind::from_byte(c.u8("message header")?),
            len: c.varint("message header")?,
            segment_number: c.varint("message header")?,
            pid: c.varint("message header")?,
        };
        Ok((header, c.position()))
    }
}

/// Bytes to read messages from: a whole segment in memory while recovering, the file otherwise.
pub(crate) trait ReadAt {
    /// Whether `view` returns bytes it read into the caller's `scratch` (rather than borrowed).
    const READS_INTO_SCRATCH: bool;

    /// Up to `len` bytes at `at` (fewer where the bytes end): borrowed when they are in memory,
    /// read into `scratch` otherwise. `None` past the end or on a read error.
    fn view<'s>(&'s self, at: LogOffset, len: usize, scratch: &'s mut Vec<u8>) -> Option<&'s [u8]>;
}

/// One segment read into memory, and where it sits in the file.
pub(crate) struct SegmentBuf {
    /// Wiped when dropped: a store without a passphrase keeps its keys in the clear.
    pub buf: SecretBuf,
    pub offset: LogOffset,
}

impl ReadAt for SegmentBuf {
    const READS_INTO_SCRATCH: bool = false;

    fn view<'s>(
        &'s self,
        at: LogOffset,
        len: usize,
        _scratch: &'s mut Vec<u8>,
    ) -> Option<&'s [u8]> {
        let start = usize::try_from(at.checked_sub(self.offset)?).ok()?;
        if start > self.buf.len() {
            return None;
        }
        let end = self.buf.len().min(start.saturating_add(len));
        Some(&self.buf[start..end])
    }
}

impl ReadAt for File {
    const READS_INTO_SCRATCH: bool = true;

    fn view<'s>(&'s self, at: LogOffset, len: usize, scratch: &'s mut Vec<u8>) -> Option<&'s [u8]> {
        // Read straight into the buffer's spare capacity: zero-filling it first (what a safe
        // `read_at` needs) was a second pass over every byte of the store.
        scratch.clear();
        scratch.reserve(len);
        let mut done = 0;
        while done < len {
            let spare = &mut scratch.spare_capacity_mut()[..len - done];
            let offset = libc::off_t::try_from(at + done as u64).ok()?;
            // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by `scratch`; pread
            // writes at most that many bytes into it and initializes exactly the count it returns.
            let n = unsafe { libc::pread(self.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), offset) };
            match n {
                0 => break,
                n if n > 0 => {
                    done += n as usize;
                    // SAFETY: the first `done` bytes were written by the reads so far.
                    unsafe { scratch.set_len(done) };
                }
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                _ => return None,
            }
        }
        Some(&scratch[..])
    }
}

/// Where a message's body was found: in the first read, in the zero-padded header probe, or in
/// a second read.
enum BodyIn {
    First,
    Padded,
    Second,
}

/// What reading one message found, as Sled's `read_message` classifies it.
pub(crate) enum LogRead {
    /// A page message: its body if asked for (the blob's contents for blob messages) and the
    /// bytes it takes in the log.
    Page {
        header: MessageHeader,
        body: Option<MessageBody>,
        blob: Option<Lsn>,
        inline_len: u32,
    },
    Canceled(u32),
    Cap,
    /// A torn or damaged message: a bad CRC, an impossible length, a stale segment number.
    Corrupted,
    /// A blob message whose blob file is gone (Sled skips these).
    DanglingBlob(u32),
    /// The end of an atomic batch: readable only if the log reaches that LSN.
    BatchManifest {
        last_lsn_in_batch: Lsn,
        inline_len: u32,
    },
}

/// Why a message could not be read at all (as opposed to reading as [`LogRead::Corrupted`]).
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// The segment or file ends inside the message, or could not be read.
    Eof,
    Blob(BlobFailure),
    Malformed(Malformed),
}

#[derive(Debug)]
pub(crate) enum BlobFailure {
    Io(std::io::Error),
    Crc,
    KindMismatch,
}

impl std::fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFailure::Eof => f.write_str("the log ends inside the message"),
            ReadFailure::Blob(BlobFailure::Io(e)) => write!(f, "its blob file cannot be read: {e}"),
            ReadFailure::Blob(BlobFailure::Crc) => f.write_str("its blob file fails its checksum"),
            ReadFailure::Blob(BlobFailure::KindMismatch) => {
                f.write_str("its blob file holds another kind of message")
            }
            ReadFailure::Malformed(m) => m.fmt(f),
        }
    }
}

/// Where to read a message and what to expect there.
pub(crate) struct MessageAt<'a> {
    pub lid: LogOffset,
    pub expected_segment_number: u64,
    pub segment_size: u64,
    pub blobs_dir: &'a Path,
    /// How many bytes the message is thought to take (read in one go when right).
    pub len_hint: usize,
    /// Whether the caller needs the body (recovery only needs to know the message is sound).
    pub keep_body: bool,
}

/// Reads the message at `at.lid`, checking it as Sled does: length within the segment, CRC over
/// the body and the header after the CRC, the segment number the LSN implies; blob messages have
/// their blob read and checked too.
pub(crate) fn read_message<R: ReadAt>(
    source: &R,
    at: &MessageAt<'_>,
) -> Result<LogRead, ReadFailure> {
    let seg_start = at.lid / at.segment_size * at.segment_size;
    let ceiling = seg_start + at.segment_size;
    let room = usize::try_from(ceiling - at.lid).unwrap_or(usize::MAX);
    let mut scratch = SecretBuf::new();
    let view = source
        .view(
            at.lid,
            at.len_hint.max(HEADER_PROBE).min(room),
            &mut scratch,
        )
        .ok_or(ReadFailure::Eof)?;
    // Sled decodes the header from 128 bytes, zero-padded where the bytes end.
    let mut padded = Zeroizing::new([0u8; HEADER_PROBE]);
    let probe_len = view.len().min(HEADER_PROBE);
    padded[..probe_len].copy_from_slice(&view[..probe_len]);
    let (header, header_len) = match MessageHeader::parse(&padded[..]) {
        Ok(parsed) => parsed,
        // Sled cannot run short in its 128 zero-padded bytes; a header that would is garbage,
        // as a bad CRC would be.
        Err(_) => return Ok(LogRead::Corrupted),
    };
    let max_len = ceiling.saturating_sub(at.lid + header_len as u64);
    if header.len > max_len || header.kind == MessageKind::Corrupted {
        return Ok(LogRead::Corrupted);
    }
    let body_len = header.len as usize;
    let end = header_len + body_len;
    let mut extra = SecretBuf::new();
    let (body, body_in): (&[u8], BodyIn) = if end <= view.len() {
        (&view[header_len..end], BodyIn::First)
    } else if end <= HEADER_PROBE {
        (&padded[header_len..end], BodyIn::Padded)
    } else {
        let read = source
            .view(at.lid + header_len as u64, body_len, &mut extra)
            .ok_or(ReadFailure::Eof)?;
        if read.len() < body_len {
            return Err(ReadFailure::Eof);
        }
        (read, BodyIn::Second)
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(body);
    hasher.update(&padded[4..header_len]);
    if hasher.finalize() ^ 0xFFFF_FFFF != header.crc32 {
        return Ok(LogRead::Corrupted);
    }
    let inline_len = end as u32;
    if header.segment_number != at.expected_segment_number {
        return Ok(LogRead::Corrupted);
    }
    match header.kind {
        MessageKind::Canceled => Ok(LogRead::Canceled(inline_len)),
        MessageKind::Cap => Ok(LogRead::Cap),
        MessageKind::BatchManifest => {
            let last = Cursor::new(body)
                .i64_le("batch manifest")
                .map_err(ReadFailure::Malformed)?;
            Ok(LogRead::BatchManifest {
                last_lsn_in_batch: last,
                inline_len,
            })
        }
        kind if kind.is_blob() => {
            let blob_lsn = Cursor::new(body)
                .i64_le("blob pointer")
                .map_err(ReadFailure::Malformed)?;
            match read_blob(at.blobs_dir, blob_lsn) {
                Ok((blob_kind, contents)) => {
                    if blob_kind != kind {
                        return Err(ReadFailure::Blob(BlobFailure::KindMismatch));
                    }
                    let body = at.keep_body.then_some(contents);
                    Ok(LogRead::Page {
                        header,
                        body,
                        blob: Some(blob_lsn),
                        inline_len,
                    })
                }
                Err(BlobFailure::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    Ok(LogRead::DanglingBlob(inline_len))
                }
                Err(e) => Err(ReadFailure::Blob(e)),
            }
        }
        _ => {
            // The body stays in the buffer it was read into when there is one (the file's
            // case); bytes borrowed from a segment in memory, or the short padded probe, are
            // copied.
            let body = if at.keep_body {
                let copied = match body_in {
                    BodyIn::First | BodyIn::Second if R::READS_INTO_SCRATCH => None,
                    _ => Some(SecretBuf::from_slice(body)),
                };
                Some(match (copied, body_in) {
                    (Some(copy), _) => MessageBody::whole(copy),
                    (None, BodyIn::First) => MessageBody::new(scratch, header_len..end),
                    (None, _) => MessageBody::whole(extra),
                })
            } else {
                None
            };
            Ok(LogRead::Page {
                header,
                body,
                blob: None,
                inline_len,
            })
        }
    }
}

/// A blob file: CRC32 (little-endian) of what follows, the message kind byte, the body.
pub(crate) fn read_blob(
    blobs_dir: &Path,
    blob_lsn: Lsn,
) -> Result<(MessageKind, MessageBody), BlobFailure> {
    let mut file = File::open(blobs_dir.join(blob_lsn.to_string())).map_err(BlobFailure::Io)?;
    let mut contents = SecretBuf::new();
    file.read_to_end(&mut contents).map_err(BlobFailure::Io)?;
    if contents.len() < 5 {
        return Err(BlobFailure::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let expected = u32::from_le_bytes(contents[0..4].try_into().unwrap());
    if crc32fast::hash(&contents[4..]) != expected {
        return Err(BlobFailure::Crc);
    }
    let kind = MessageKind::from_byte(contents[4]);
    let len = contents.len();
    Ok((kind, MessageBody::new(contents, 5..len)))
}

/// Whether a message may start at this LSN: after the segment header, and not in the last
/// `MAX_MSG_HEADER_LEN` bytes of the segment.
pub(crate) fn valid_entry_offset(lsn: Lsn, segment_size: u64) -> bool {
    let Ok(lid) = u64::try_from(lsn) else {
        return false;
    };
    let in_segment = lid % segment_size;
    in_segment >= SEG_HEADER_LEN as u64 && in_segment <= segment_size - MAX_MSG_HEADER_LEN as u64
}
