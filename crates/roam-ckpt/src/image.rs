//! The checkpoint image: a versioned file of checksummed sections.
//!
//! ```text
//! header   magic "ROAMCKPT" (8 bytes) | version u32 | flags u32 (0)
//! section  kind u32 | length u64 | CRC-32 of kind, length and payload u32 | payload
//! ...
//! end      kind END | length 8 | CRC-32 | number of sections before it (u64)
//! ```
//!
//! Integers are little-endian. An image is valid only whole: the end
//! section must be there and count the sections, so a file cut short (a
//! full disk, a crash while writing) is refused, and [`write_atomically`]
//! writes to a temporary name and renames only a complete, synced file.
//! Memory pages are stored by [`encode_pages`]: runs of present pages, zero
//! pages left out.

use std::io::{self, Read, Seek, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The first bytes of every image.
pub const MAGIC: [u8; 8] = *b"ROAMCKPT";
/// The format version this code writes and the newest it reads.
pub const VERSION: u32 = 1;
/// The section that ends an image.
pub const END: u32 = u32::MAX;
/// The largest section read (1 TiB): a length beyond it is corruption.
pub const MAX_SECTION: u64 = 1 << 40;
/// Memory is stored in pages of this size (x86-64, aarch64 with 4 KiB).
pub const PAGE: usize = 4096;

/// Why an image cannot be read.
#[derive(Debug, Error)]
pub enum ImageError {
    #[error("not a roam checkpoint image (bad magic)")]
    NotAnImage,
    #[error(
        "image format version {found}, newer than this roam reads ({VERSION}): use a newer roam"
    )]
    TooNew { found: u32 },
    #[error("image flags {0:#x} are unknown to this roam")]
    UnknownFlags(u32),
    #[error("image truncated at byte {at} (inside {what}): it was not written completely")]
    Truncated { at: u64, what: &'static str },
    #[error("image corrupt: section {index} (kind {kind}) at byte {at} fails its checksum")]
    Checksum { index: u64, kind: u32, at: u64 },
    #[error("image corrupt: section {index} at byte {at} claims {len} bytes")]
    TooLarge { index: u64, at: u64, len: u64 },
    #[error("image corrupt: it ends with {found} sections counted, {counted} read")]
    Count { found: u64, counted: u64 },
    #[error("image corrupt: bytes after its end section")]
    Trailing,
    #[error("image corrupt: {0}")]
    Pages(String),
    #[error("cannot read or write the image")]
    Io(#[from] io::Error),
}

/// One section: its kind (the engine's numbering) and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub kind: u32,
    pub payload: Vec<u8>,
}

/// CRC-32 (IEEE 802.3, as zlib; crc32fast: carry-less multiplication
/// where the CPU has it, many GB/s, so checksums cost little beside the
/// copy of the memory itself).
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// A section's checksum: its kind and length as written, then its payload.
fn section_crc(kind: u32, len: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&kind.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.combine(&crc_of(payload));
    h.finalize()
}

/// Payloads larger than this are checksummed by two threads, a half each
/// (the halves' checksums combined): a mapped image's pages are faulted in
/// by the first pass over them, which the checksum is.
const CRC_IN_TWO_ABOVE: usize = 16 << 20;

/// The CRC-32 state of `data` (to be combined).
pub(crate) fn crc_of(data: &[u8]) -> crc32fast::Hasher {
    let mut first = crc32fast::Hasher::new();
    if data.len() <= CRC_IN_TWO_ABOVE {
        first.update(data);
        return first;
    }
    let (a, b) = data.split_at(data.len() / 2);
    let second = std::thread::scope(|s| {
        let other = s.spawn(|| {
            let mut h = crc32fast::Hasher::new();
            h.update(b);
            h
        });
        first.update(a);
        other.join()
    });
    match second {
        Ok(second) => first.combine(&second),
        // Cannot happen (hashing does not panic); done here then.
        Err(_) => first.update(b),
    }
    first
}

