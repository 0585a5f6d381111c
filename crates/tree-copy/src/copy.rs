use std::fs::{self, File, FileTimes};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::checksums::ChecksumLine;
use crate::fs_ops::{start_writeback, sync_dir, try_clone};
use crate::tree::{list_tree, TreeEntry};
use crate::{Progress, TreeError};

/// Large enough that syscalls and channel hand-offs vanish next to the bytes; three in flight.
const CHUNK: usize = 4 << 20;
const BUFFERS: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    /// Relative to the tree's root, `/`-separated.
    pub relative: String,
    pub sha256: [u8; 32],
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub struct CopyReport {
    pub files: Vec<FileDigest>,
    pub bytes: u64,
    /// Files cloned by reflink (hashed, not copied).
    pub cloned_files: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MismatchKind {
    Missing,
    Differs,
    /// In the folder but not in the list.
    Unexpected,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub path: String,
    pub kind: MismatchKind,
}

fn relative_str(entry: &TreeEntry) -> Result<String, TreeError> {
    entry
        .relative
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| TreeError::Unsupported(entry.relative.clone()))
}

/// Copies the folder `source` to `destination` (which must not exist; its parent must), hashing
/// every file in the same pass. Modes and times are preserved; everything is fsynced before return.
pub fn copy_tree(
    source: &Path,
    destination: &Path,
    progress: &Progress,
) -> Result<CopyReport, TreeError> {
    let tree = list_tree(source)?;
    progress.bytes_total.store(tree.bytes(), Ordering::Relaxed);
    progress
        .files_total
        .store(tree.files.len() as u64, Ordering::Relaxed);
    match fs::symlink_metadata(destination) {
        Ok(_) => return Err(TreeError::Exists(destination.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(TreeError::io("cannot stat", destination)(e)),
    }
    private_dir(destination)?;
    for dir in &tree.dirs {
        private_dir(&destination.join(&dir.relative))?;
    }

    let mut report = CopyReport {
        bytes: tree.bytes(),
        ..CopyReport::default()
    };
    for file in &tree.files {
        progress.check()?;
        let src_path = source.join(&file.relative);
        let dst_path = destination.join(&file.relative);
        let src = File::open(&src_path).map_err(TreeError::io("cannot read", &src_path))?;
        let dst = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dst_path)
            .map_err(TreeError::io("cannot create", &dst_path))?;
        let cloned = try_clone(&src, &dst);
        let sha256 = if cloned {
            stream(&src, None, progress)
        } else {
            match copy_direct_and_hash(&src, &dst, &dst_path, file.metadata.len(), progress) {
                Ok(Some(digest)) => Ok(digest),
                Ok(None) => copy_in_kernel_and_hash(&src, &dst, file.metadata.len(), progress),
                Err(e) => Err(e),
            }
        }
            .map_err(TreeError::io("cannot copy", &src_path))?;
        keep_mode_and_times(&dst, &file.metadata)
            .map_err(TreeError::io("cannot set the mode and times of", &dst_path))?;
        dst.sync_all()
            .map_err(TreeError::io("cannot fsync", &dst_path))?;
        report.cloned_files += u64::from(cloned);
        report.files.push(FileDigest {
            relative: relative_str(file)?,
            sha256,
            bytes: file.metadata.len(),
        });
        progress.files_done.fetch_add(1, Ordering::Relaxed);
    }
    // Children before parents: setting a folder's times must come after its last change.
    for dir in tree.dirs.iter().rev() {
        let path = destination.join(&dir.relative);
        let handle = File::open(&path).map_err(TreeError::io("cannot open", &path))?;
        keep_mode_and_times(&handle, &dir.metadata)
            .map_err(TreeError::io("cannot set the mode and times of", &path))?;
        handle
            .sync_all()
            .map_err(TreeError::io("cannot fsync", &path))?;
    }
    let root_meta = fs::metadata(source).map_err(TreeError::io("cannot stat", source))?;
    let root = File::open(destination).map_err(TreeError::io("cannot open", destination))?;
    keep_mode_and_times(&root, &root_meta).map_err(TreeError::io(
        "cannot set the mode and times of",
        destination,
    ))?;
    root.sync_all()
        .map_err(TreeError::io("cannot fsync", destination))?;
    if let Some(parent) = destination.parent() {
        sync_dir(parent).map_err(TreeError::io("cannot fsync", parent))?;
    }
    Ok(report)
}

/// SHA-256 of every file under `root`.
pub fn hash_tree(root: &Path, progress: &Progress) -> Result<Vec<FileDigest>, TreeError> {
    let tree = list_tree(root)?;
    progress.bytes_total.store(tree.bytes(), Ordering::Relaxed);
    progress
        .files_total
        .store(tree.files.len() as u64, Ordering::Relaxed);
    let mut out = Vec::with_capacity(tree.files.len());
    for file in &tree.files {
        progress.check()?;
        let path = root.join(&file.relative);
        let handle = File::open(&path).map_err(TreeError::io("cannot read", &path))?;
        let sha256 =
            stream(&handle, None, progress).map_err(TreeError::io("cannot read", &path))?;
        out.push(FileDigest {
            relative: relative_str(file)?,
            sha256,
            bytes: file.metadata.len(),
        });
        progress.files_done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(out)
}

/// Checks `root` against a checksum list: every listed file present with its hash, and nothing
/// else but the names in `ignore` (the list itself, metadata).
pub fn verify_tree(
    root: &Path,
    expected: &[ChecksumLine],
    ignore: &[&str],
    progress: &Progress,
) -> Result<Vec<Mismatch>, TreeError> {
    let actual = hash_tree(root, progress)?;
    let mut mismatches = Vec::new();
    let by_path: std::collections::HashMap<&str, &FileDigest> =
        actual.iter().map(|d| (d.relative.as_str(), d)).collect();
    for line in expected {
        match by_path.get(line.path.as_str()) {
            None => mismatches.push(Mismatch {
                path: line.path.clone(),
                kind: MismatchKind::Missing,
            }),
            Some(d) if d.sha256 != line.sha256 => mismatches.push(Mismatch {
                path: line.path.clone(),
                kind: MismatchKind::Differs,
            }),
            Some(_) => {}
        }
    }
    let listed: std::collections::HashSet<&str> =
        expected.iter().map(|l| l.path.as_str()).collect();
    for d in &actual {
        if !listed.contains(d.relative.as_str()) && !ignore.contains(&d.relative.as_str()) {
            mismatches.push(Mismatch {
                path: d.relative.clone(),
                kind: MismatchKind::Unexpected,
            });
        }
    }
    Ok(mismatches)
}

fn private_dir(path: &Path) -> Result<(), TreeError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(TreeError::io("cannot create", path))
}

fn keep_mode_and_times(file: &File, meta: &fs::Metadata) -> std::io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(
        meta.permissions().mode() & 0o7777,
    ))?;
    let mut times = FileTimes::new();
    if let Ok(t) = meta.accessed() {
        times = times.set_accessed(t);
    }
    if let Ok(t) = meta.modified() {
        times = times.set_modified(t);
    }
    file.set_times(times)
}

