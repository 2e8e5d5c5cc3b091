//! Format 2: a file with holes is recorded as its data segments, hashed piece by piece, so a
//! hole costs nothing to hash, copy or verify; tampering inside a segment or inside a hole is
//! caught all the same. Format-1 snapshots (every file hashed whole, holes as zeros) still
//! verify and restore.

mod common;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use ci_warm_snapshot::manifest::{self, Kind, Manifest};
use ci_warm_snapshot::{export, import, restore, take, verify};
use common::*;

const MIB: u64 = 1 << 20;

/// A sparse 64 MiB file with four 64 KiB data blocks, a big dense one (several pieces), a
/// file that is all hole, one with a hole at its end, and small ones.
fn build(src: &Path) {
    let mut rng = Rng(0x5eed);
    std::fs::create_dir_all(src.join("db")).unwrap();
    let sparse = std::fs::File::create(src.join("db/sparse.img")).unwrap();
    sparse.set_len(64 * MIB).unwrap();
    for off in [0, 5 * MIB, 17 * MIB + 65536, 64 * MIB - 65536] {
        sparse.write_all_at(&rng.bytes(65536), off).unwrap();
    }
    drop(sparse);
    std::fs::write(src.join("db/dense.bin"), rng.bytes(40 * MIB as usize)).unwrap();
    std::fs::File::create(src.join("db/hole"))
        .unwrap()
        .set_len(3 * MIB)
        .unwrap();
    let tail = std::fs::File::create(src.join("db/tail")).unwrap();
    tail.write_all_at(&rng.bytes(10000), 0).unwrap();
    tail.set_len(8 * MIB).unwrap();
    drop(tail);
    for i in 0..10 {
        std::fs::write(src.join(format!("f{i}")), rng.bytes(500 + i * 300)).unwrap();
    }
    std::fs::hard_link(src.join("db/sparse.img"), src.join("sparse-link")).unwrap();
}

fn entry<'m>(m: &'m Manifest, rel: &str) -> &'m manifest::Entry {
    m.volume("data")
        .unwrap()
        .entries
        .iter()
        .find(|e| e.path.as_deref() == Some(rel))
        .unwrap()
}

fn problems(snap: &Path) -> Vec<String> {
    verify(snap)
        .unwrap()
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    build(&src);
    take(&req(&d.path().join("app"), "data", &src)).unwrap();
    let snap = d.path().join("app/snapshot");
    (d, src, snap)
}

#[test]
fn sparse_files_are_recorded_by_segment_and_round_trip() {
    let (d, src, snap) = setup();
    let m = Manifest::load(&snap).unwrap();
    assert_eq!(m.format, manifest::FORMAT);
    let sparse = entry(&m, "db/sparse.img");
    assert_eq!(
        sparse.data.as_deref(),
        Some(
            &[
                [0, 65536],
                [5 * MIB, 65536],
                [17 * MIB + 65536, 65536],
                [64 * MIB - 65536, 65536]
            ][..]
        )
    );
    assert_eq!(entry(&m, "db/hole").data.as_deref(), Some(&[][..]));
    assert_eq!(entry(&m, "db/tail").data.as_ref().map(Vec::len), Some(1));
    assert_eq!(
        entry(&m, "db/dense.bin").data.as_deref(),
        Some(&[[0, 40 * MIB]][..])
    );
    // Small dense files keep the whole-content hash of format 1.
    let f0 = entry(&m, "f0");
    assert_eq!(f0.data, None);
    assert_eq!(
        f0.sha256.as_deref(),
        Some(sha256_file(&src.join("f0")).as_str())
    );
    // A further name carries its first name's hash, never segments.
    let link = entry(&m, "sparse-link");
    assert!(link.link_of.is_some() && link.data.is_none());
    assert_eq!(link.sha256, sparse.sha256);

    // Verify reads the data, not the holes: 64 + 3 + 8 MiB of holes are never hashed.
    let report = verify(&snap).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(
        report.bytes_hashed < 42 * MIB,
        "hashed {} bytes",
        report.bytes_hashed
    );
    assert_same_snapshot(&src, &snap.join("volumes/data"), &[]);
    let vol = snap.join("volumes/data");
    assert!(
        std::fs::metadata(vol.join("db/sparse.img"))
            .unwrap()
            .blocks()
            * 512
            <= 2 * MIB,
        "the snapshot keeps the holes"
    );

    let target = d.path().join("target");
    restore(&snap, "data", &target).unwrap();
    assert_same(&src, &target, &[]);
    assert!(
        std::fs::metadata(target.join("db/sparse.img"))
            .unwrap()
            .blocks()
            * 512
            <= 2 * MIB
    );
    // Restoring onto itself checks content by the same scheme: nothing is rewritten.
    let again = restore(&snap, "data", &target).unwrap();
    assert_eq!(again.files_copied, 0, "{again:?}");

    // Through an archive and back: holes are zeros in the stream and holes again after.
    let mut tar = Vec::new();
    export(&snap, &mut tar).unwrap();
    let app2 = d.path().join("app2");
    import(&app2, tar.as_slice()).unwrap();
    let snap2 = app2.join("snapshot");
    assert!(problems(&snap2).is_empty());
    assert_same_snapshot(&src, &snap2.join("volumes/data"), &[]);
    assert!(
        std::fs::metadata(snap2.join("volumes/data/db/sparse.img"))
            .unwrap()
            .blocks()
            * 512
            <= 2 * MIB
    );
}

