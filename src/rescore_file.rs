//! The rescoring file of a quantized collection: a flat file of the original `f32` vectors,
//! one fixed-size slot per point id, read through a memory map when a search rescores its
//! candidates.
//!
//! An int8 collection keeps only codes in memory, so every search reads the original vectors
//! of its `k * oversampling` candidates. Read from sled, each one costs a tree lookup and a
//! record decode (a few µs; about half of a search's time at ef 32). Read here, it costs a
//! copy out of the page cache. The file is a **cache**, never a source of truth:
//!
//! - A point's vector never changes (every version of a document gets a new point id), so a
//!   slot that holds its point id and a matching checksum holds that point's vector.
//! - Anything else (a slot never written, torn by a crash, past the end of the file, damaged
//!   on disk) fails those checks; the caller then reads storage and [`repair`s](RescoreFile::repair)
//!   the slot. Scores are the same either way.
//! - A slot is written only for a point no search can reach yet (before the index gets it) or,
//!   for a repair, under the exclusive lock that every read holds shared: no read ever copies
//!   bytes that are being written.
//! - A slot is written only with a vector storage has committed (after the write's commit, or
//!   read back from storage), so a slot can never hold a vector whose point id was later
//!   given to another document. And the file is synced before every index dump: a point the
//!   dump holds (so not replayed at open) has its slot on disk, or none that passes the checks;
//!   a point after the dump is replayed at open, which writes its slot again.
//! - A write that fails may leave a slot with an older vector for a reused point id (a
//!   commit lost with `Durability::Async`): the file is then unused until the next index dump
//!   empties it (back to its header), before that dump is written.
//!
//! ```text
//! offset 0     "LDBRSCR1", u32 LE format version (1), u32 LE dim, u64 LE collection id,
//!              zeros up to 64 bytes
//! 64 + p * S   slot of point p (S = 8 + 4 * dim): u32 LE p + 1, u32 LE CRC-32 of
//!              (collection id LE, p LE, the vector's bytes), then dim x f32 LE
//! ```
//!
//! A file whose header does not match the collection (another dimension, another collection
//! id, another version, too short) is emptied and started again. Otherwise the file only grows
//! (save the emptying after a failed write); points removed keep their slots until the
//! collection is dropped.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;

/// File name of the rescoring file inside a collection's index directory. Not part of the
/// index dump: backups leave it out and a restore starts without one (it fills as searches
/// repair it).
pub(crate) const RESCORE_FILE: &str = "rescore-vectors.bin";

const MAGIC: &[u8; 8] = b"LDBRSCR1";
const VERSION: u32 = 1;
const HEADER: usize = 64;
/// The file grows by at least this many slots at a time (so that the map is rarely redone).
const GROW_SLOTS: u64 = 4_096;

/// One collection's rescoring file (see the module docs).
#[derive(Debug)]
pub(crate) struct RescoreFile {
    path: PathBuf,
    file: File,
    cid: u64,
    dim: usize,
    /// Bytes per slot: 8 + 4 * dim.
    slot: usize,
    /// The map of the whole file and the file's length; reads hold it shared, repairs and
    /// growth exclusively.
    state: RwLock<Mapped>,
}

#[derive(Debug)]
struct Mapped {
    map: Option<memmap2::Mmap>,
    len: u64,
    /// A write failed: a slot may have kept an older vector than the one that failed to go
    /// in. Until [`RescoreFile::sync`] empties the file, nothing is read or written.
    broken: bool,
}