/// A 4096-aligned buffer, as O_DIRECT needs.
struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is plain memory owned by one thread at a time (it moves through channels).
unsafe impl Send for AlignedBuf {}

const ALIGN: usize = 4096;

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(len, ALIGN).expect("a valid layout");
        // SAFETY: a non-zero size; zeroed so that the padding of a last partial block is defined.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        AlignedBuf { ptr: std::ptr::NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout)), len }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes were allocated for `ptr` and this is the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), std::alloc::Layout::from_size_align(self.len, ALIGN).expect("a valid layout")) }
    }
}

/// Where the filesystem takes O_DIRECT: read each chunk once into an aligned buffer, hash it on a
/// second thread, and write it to the copy with O_DIRECT on a third — the write goes from our
/// buffer to the disk without a copy into the page cache, so the CPU is left to SHA-256 and
/// reading, hashing and writing overlap. `None` where O_DIRECT is not available (tmpfs, ...).
#[cfg(target_os = "linux")]
fn copy_direct_and_hash(src: &File, dst: &File, dst_path: &Path, len: u64, progress: &Progress) -> std::io::Result<Option<[u8; 32]>> {
    use std::os::unix::fs::FileExt;
    if len < (CHUNK as u64) {
        return Ok(None); // small files: not worth the setup
    }
    let direct = match fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(dst_path) {
        Ok(f) => f,
        Err(_) => return Ok(None),
    };
    type Filled = (AlignedBuf, u64, usize);
    let (to_hasher, hasher_in) = sync_channel::<Filled>(BUFFERS);
    let (to_writer, writer_in) = sync_channel::<Filled>(BUFFERS);
    let (give_back, returned) = sync_channel::<AlignedBuf>(BUFFERS + 1);
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut sha = Sha256::new();
            for (mut buf, offset, n) in hasher_in {
                sha.update(&buf.as_mut_slice()[..n]);
                progress.add_bytes(n as u64);
                if to_writer.send((buf, offset, n)).is_err() {
                    break;
                }
            }
            <[u8; 32]>::from(sha.finalize())
        });
        let writer = scope.spawn(move || -> std::io::Result<()> {
            for (mut buf, offset, n) in writer_in {
                let padded = n.div_ceil(ALIGN) * ALIGN;
                buf.as_mut_slice()[n..padded].fill(0);
                direct.write_all_at(&buf.as_mut_slice()[..padded], offset)?;
                let _ = give_back.send(buf);
            }
            direct.sync_all()
        });
        let outcome = (|| -> std::io::Result<()> {
            let mut spare: Vec<AlignedBuf> = (0..BUFFERS).map(|_| AlignedBuf::new(CHUNK)).collect();
            let mut offset = 0u64;
            while offset < len {
                progress.check().map_err(|_| std::io::Error::new(std::io::ErrorKind::Interrupted, "cancelled"))?;
                let mut buf = match spare.pop() {
                    Some(b) => b,
                    None => match returned.recv() {
                        Ok(b) => b,
                        Err(_) => return Ok(()), // the writer stopped: its error is reported below
                    },
                };
                let n = CHUNK.min((len - offset) as usize);
                src.read_exact_at(&mut buf.as_mut_slice()[..n], offset)?;
                if to_hasher.send((buf, offset, n)).is_err() {
                    return Ok(());
                }
                offset += n as u64;
            }
            Ok(())
        })();
        drop(to_hasher);
        let digest = hasher.join().expect("hashing does not panic");
        writer.join().expect("writing does not panic")?;
        outcome?;
        // The last block was written padded to the alignment: cut the copy to the source's length.
        dst.set_len(len)?;
        Ok(Some(digest))
    })
}