/// Takes the pieces of a streamed section, each with its CRC-32 state if
/// known (see [`Writer::section_streamed`]).
pub type PieceSink<'a> = dyn FnMut(&[u8], Option<&crc32fast::Hasher>) -> io::Result<()> + 'a;

/// Writes an image: the header at once, then sections, then the end.
pub struct Writer<W: Write> {
    w: W,
    sections: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(mut w: W) -> io::Result<Writer<W>> {
        w.write_all(&MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?;
        Ok(Writer { w, sections: 0 })
    }

    /// Appends a section.
    pub fn section(&mut self, kind: u32, payload: &[u8]) -> io::Result<()> {
        assert_ne!(kind, END, "END is written by finish");
        self.raw(kind, payload)?;
        self.sections += 1;
        Ok(())
    }

    /// Appends a section whose payload `fill` produces piece by piece
    /// (given a sink for the pieces), its length and checksum unknown until
    /// the end: the header is written last, in its place. Each piece may
    /// come with its CRC-32 state (computed where it was made, on another
    /// thread), else it is computed here. Returns what `fill` returns.
    pub fn section_streamed<T>(
        &mut self,
        kind: u32,
        fill: impl FnOnce(&mut PieceSink<'_>) -> io::Result<T>,
    ) -> io::Result<T>
    where
        W: Seek,
    {
        assert_ne!(kind, END, "END is written by finish");
        let head = self.w.stream_position()?;
        self.w.write_all(&[0u8; 16])?;
        let mut crc = crc32fast::Hasher::new();
        let mut len = 0u64;
        let out = fill(&mut |piece: &[u8], piece_crc: Option<&crc32fast::Hasher>| {
            match piece_crc {
                Some(h) => crc.combine(h),
                None => crc.update(piece),
            }
            len += piece.len() as u64;
            self.w.write_all(piece)
        })?;
        // The checksum covers kind and length before the payload: the
        // payload's, computed first, is appended to theirs.
        let mut whole = crc32fast::Hasher::new();
        whole.update(&kind.to_le_bytes());
        whole.update(&len.to_le_bytes());
        whole.combine(&crc);
        let end = self.w.stream_position()?;
        self.w.seek(io::SeekFrom::Start(head))?;
        self.w.write_all(&kind.to_le_bytes())?;
        self.w.write_all(&len.to_le_bytes())?;
        self.w.write_all(&whole.finalize().to_le_bytes())?;
        self.w.seek(io::SeekFrom::Start(end))?;
        self.sections += 1;
        Ok(out)
    }

    fn raw(&mut self, kind: u32, payload: &[u8]) -> io::Result<()> {
        self.w.write_all(&kind.to_le_bytes())?;
        self.w.write_all(&(payload.len() as u64).to_le_bytes())?;
        let crc = section_crc(kind, payload.len() as u64, payload);
        self.w.write_all(&crc.to_le_bytes())?;
        self.w.write_all(payload)
    }

    /// Writes the end section; the image is complete.
    pub fn finish(mut self) -> io::Result<W> {
        let n = self.sections.to_le_bytes();
        self.raw(END, &n)?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// An image made of `sections` without copying their payloads: the pieces
/// whose concatenation is the image [`Writer`] writes (headers between the
/// payloads, moved in). For an image sent rather than stored.
pub fn into_pieces(sections: Vec<Section>) -> io::Result<Vec<Vec<u8>>> {
    let n = sections.len() as u64;
    let mut pieces = Vec::with_capacity(2 * sections.len() + 2);
    let mut head = Writer::new(Vec::with_capacity(64))?.w;
    for s in sections {
        assert_ne!(s.kind, END, "END is written here");
        let len = s.payload.len() as u64;
        head.extend_from_slice(&s.kind.to_le_bytes());
        head.extend_from_slice(&len.to_le_bytes());
        head.extend_from_slice(&section_crc(s.kind, len, &s.payload).to_le_bytes());
        pieces.push(std::mem::replace(&mut head, Vec::with_capacity(16)));
        pieces.push(s.payload);
    }
    let mut end = Writer {
        w: head,
        sections: 0,
    };
    end.raw(END, &n.to_le_bytes())?;
    pieces.push(end.w);
    Ok(pieces)
}

/// A file written under a temporary name (`NAME.partial`) and renamed to
/// its name only once complete and synced ([`AtomicFile::commit`]);
/// dropped uncommitted, the temporary file goes: a failure (a full disk)
/// leaves nothing at the name that looks like an image.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    w: Option<io::BufWriter<std::fs::File>>,
}

impl AtomicFile {
    pub fn create(path: &Path) -> io::Result<AtomicFile> {
        let mut tmp = PathBuf::from(path);
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        tmp.set_file_name(name);
        let f = std::fs::File::create(&tmp)?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
            w: Some(io::BufWriter::with_capacity(1 << 20, f)),
        })
    }

    /// Syncs the file and gives it its name.
    pub fn commit(mut self) -> io::Result<()> {
        let w = self.w.take().expect("written until committed");
        let result = w
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&self.tmp, &self.path));
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        result
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.as_mut().expect("written until committed").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.as_mut().expect("written until committed").flush()
    }
}

