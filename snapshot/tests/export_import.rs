//! Export -> import round trip, a hostile archive, and the Python prototype's layout.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use ci_warm_snapshot::{
    Reserve, TakeRequest, export, import, import_legacy, restore, take, verify,
};

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::write(root.join("marker"), "created by 1.0.0\n").unwrap();
    std::fs::write(root.join("sub/deeper/big"), vec![7u8; 300_000]).unwrap();
    std::fs::hard_link(root.join("marker"), root.join("sub/marker-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("outside")).unwrap();
    std::fs::set_permissions(root.join("sub"), std::fs::Permissions::from_mode(0o1770)).unwrap();
    std::os::unix::fs::chown(root.join("marker"), Some(4242), Some(4343)).unwrap();
    let ok = Command::new("setfattr")
        .args(["-n", "user.demo", "-v", "yes"])
        .arg(root.join("sub/deeper/big"))
        .status()
        .unwrap();
    assert!(ok.success());
}

fn rsync_clean(a: &Path, b: &Path) {
    let out = Command::new("rsync")
        .args(["-naHAXc", "--numeric-ids", "--delete", "--itemize-changes"])
        .arg(format!("{}/", a.display()))
        .arg(format!("{}/", b.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let changes = String::from_utf8_lossy(&out.stdout);
    assert!(changes.trim().is_empty(), "differences:\n{changes}");
}

#[test]
fn export_import_round_trip_is_exact() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    tree(&src);
    let a = d.path().join("a");
    take(&TakeRequest {
        parent: a.clone(),
        sources: vec![("data".into(), src.clone())],
        reserve: Reserve::default(),
    })
    .unwrap();
    let mut stream = Vec::new();
    export(&a.join("snapshot"), &mut stream).unwrap();

    let b = d.path().join("b");
    import(&b, stream.as_slice()).unwrap();
    assert!(verify(&b.join("snapshot")).unwrap().problems.is_empty());
    rsync_clean(&src, &b.join("snapshot/volumes/data"));
    let target = d.path().join("target");
    restore(&b.join("snapshot"), "data", &target).unwrap();
    rsync_clean(&src, &target);
    let m = std::fs::metadata(target.join("marker")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.nlink()), (4242, 4343, 2));
}

#[test]
fn a_tampered_archive_never_replaces_a_good_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    tree(&src);
    let a = d.path().join("a");
    take(&TakeRequest {
        parent: a.clone(),
        sources: vec![("data".into(), src)],
        reserve: Reserve::default(),
    })
    .unwrap();
    let mut stream = Vec::new();
    export(&a.join("snapshot"), &mut stream).unwrap();
    // Flip the content of the 300 kB file (a run of 7s) inside the archive.
    let pos = stream
        .windows(64)
        .position(|w| w.iter().all(|b| *b == 7))
        .unwrap();
    stream[pos + 10] = 8;
    // Importing over the existing good snapshot must fail and keep it.
    assert!(import(&a, stream.as_slice()).is_err());
    assert!(verify(&a.join("snapshot")).unwrap().problems.is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn archive_paths_cannot_escape() {
    let d = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    // tar's own append refuses "..", so write the name into the header by hand.
    h.as_old_mut().name[..12].copy_from_slice(b"../../escape");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let bytes = b.into_inner().unwrap();
    let e = import(&d.path().join("app"), bytes.as_slice()).unwrap_err();
    assert!(e.to_string().contains("unsafe path"), "{e}");
    assert!(!d.path().join("escape").exists());
}

#[test]
fn prototype_layout_is_imported_with_nothing_lost() {
    let d = tempfile::tempdir().unwrap();
    let app = d.path().join("keycloak");
    let src = d.path().join("src");
    tree(&src);
    std::fs::create_dir_all(app.join("snapshot/volumes")).unwrap();
    let st = Command::new("tar")
        .args(["--xattrs", "--numeric-owner", "-cf"])
        .arg(app.join("snapshot/volumes/data.tar"))
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(
        app.join("snapshot/meta.json"),
        r#"{"version": "10.1.0+26.0.5", "taken": 1}"#,
    )
    .unwrap();
    std::fs::write(app.join("last_good"), "10.1.0+26.0.5\n").unwrap();

    let r = import_legacy(&app).unwrap();
    assert_eq!(r.last_good.as_deref(), Some("10.1.0+26.0.5"));
    assert_eq!(r.volumes, ["data"]);
    assert!(verify(&app.join("snapshot")).unwrap().problems.is_empty());
    assert!(app.join("snapshot/legacy-meta.json").exists());
    assert!(
        app.join("legacy-snapshot/volumes/data.tar").exists(),
        "the prototype's files are kept"
    );
    let target = d.path().join("restored");
    restore(&app.join("snapshot"), "data", &target).unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("marker")).unwrap(),
        "created by 1.0.0\n"
    );
    assert_eq!(
        std::fs::metadata(target.join("marker")).unwrap().uid(),
        4242
    );
}