/// Writes `bytes` at `off`, keeping the mtime (only the ctime tells).
fn write_at(p: &Path, off: u64, bytes: &[u8]) {
    let md = std::fs::symlink_metadata(p).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, off).unwrap();
    drop(f);
    set_mtime(p, md.mtime(), md.mtime_nsec());
}

#[test]
fn a_byte_changed_inside_a_data_segment_is_caught() {
    let (_d, _src, snap) = setup();
    let p = snap.join("volumes/data/db/sparse.img");
    let mut b = [0u8];
    std::fs::File::open(&p)
        .unwrap()
        .read_exact_at(&mut b, 5 * MIB + 100)
        .unwrap();
    write_at(&p, 5 * MIB + 100, &[b[0] ^ 1]);
    let p = problems(&snap);
    assert!(
        p.iter()
            .any(|x| x.starts_with("data/db/sparse.img: sha256 mismatch")),
        "{p:?}"
    );
}

#[test]
fn data_written_into_a_hole_is_caught() {
    let (_d, _src, snap) = setup();
    write_at(&snap.join("volumes/data/db/sparse.img"), 30 * MIB, b"x");
    write_at(&snap.join("volumes/data/db/hole"), MIB, b"\x01");
    write_at(&snap.join("volumes/data/db/tail"), 7 * MIB, b"y");
    let p = problems(&snap);
    for f in ["db/sparse.img", "db/hole", "db/tail"] {
        assert!(
            p.iter().any(|x| x.starts_with(&format!("data/{f}: "))
                && x.contains("data where the manifest has a hole")),
            "{f}: {p:?}"
        );
    }
    assert_eq!(p.len(), 3, "{p:?}");
}

/// Zeros written into a hole allocate blocks but change no byte: the content is the same.
#[test]
fn zeros_written_into_a_hole_are_the_same_content() {
    let (_d, _src, snap) = setup();
    write_at(
        &snap.join("volumes/data/db/sparse.img"),
        30 * MIB,
        &[0; 8192],
    );
    assert!(problems(&snap).is_empty());
}