#[cfg(not(target_os = "linux"))]
fn copy_direct_and_hash(_src: &File, _dst: &File, _dst_path: &Path, _len: u64, _progress: &Progress) -> std::io::Result<Option<[u8; 32]>> {
    Ok(None)
}

/// The copy itself in the kernel (`copy_file_range`: no copy through user memory, which on this
/// kind of machine cost more than twice the time of `cp`), chunk by chunk; each chunk is hashed
/// from the page cache by a second thread right after the kernel copied it, while the next one is
/// copied. The disk is read once; the hash is of the source's bytes, so a later `sha256sum -c`
/// also catches a copy that went wrong. Falls back to `stream` where the kernel cannot copy.
fn copy_in_kernel_and_hash(src: &File, dst: &File, len: u64, progress: &Progress) -> std::io::Result<[u8; 32]> {
    use std::os::unix::fs::FileExt;
    let (copied, ranges) = sync_channel::<(u64, usize)>(BUFFERS);
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || -> std::io::Result<[u8; 32]> {
            let mut sha = Sha256::new();
            let mut buf = vec![0u8; CHUNK];
            for (offset, n) in ranges {
                src.read_exact_at(&mut buf[..n], offset)?;
                sha.update(&buf[..n]);
                progress.add_bytes(n as u64);
            }
            Ok(sha.finalize().into())
        });
        let outcome = (|| -> std::io::Result<bool> {
            let mut offset = 0u64;
            while offset < len {
                progress.check().map_err(|_| std::io::Error::new(std::io::ErrorKind::Interrupted, "cancelled"))?;
                let want = CHUNK.min((len - offset) as usize);
                match kernel_copy(src, dst, offset, want)? {
                    None if offset == 0 => return Ok(false), // not supported here: copy through memory
                    None => return Err(std::io::Error::other("copy_file_range stopped working mid-file")),
                    Some(0) => return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while being copied")),
                    Some(n) => {
                        if copied.send((offset, n)).is_err() {
                            break; // the hasher failed: its error is reported below
                        }
                        start_writeback(dst, offset, n as u64);
                        offset += n as u64;
                    }
                }
            }
            Ok(true)
        })();
        drop(copied);
        let digest = hasher.join().expect("hashing does not panic");
        match outcome? {
            true => digest,
            false => {
                let mut dst = dst;
                dst.set_len(0)?;
                std::io::Seek::seek(&mut dst, std::io::SeekFrom::Start(0))?;
                let mut src = src;
                std::io::Seek::seek(&mut src, std::io::SeekFrom::Start(0))?;
                stream(src, Some(dst), progress)
            }
        }
    })
}