impl RescoreFile {
    /// Opens (or creates) the rescoring file of collection `cid` in `dir`. A file with another
    /// header is emptied first.
    pub(crate) fn open(dir: &Path, cid: u64, dim: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(RESCORE_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let header = header(cid, dim);
        let mut found = [0u8; HEADER];
        let len = file.metadata()?.len();
        let matches = len >= HEADER as u64 && {
            file.read_exact_at(&mut found, 0)?;
            found == header
        };
        if !matches {
            if len > 0 {
                tracing::info!(path = %path.display(), "rescoring file of another layout; starting it again");
            }
            file.set_len(0)?;
            file.write_all_at(&header, 0)?;
        }
        let f = RescoreFile {
            path,
            file,
            cid,
            dim,
            slot: 8 + 4 * dim,
            state: RwLock::new(Mapped {
                map: None,
                len: 0,
                broken: false,
            }),
        };
        f.remap(&mut f.state.write())?;
        Ok(f)
    }

    /// Makes every slot written so far durable. Called before the index dump is written: a
    /// point the dump holds is never replayed at open, so its slot must not be lost by a power
    /// failure that keeps the dump (see `Collection::persist`).
    ///
    /// After a failed write, this is where the file is emptied (back to its header) and synced,
    /// so that no slot that missed its update can be trusted later (by this process or, after
    /// the dump, by the next open); an error here fails the dump.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        if !self.state.read().broken {
            return self.file.sync_data();
        }
        let mut st = self.state.write();
        st.map = None;
        self.file.set_len(HEADER as u64)?;
        self.file.sync_data()?;
        self.remap(&mut st)?;
        st.broken = false;
        tracing::info!(path = %self.path.display(), "rescoring file emptied after a failed write; searches refill it");
        Ok(())
    }

    /// Records a failed write (see [`Mapped::broken`]).
    fn mark_broken(&self, e: &std::io::Error) {
        tracing::warn!(path = %self.path.display(), error = %e, "a write to the rescoring file failed; searches read storage until the next index dump empties the file");
        self.state.write().broken = true;
    }

    /// The file's length in bytes (slots never written take no disk space).
    pub(crate) fn len_bytes(&self) -> u64 {
        self.state.read().len
    }

    fn offset(&self, point: u32) -> u64 {
        HEADER as u64 + u64::from(point) * self.slot as u64
    }

    /// Maps the file again after its length changed.
    fn remap(&self, st: &mut Mapped) -> std::io::Result<()> {
        st.len = self.file.metadata()?.len();
        st.map = None;
        // SAFETY: the file belongs to an open database, which holds the directory's exclusive
        // lock: no other latentdb process writes it, and nothing outside latentdb is meant to
        // (docs/FORMAT.md). This process changes its length only under the exclusive lock:
        // growth with a new map after, the one shrink (emptying it in `sync`) with the map
        // dropped first. It never writes bytes that a read may be copying: new slots are
        // written before any search can reach their points, and repairs take the exclusive
        // lock (see the module docs). Should another program modify the file anyway, a read
        // copies torn bytes, which the slot checksum rejects (truncating it under a running
        // database would fault the process, as for any mapped file).
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&self.file) };
        match map {
            Ok(m) => st.map = Some(m),
            // Reads fall back to `pread` (see `read`): slower, same results.
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot map the rescoring file; reading it without a map")
            }
        }
        Ok(())
    }

    /// Makes the file at least long enough for slot `last` (growing by whole chunks).
    fn ensure_len(&self, last: u32) -> std::io::Result<()> {
        let need = self.offset(last) + self.slot as u64;
        if self.state.read().len >= need {
            return Ok(());
        }
        let mut st = self.state.write();
        if st.len >= need {
            return Ok(());
        }
        let chunk = GROW_SLOTS.max(u64::from(last) / 4) * self.slot as u64;
        self.file.set_len(need.max(st.len + chunk))?;
        self.remap(&mut st)
    }

    /// Encodes the slot of `point` into `out` (cleared first).
    fn encode(&self, point: u32, vector: &[f32], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&(point.wrapping_add(1)).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        for x in vector {
            out.extend_from_slice(&x.to_le_bytes());
        }
        let crc = self.checksum(point, &out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
    }

    fn checksum(&self, point: u32, vector_bytes: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(&self.cid.to_le_bytes());
        h.update(&point.to_le_bytes());
        h.update(vector_bytes);
        h.finalize()
    }

    /// Decodes the slot bytes of `point` into `out` when they are valid (the point's id and a
    /// matching checksum); false otherwise, `out` untouched.
    fn decode(&self, point: u32, bytes: &[u8], out: &mut Vec<f32>) -> bool {
        if bytes.len() != self.slot {
            return false;
        }
        let (head, body) = bytes.split_at(8);
        let stored_id = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let stored_crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if stored_id != point.wrapping_add(1) || stored_crc != self.checksum(point, body) {
            return false;
        }
        let start = out.len();
        out.resize(start + self.dim, 0.0);
        for (x, c) in out[start..].iter_mut().zip(body.chunks_exact(4)) {
            *x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        true
    }

    /// Writes the slots of points that no search can reach yet (the caller inserts them into
    /// the index afterwards, or the collection is still opening), their vectors as storage
    /// committed them. Runs of consecutive point ids go out in one write each.
    pub(crate) fn write_new(&self, points: &[(u32, &[f32])]) -> std::io::Result<()> {
        let res = self.try_write_new(points);
        if let Err(e) = &res {
            self.mark_broken(e);
        }
        res
    }

    fn try_write_new(&self, points: &[(u32, &[f32])]) -> std::io::Result<()> {
        let Some(last) = points.iter().map(|p| p.0).max() else {
            return Ok(());
        };
        if self.state.read().broken {
            return Ok(()); // emptied at the next sync; these slots are repaired after
        }
        self.ensure_len(last)?;
        let mut run: Vec<u8> = Vec::new();
        let mut slot = Vec::with_capacity(self.slot);
        let mut start: Option<u32> = None;
        let mut next = 0u32;
        for &(p, v) in points {
            if v.len() != self.dim {
                continue; // the index refuses it too; reads of it fall back to storage
            }
            if start.is_some() && p != next {
                self.flush_run(start.take(), &mut run)?;
            }
            if start.is_none() {
                start = Some(p);
            }
            self.encode(p, v, &mut slot);
            run.extend_from_slice(&slot);
            next = p.wrapping_add(1);
        }
        self.flush_run(start, &mut run)
    }

    fn flush_run(&self, start: Option<u32>, run: &mut Vec<u8>) -> std::io::Result<()> {
        if let Some(p) = start {
            self.file.write_all_at(run, self.offset(p))?;
        }
        run.clear();
        Ok(())
    }

    /// Rewrites the slot of `point`, which a search may be reading: under the exclusive lock.
    /// Best effort: a failure is logged and the file is then unused until the next
    /// [`sync`](Self::sync) empties it.
    pub(crate) fn repair(&self, point: u32, vector: &[f32]) {
        if vector.len() != self.dim {
            return;
        }
        let res = self.ensure_len(point).and_then(|()| {
            let mut slot = Vec::with_capacity(self.slot);
            self.encode(point, vector, &mut slot);
            let st = self.state.write();
            if st.broken {
                return Ok(());
            }
            self.file.write_all_at(&slot, self.offset(point))
        });
        if let Err(e) = res {
            self.mark_broken(&e);
        }
    }

    /// Appends the vector of `point` to `out` when its slot is valid; false (and `out`
    /// untouched) when the caller must read storage instead.
    pub(crate) fn read(&self, point: u32, out: &mut Vec<f32>) -> bool {
        let st = self.state.read();
        let off = self.offset(point);
        if st.broken || off + self.slot as u64 > st.len {
            return false;
        }
        match &st.map {
            Some(map) => usize::try_from(off)
                .ok()
                .and_then(|o| map.get(o..o + self.slot))
                .is_some_and(|bytes| self.decode(point, bytes, out)),
            None => self.read_unmapped(point, off, out),
        }
    }

    /// Touches every cache line of the slots of `points` (one load each, results unused), so
    /// that their memory loads all at once instead of one slot after another as
    /// [`read`](Self::read) gets to them: a search reads its candidates' slots in a row.
    pub(crate) fn warm(&self, points: impl Iterator<Item = u32>) {
        let st = self.state.read();
        let Some(map) = &st.map else { return };
        let mut sum = 0u8;
        for p in points {
            let Ok(off) = usize::try_from(self.offset(p)) else {
                continue;
            };
            if let Some(slot) = map.get(off..off + self.slot) {
                for line in slot.iter().step_by(64) {
                    sum ^= *line;
                }
            }
        }
        std::hint::black_box(sum);
    }

    /// [`read`](Self::read) with `pread` instead of the map: the fallback when the file cannot
    /// be mapped, and the tests' oracle for the mapped path.
    fn read_unmapped(&self, point: u32, off: u64, out: &mut Vec<f32>) -> bool {
        let mut bytes = vec![0u8; self.slot];
        self.file.read_exact_at(&mut bytes, off).is_ok() && self.decode(point, &bytes, out)
    }
}

/// The header of collection `cid`'s file.
fn header(cid: u64, dim: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(dim as u32).to_le_bytes());
    h[16..24].copy_from_slice(&cid.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DIM: usize = 5;

    fn v(p: u32) -> Vec<f32> {
        (0..DIM).map(|i| p as f32 * 0.5 - i as f32).collect()
    }

    fn read_both(f: &RescoreFile, p: u32) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
        let mut a = Vec::new();
        let mapped = f.read(p, &mut a).then_some(a);
        let mut b = Vec::new();
        let unmapped = f
            .read_unmapped(p, f.offset(p), &mut b)
            .then_some(b)
            .filter(|_| f.offset(p) + f.slot as u64 <= f.len_bytes());
        (mapped, unmapped)
    }

    #[test]
    fn written_slots_read_back_and_others_miss() {
        let dir = tempfile::tempdir().unwrap();
        let f = RescoreFile::open(dir.path(), 7, DIM).unwrap();
        let vs: Vec<(u32, Vec<f32>)> = [0u32, 1, 2, 5, 9, 10].iter().map(|&p| (p, v(p))).collect();
        let refs: Vec<(u32, &[f32])> = vs.iter().map(|(p, x)| (*p, x.as_slice())).collect();
        f.write_new(&refs).unwrap();
        for p in 0..20 {
            let (mapped, unmapped) = read_both(&f, p);
            assert_eq!(mapped, unmapped, "point {p}");
            let written = vs.iter().any(|(q, _)| *q == p);
            assert_eq!(mapped, written.then(|| v(p)), "point {p}");
        }
        // Far past the end: a miss, not a panic.
        assert!(!f.read(u32::MAX, &mut Vec::new()));
        // Appends, leaving what `out` held.
        let mut out = vec![42.0];
        assert!(f.read(5, &mut out));
        assert_eq!(out.len(), 1 + DIM);
        assert_eq!(out[0], 42.0);
    }

    #[test]
    fn a_damaged_slot_misses_until_repaired_and_reopening_keeps_slots() {
        let dir = tempfile::tempdir().unwrap();
        {
            let f = RescoreFile::open(dir.path(), 7, DIM).unwrap();
            f.write_new(&[(3, &v(3)), (4, &v(4))]).unwrap();
        }
        // Flip one bit of point 3's vector on disk.
        let path = dir.path().join(RESCORE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let off = HEADER + 3 * (8 + 4 * DIM) + 8 + 6;
        bytes[off] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let f = RescoreFile::open(dir.path(), 7, DIM).unwrap();
        assert_eq!(read_both(&f, 3), (None, None));
        assert_eq!(read_both(&f, 4).0, Some(v(4)));
        f.repair(3, &v(3));
        assert_eq!(read_both(&f, 3).0, Some(v(3)));
        // A repair past the end grows the file.
        f.repair(100_000, &v(1));
        assert_eq!(read_both(&f, 100_000).0, Some(v(1)));
    }

    #[test]
    fn a_file_of_another_collection_or_dimension_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        {
            let f = RescoreFile::open(dir.path(), 7, DIM).unwrap();
            f.write_new(&[(0, &v(0))]).unwrap();
        }
        let other = RescoreFile::open(dir.path(), 8, DIM).unwrap();
        assert!(!other.read(0, &mut Vec::new()));
        assert_eq!(other.len_bytes(), HEADER as u64);
        drop(other);
        let f = RescoreFile::open(dir.path(), 8, DIM + 1).unwrap();
        assert!(!f.read(0, &mut Vec::new()));
        // The same slot bytes under another collection id fail the checksum.
        f.write_new(&[(0, &[1.0; DIM + 1])]).unwrap();
        drop(f);
        let path = dir.path().join(RESCORE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[16..24].copy_from_slice(&9u64.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let f = RescoreFile::open(dir.path(), 9, DIM + 1).unwrap();
        assert!(!f.read(0, &mut Vec::new()));
    }

    /// After a failed write nothing is read or written until `sync` empties the file; then
    /// it fills again.
    #[test]
    fn a_failed_write_disables_the_file_until_sync_empties_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = RescoreFile::open(dir.path(), 1, DIM).unwrap();
        f.write_new(&[(0, &v(0)), (1, &v(1))]).unwrap();
        f.mark_broken(&std::io::Error::other("injected"));
        assert_eq!(read_both(&f, 0).0, None);
        f.write_new(&[(2, &v(2))]).unwrap();
        f.repair(3, &v(3));
        assert_eq!((read_both(&f, 2).0, read_both(&f, 3).0), (None, None));
        f.sync().unwrap();
        assert_eq!(f.len_bytes(), HEADER as u64);
        assert_eq!(read_both(&f, 1), (None, None));
        f.write_new(&[(4, &v(4))]).unwrap();
        f.repair(1, &v(1));
        assert_eq!(read_both(&f, 4).0, Some(v(4)));
        assert_eq!(read_both(&f, 1).0, Some(v(1)));
        assert_eq!(read_both(&f, 0).0, None);
    }

    #[test]
    fn vectors_of_the_wrong_dimension_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let f = RescoreFile::open(dir.path(), 1, DIM).unwrap();
        f.write_new(&[(0, &[1.0; 3]), (1, &v(1))]).unwrap();
        f.repair(2, &[1.0; 2]);
        assert_eq!(read_both(&f, 0).0, None);
        assert_eq!(read_both(&f, 1).0, Some(v(1)));
        assert_eq!(read_both(&f, 2).0, None);
    }

    proptest! {
        /// Whatever the file holds after its header, reads never panic, the mapped and the
        /// `pread` paths agree, and a hit is exactly what a valid slot encodes.
        #[test]
        fn arbitrary_file_bytes_never_panic_and_both_paths_agree(
            body in proptest::collection::vec(any::<u8>(), 0..400),
            flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..4),
            point in 0u32..12,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(RESCORE_FILE);
            // A valid slot for point 1 in the middle of arbitrary bytes, then damage.
            let f = RescoreFile::open(dir.path(), 3, DIM).unwrap();
            let mut slot = Vec::new();
            f.encode(1, &v(1), &mut slot);
            drop(f);
            let mut bytes = header(3, DIM).to_vec();
            bytes.extend_from_slice(&body);
            let at = HEADER + 8 + 4 * DIM;
            if bytes.len() < at + slot.len() {
                bytes.resize(at + slot.len(), 0);
            }
            bytes[at..at + slot.len()].copy_from_slice(&slot);
            for (i, x) in flips {
                if let Some(b) = bytes.get_mut(HEADER + i) {
                    *b ^= x;
                }
            }
            std::fs::write(&path, &bytes).unwrap();
            let f = RescoreFile::open(dir.path(), 3, DIM).unwrap();
            let (mapped, unmapped) = read_both(&f, point);
            prop_assert_eq!(&mapped, &unmapped);
            if let Some(got) = mapped {
                prop_assert_eq!(got.len(), DIM);
                let off = HEADER + point as usize * (8 + 4 * DIM);
                let mut expect = Vec::new();
                f.encode(point, &got, &mut expect);
                prop_assert_eq!(&bytes[off..off + expect.len()], &expect[..]);
            }
        }
    }
}