/// What the previous version wrote: format 1, every file hashed whole with its holes read as
/// zeros, no `data`. Made here from a take by rewriting its manifest the old way.
fn make_v1(snap: &Path) {
    let mut m = Manifest::load(snap).unwrap();
    m.format = 1;
    let vol = snap.join("volumes");
    for v in &mut m.volumes {
        let root = vol.join(&v.name);
        let shas: Vec<Option<String>> = v
            .entries
            .iter()
            .map(|e| {
                (e.kind == Kind::File && e.link_of.is_none())
                    .then(|| sha256_file(&root.join(e.rel())))
            })
            .collect();
        for i in 0..v.entries.len() {
            let e = &v.entries[i];
            let sha = match e.link_of {
                Some(f) => shas[f].clone(),
                None => shas[i].clone(),
            };
            let e = &mut v.entries[i];
            e.sha256 = sha;
            e.data = None;
        }
    }
    m.digest = manifest::digest(&m.volumes);
    std::fs::write(snap.join(manifest::FILE), serde_json::to_vec(&m).unwrap()).unwrap();
    std::fs::remove_dir_all(snap.join(".cache")).unwrap();
}

#[test]
fn a_format_1_snapshot_verifies_restores_and_is_reused() {
    let (d, src, snap) = setup();
    make_v1(&snap);
    let m = Manifest::load(&snap).unwrap();
    assert_eq!(m.format, 1);
    assert!(
        entry(&m, "db/sparse.img").data.is_none()
            && entry(&m, "db/sparse.img").sha256.as_deref()
                == Some(sha256_file(&src.join("db/sparse.img")).as_str())
    );
    assert!(problems(&snap).is_empty());
    let target = d.path().join("target");
    restore(&snap, "data", &target).unwrap();
    assert_same(&src, &target, &[]);
    let again = restore(&snap, "data", &target).unwrap();
    assert_eq!(again.files_copied, 0, "{again:?}");

    // Tampering in a format-1 snapshot is caught too (its holes are hashed as zeros).
    write_at(&snap.join("volumes/data/db/sparse.img"), 30 * MIB, b"x");
    let p = problems(&snap);
    assert!(
        p.iter()
            .any(|x| x.starts_with("data/db/sparse.img: sha256 mismatch")),
        "{p:?}"
    );
    write_at(&snap.join("volumes/data/db/sparse.img"), 30 * MIB, b"\0");
    assert!(problems(&snap).is_empty());

    // Nothing changed: the format-1 snapshot is exact and stays as it is.
    let s = take(&req(&d.path().join("app"), "data", &src)).unwrap();
    assert!(s.unchanged, "{s:?}");
    assert_eq!(Manifest::load(&snap).unwrap().format, 1);
    // The next take that has something to write writes format 2; the files it reuses keep
    // their format-1 hash, which still describes them exactly.
    std::fs::write(src.join("new"), b"new").unwrap();
    let s = take(&req(&d.path().join("app"), "data", &src)).unwrap();
    assert!(!s.unchanged);
    assert!(s.files_reused > 10, "{s:?}");
    let m = Manifest::load(&snap).unwrap();
    assert_eq!(m.format, manifest::FORMAT);
    assert!(problems(&snap).is_empty());
    assert_same_snapshot(&src, &snap.join("volumes/data"), &[]);
}

#[test]
fn a_format_1_manifest_with_segments_is_refused() {
    let (_d, _src, snap) = setup();
    let mut m = Manifest::load(&snap).unwrap();
    m.format = 1;
    m.digest = manifest::digest(&m.volumes);
    std::fs::write(snap.join(manifest::FILE), serde_json::to_vec(&m).unwrap()).unwrap();
    let err = Manifest::load(&snap).unwrap_err().to_string();
    assert!(err.contains("format-1 manifest with format-2"), "{err}");
}

#[test]
fn malformed_segments_are_named_by_verify() {
    let (_d, _src, snap) = setup();
    let mut m = Manifest::load(&snap).unwrap();
    let v = &mut m.volumes[0];
    let i = v
        .entries
        .iter()
        .position(|e| e.path.as_deref() == Some("db/sparse.img"))
        .unwrap();
    // Overlapping segments.
    v.entries[i].data = Some(vec![[0, 65536], [100, 65536]]);
    m.digest = manifest::digest(&m.volumes);
    std::fs::write(snap.join(manifest::FILE), serde_json::to_vec(&m).unwrap()).unwrap();
    let p = problems(&snap);
    assert!(
        p.iter()
            .any(|x| x.starts_with("data/db/sparse.img: ") && x.contains("data segment")),
        "{p:?}"
    );
}