/// One `copy_file_range` call at explicit offsets; `None` where the kernel or filesystem cannot.
#[cfg(target_os = "linux")]
pub fn kernel_copy(src: &File, dst: &File, offset: u64, len: usize) -> std::io::Result<Option<usize>> {
    use std::os::fd::AsRawFd;
    let mut off_in = offset as i64;
    let mut off_out = offset as i64;
    // SAFETY: both descriptors are open; the offsets are ours and only read and advanced by the call.
    let n = unsafe { libc::copy_file_range(src.as_raw_fd(), &mut off_in, dst.as_raw_fd(), &mut off_out, len, 0) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => Ok(None),
            _ => Err(err),
        };
    }
    Ok(Some(n as usize))
}

#[cfg(not(target_os = "linux"))]
pub fn kernel_copy(_src: &File, _dst: &File, _offset: u64, _len: usize) -> std::io::Result<Option<usize>> {
    Ok(None)
}

/// Reads `src` once, chunk by chunk; each chunk goes to a hashing thread and, if `dst` is given,
/// is written while it is being hashed. Returns the SHA-256 of everything read.
fn stream(mut src: &File, dst: Option<&File>, progress: &Progress) -> std::io::Result<[u8; 32]> {
    let (to_hasher, chunks) = sync_channel::<Arc<Vec<u8>>>(BUFFERS);
    let (give_back, returned) = sync_channel::<Arc<Vec<u8>>>(BUFFERS);
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut sha = Sha256::new();
            for chunk in chunks {
                sha.update(&chunk[..]);
                let _ = give_back.send(chunk);
            }
            <[u8; 32]>::from(sha.finalize())
        });
        let mut spare: Vec<Vec<u8>> = (0..BUFFERS).map(|_| Vec::with_capacity(CHUNK)).collect();
        let mut written = 0u64;
        let outcome = (|| -> std::io::Result<()> {
            loop {
                progress.check().map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::Interrupted, "cancelled")
                })?;
                let mut buf = match spare.pop() {
                    Some(b) => b,
                    // The hasher hands a chunk back once it is done with it; we dropped our clone.
                    None => {
                        Arc::try_unwrap(returned.recv().expect("the hasher outlives the reader"))
                            .expect("sole owner after hashing")
                    }
                };
                buf.clear();
                let n = (&mut src).take(CHUNK as u64).read_to_end(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                let chunk = Arc::new(buf);
                to_hasher
                    .send(chunk.clone())
                    .expect("the hasher runs until the channel closes");
                if let Some(mut out) = dst {
                    out.write_all(&chunk)?;
                    start_writeback(out, written, n as u64);
                    written += n as u64;
                }
                drop(chunk);
                progress.add_bytes(n as u64);
            }
        })();
        drop(to_hasher);
        let digest = hasher.join().expect("hashing does not panic");
        outcome.map(|()| digest)
    })
}