impl Seek for AtomicFile {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.w.as_mut().expect("written until committed").seek(pos)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.w.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes an image at `path` through `fill`, atomically (see
/// [`AtomicFile`]).
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut Writer<AtomicFile>) -> io::Result<()>,
) -> io::Result<()> {
    let mut w = Writer::new(AtomicFile::create(path)?)?;
    fill(&mut w)?;
    w.finish()?.commit()
}

/// Reads exactly `buf.len()` bytes, or says where the image was cut.
fn fill(r: &mut impl Read, buf: &mut [u8], at: u64, what: &'static str) -> Result<(), ImageError> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => {
                return Err(ImageError::Truncated {
                    at: at + done as u64,
                    what,
                })
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads and checks a whole image: magic, version, every checksum, the
/// end section's count, nothing after it.
pub fn read(r: impl Read) -> Result<Vec<Section>, ImageError> {
    read_sized(r, None)
}

/// [`read`], told the image's size (a file's): each payload is allocated
/// once, at most what is left of the image, instead of grown as read.
pub fn read_sized(mut r: impl Read, size: Option<u64>) -> Result<Vec<Section>, ImageError> {
    read_header(&mut r)?;
    let mut at = 16u64;
    let mut out = Vec::new();
    loop {
        let index = out.len() as u64;
        let s = read_section(&mut r, &mut at, index, size)?;
        if s.kind == END {
            let found = u64::from_le_bytes(s.payload[..].try_into().expect("8 bytes"));
            if found != index {
                return Err(ImageError::Count {
                    found,
                    counted: index,
                });
            }
            let mut extra = [0u8; 1];
            if r.read(&mut extra)? != 0 {
                return Err(ImageError::Trailing);
            }
            return Ok(out);
        }
        out.push(s);
    }
}

/// The header and the first section of an image (its metadata), checked,
/// without reading the rest.
pub fn read_first(mut r: impl Read) -> Result<Section, ImageError> {
    read_header(&mut r)?;
    read_section(&mut r, &mut 16, 0, None)
}

/// Magic, version, flags.
fn read_header(r: &mut impl Read) -> Result<(), ImageError> {
    let mut head = [0u8; 16];
    fill(r, &mut head, 0, "the header")?;
    if head[..8] != MAGIC {
        return Err(ImageError::NotAnImage);
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if version > VERSION {
        return Err(ImageError::TooNew { found: version });
    }
    if version == 0 {
        return Err(ImageError::NotAnImage);
    }
    let flags = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
    if flags != 0 {
        return Err(ImageError::UnknownFlags(flags));
    }
    Ok(())
}

/// Section number `index`, at offset `at` (moved past it), its checksum
/// checked.
fn read_section(
    r: &mut impl Read,
    at: &mut u64,
    index: u64,
    size: Option<u64>,
) -> Result<Section, ImageError> {
    let mut h = [0u8; 16];
    fill(r, &mut h, *at, "a section header")?;
    let (kind, len, crc) = section_header(&h, *at, index)?;
    let start = *at;
    *at += 16;
    // A bogus length cannot make us allocate it: at most what the image
    // holds, else grown as it is read.
    let room = size.map_or(0, |s| len.min(s.saturating_sub(*at)));
    let mut payload = Vec::with_capacity(room as usize);
    roam_sys::mem::huge_pages_for(&mut payload);
    let got = r.take(len).read_to_end(&mut payload)?;
    if (got as u64) < len {
        return Err(ImageError::Truncated {
            at: *at + got as u64,
            what: "a section",
        });
    }
    *at += len;
    if section_crc(kind, len, &payload) != crc {
        return Err(ImageError::Checksum {
            index,
            kind,
            at: start,
        });
    }
    Ok(Section { kind, payload })
}

/// A section header's kind, length and checksum, the length checked.
fn section_header(h: &[u8; 16], at: u64, index: u64) -> Result<(u32, u64, u32), ImageError> {
    let kind = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(h[4..12].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes"));
    if len > MAX_SECTION || (kind == END && len != 8) {
        return Err(ImageError::TooLarge { index, at, len });
    }
    Ok((kind, len, crc))
}

/// Checks a whole image held in memory (a mapped file) as [`read`] does,
/// without copying it: each section's kind and the range of its payload
/// in `image`.
pub fn index(image: &[u8]) -> Result<Vec<(u32, Range<usize>)>, ImageError> {
    read_header(&mut &image[..])?;
    let mut at = 16usize;
    let mut out = Vec::new();
    loop {
        let index = out.len() as u64;
        let h: &[u8; 16] = image
            .get(at..at + 16)
            .and_then(|h| h.try_into().ok())
            .ok_or(ImageError::Truncated {
                at: image.len() as u64,
                what: "a section header",
            })?;
        let (kind, len, crc) = section_header(h, at as u64, index)?;
        let start = at + 16;
        let range = start..start.saturating_add(len as usize);
        let payload = image.get(range.clone()).ok_or(ImageError::Truncated {
            at: image.len() as u64,
            what: "a section",
        })?;
        if section_crc(kind, len, payload) != crc {
            return Err(ImageError::Checksum {
                index,
                kind,
                at: at as u64,
            });
        }
        at = range.end;
        if kind == END {
            let found = u64::from_le_bytes(payload.try_into().expect("8 bytes"));
            if found != index {
                return Err(ImageError::Count {
                    found,
                    counted: index,
                });
            }
            if at != image.len() {
                return Err(ImageError::Trailing);
            }
            return Ok(out);
        }
        out.push((kind, range));
    }
}

/// Encodes memory pages for a section: `pages` gives (address, one page)
/// in increasing address order; zero pages are left out and contiguous
/// pages stored as one run (`address u64 | pages u32 | bytes`).
pub fn encode_pages<'a>(pages: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    // (offset of the run's page count in `out`, next address, pages).
    let mut run: Option<(usize, u64, u32)> = None;
    for (addr, page) in pages {
        assert_eq!(page.len(), PAGE, "whole pages");
        if is_zero(page) {
            continue;
        }
        match &mut run {
            Some((_, next, n)) if *next == addr => {
                *next += PAGE as u64;
                *n += 1;
            }
            _ => {
                if let Some((at, _, n)) = run.take() {
                    out[at..at + 4].copy_from_slice(&n.to_le_bytes());
                }
                out.extend_from_slice(&addr.to_le_bytes());
                let at = out.len();
                out.extend_from_slice(&0u32.to_le_bytes());
                run = Some((at, addr + PAGE as u64, 1));
            }
        }
        out.extend_from_slice(page);
    }
    if let Some((at, _, n)) = run {
        out[at..at + 4].copy_from_slice(&n.to_le_bytes());
    }
    out
}

/// Whether a page is all zero (word by word: most pages are told apart by
/// their first word).
pub fn is_zero(page: &[u8]) -> bool {
    page.chunks_exact(8)
        .all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == 0)
}

/// One run of stored pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRun<'a> {
    pub addr: u64,
    pub data: &'a [u8],
}

/// Decodes what [`encode_pages`] made: runs in increasing, page-aligned,
/// non-overlapping order, or an error.
pub fn decode_pages(mut b: &[u8]) -> Result<Vec<PageRun<'_>>, ImageError> {
    let bad = |m: &str| ImageError::Pages(m.to_string());
    let mut out = Vec::new();
    let mut min = 0u64;
    while !b.is_empty() {
        if b.len() < 12 {
            return Err(bad("a page run header is cut"));
        }
        let addr = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let n = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        let len = n as usize * PAGE;
        if n == 0 || addr % PAGE as u64 != 0 || addr < min {
            return Err(bad("page runs out of order, empty or unaligned"));
        }
        if b.len() - 12 < len {
            return Err(bad("a page run is cut"));
        }
        min = addr
            .checked_add(len as u64)
            .ok_or_else(|| bad("a page run past the end of memory"))?;
        out.push(PageRun {
            addr,
            data: &b[12..12 + len],
        });
        b = &b[12 + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(sections: &[(u32, &[u8])]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new()).unwrap();
        for (k, p) in sections {
            w.section(*k, p).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_large_payload_checksummed_in_two_halves_is_its_crc() {
        let big: Vec<u8> = (0..CRC_IN_TWO_ABOVE + 12_345)
            .map(|i| (i * 31 % 253) as u8)
            .collect();
        assert_eq!(crc_of(&big).finalize(), crc32(&big));
        assert_eq!(crc_of(b"123456789").finalize(), 0xCBF4_3926);
    }

    #[test]
    fn sections_round_trip() {
        let big = vec![7u8; 100_000];
        let img = image(&[(1, b"meta"), (2, b""), (3, &big)]);
        let s = read(&img[..]).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0],
            Section {
                kind: 1,
                payload: b"meta".to_vec()
            }
        );
        assert_eq!(s[1].payload, b"");
        assert_eq!(s[2].payload, big);
        assert!(read(&image(&[])[..]).unwrap().is_empty());
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_refused() {
        let img = image(&[(1, b"meta data"), (4, &[1, 2, 3, 4, 5])]);
        for cut in 0..img.len() {
            let e = read(&img[..cut]).unwrap_err();
            assert!(
                matches!(e, ImageError::Truncated { .. } | ImageError::NotAnImage),
                "cut at {cut}: {e}"
            );
        }
        for i in 0..img.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = img.clone();
                bad[i] ^= bit;
                assert!(
                    read(&bad[..]).is_err(),
                    "byte {i} bit {bit:#x} went unnoticed"
                );
            }
        }
        let mut longer = img.clone();
        longer.push(0);
        assert!(matches!(read(&longer[..]), Err(ImageError::Trailing)));
    }

    #[test]
    fn an_image_in_memory_is_indexed_and_checked_as_one_read() {
        let img = image(&[(1, b"meta data"), (4, &[1, 2, 3, 4, 5]), (9, b"")]);
        let idx = index(&img).unwrap();
        let sections = read(&img[..]).unwrap();
        assert_eq!(idx.len(), sections.len());
        for ((kind, range), s) in idx.iter().zip(&sections) {
            assert_eq!((*kind, &img[range.clone()]), (s.kind, &s.payload[..]));
        }
        for cut in 0..img.len() {
            assert!(index(&img[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..img.len() {
            let mut bad = img.clone();
            bad[i] ^= 0x40;
            assert!(index(&bad).is_err(), "byte {i} went unnoticed");
        }
        let mut longer = img.clone();
        longer.push(0);
        assert!(matches!(index(&longer), Err(ImageError::Trailing)));
        let mut huge = img.clone();
        huge[20..28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(index(&huge), Err(ImageError::TooLarge { .. })));
    }

    #[test]
    fn a_streamed_section_is_the_section_written_at_once() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let mut w = Writer::new(io::Cursor::new(Vec::new())).unwrap();
        w.section(1, b"meta").unwrap();
        let pieces = w
            .section_streamed(3, |sink| {
                for (i, piece) in big.chunks(65_536).enumerate() {
                    // Some pieces with their checksum, some without.
                    let mut h = crc32fast::Hasher::new();
                    h.update(piece);
                    sink(piece, (i % 2 == 0).then_some(&h))?;
                }
                Ok(big.chunks(65_536).count())
            })
            .unwrap();
        assert_eq!(pieces, 5);
        w.section_streamed(4, |_| Ok(())).unwrap();
        let streamed = w.finish().unwrap().into_inner();
        assert_eq!(streamed, image(&[(1, b"meta"), (3, &big), (4, b"")]));
    }

    #[test]
    fn an_image_in_pieces_is_the_image_written_at_once() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let sections = vec![
            Section {
                kind: 1,
                payload: b"meta".to_vec(),
            },
            Section {
                kind: 3,
                payload: big.clone(),
            },
            Section {
                kind: 4,
                payload: Vec::new(),
            },
        ];
        let pieces = into_pieces(sections).unwrap();
        // The payloads are moved in, not copied.
        assert!(pieces.iter().any(|p| p.len() == big.len()));
        assert_eq!(pieces.concat(), image(&[(1, b"meta"), (3, &big), (4, b"")]));
        assert_eq!(into_pieces(Vec::new()).unwrap().concat(), image(&[]));
    }

    #[test]
    fn a_newer_version_and_huge_lengths_are_clear_errors() {
        let mut img = image(&[(1, b"x")]);
        img[8..12].copy_from_slice(&2u32.to_le_bytes());
        let e = read(&img[..]).unwrap_err();
        assert!(matches!(e, ImageError::TooNew { found: 2 }), "{e}");
        assert!(e.to_string().contains("newer roam"), "{e}");
        let mut img = image(&[(1, b"x")]);
        img[20..28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(read(&img[..]), Err(ImageError::TooLarge { .. })));
        assert!(matches!(
            read(&b"ELF\x7fjunkjunkjunk"[..]),
            Err(ImageError::NotAnImage)
        ));
    }

    #[test]
    fn pages_leave_zeros_out_and_merge_runs() {
        let a = vec![1u8; PAGE];
        let z = vec![0u8; PAGE];
        let b = vec![2u8; PAGE];
        let pages = [
            (0x1000u64, &a[..]),
            (0x2000, &b[..]),
            (0x3000, &z[..]),
            (0x4000, &a[..]),
            (0x9000, &b[..]),
        ];
        let enc = encode_pages(pages);
        let runs = decode_pages(&enc).unwrap();
        assert_eq!(runs.len(), 3);
        assert_eq!((runs[0].addr, runs[0].data.len()), (0x1000, 2 * PAGE));
        assert_eq!(&runs[0].data[PAGE..], &b[..]);
        assert_eq!((runs[1].addr, runs[1].data.len()), (0x4000, PAGE));
        assert_eq!(runs[2].addr, 0x9000);
        assert_eq!(enc.len(), 3 * 12 + 4 * PAGE, "zero page stored");
        assert!(decode_pages(&encode_pages([(0x1000, &z[..])]))
            .unwrap()
            .is_empty());
        for cut in 1..enc.len() {
            let _ = decode_pages(&enc[..cut]);
        }
        assert!(decode_pages(&enc[..13]).is_err());
        let mut out_of_order = encode_pages([(0x5000u64, &a[..])]);
        out_of_order.extend(encode_pages([(0x1000u64, &a[..])]));
        assert!(decode_pages(&out_of_order).is_err());
    }

    #[test]
    fn an_atomic_write_that_fails_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("roam-img-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("img");
        let r = write_atomically(&path, |w| {
            w.section(1, b"half")?;
            Err(io::Error::other("disk full"))
        });
        assert!(r.is_err());
        assert!(!path.exists());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "temporary left"
        );
        write_atomically(&path, |w| w.section(1, b"whole")).unwrap();
        let s = read(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(s[0].payload, b"whole");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
