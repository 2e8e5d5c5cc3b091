#!/usr/bin/env bash
# Snapshot benchmark, run by hand (not in CI): the snapshot engine (through the
# `snapshot-cli` example of ci-warm-snapshot, release build) against cp -a, tar c | tar x and
# rsync -aHAXS on the same volume-like dataset, in one run.
#
#   bench/snapshot-bench.sh [WORKDIR]     (default /var/tmp/ci-warm-bench; must not be a tmpfs)
#
# Env: BENCH_SMALL_FILES (default 20000), BENCH_BIG_MIB (default 400),
#      CARGO_TARGET_DIR (default: the workspace's target/).
#
# Prints wall times and ratios (snapshot engine / baseline; lower is better) for: first
# snapshot, re-snapshot after changing 1% of the files, full restore into an empty dir,
# restore onto an unchanged target, and verify throughput. Targets: first <= 1.0x cp -a;
# re-snapshot <= 0.05x cp -a; restore-unchanged <= 0.05x cp -a; full restore <= 1.0x cp -a;
# verify >= 1 GB/s. The page cache is dropped before every timed phase when possible.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/var/tmp/ci-warm-bench}
small=${BENCH_SMALL_FILES:-20000}
big_mib=${BENCH_BIG_MIB:-400}
target_dir=${CARGO_TARGET_DIR:-$PWD/target}

if [ "$(stat -f -c %T "$(dirname "$work")")" = tmpfs ]; then
  echo "$work is on a tmpfs: pick a directory on a real disk" >&2
  exit 2
fi

echo "== building the snapshot-cli example (release)"
CARGO_TARGET_DIR=$target_dir cargo build --quiet --release -p ci-warm-snapshot --example snapshot-cli
cli=$target_dir/release/examples/snapshot-cli

rm -rf "$work"; mkdir -p "$work"
src=$work/src
echo "== generating the dataset in $src"
mkdir -p "$src/db" "$src/files"
head -c "$((big_mib << 20))" /dev/urandom > "$src/db/big.bin"
python3 - "$src/files" "$small" <<'PY'
import os, sys, random
root, n = sys.argv[1], int(sys.argv[2])
random.seed(1)
for i in range(n):
    d = os.path.join(root, f"{i % 200:03d}", f"{(i // 200) % 10}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
        f.write(os.urandom(random.randint(200, 8000)))
PY
truncate -s 1G "$src/db/sparse.img"
for off in 0 300 700 1023; do
  head -c 65536 /dev/urandom | dd of="$src/db/sparse.img" bs=1M seek="$off" conv=notrunc status=none
done
ln -s db/big.bin "$src/link-to-big"
ln -s /etc/passwd "$src/outside"
ln -s no/such/target "$src/dangling"
for i in 0 1 2 3 4 5 6 7 8 9; do ln "$src/files/00$i/0/f00000$i" "$src/hardlink-$i"; done
echo "   $(du -sh --apparent-size "$src" | cut -f1) apparent, $(du -sh "$src" | cut -f1) allocated, $(find "$src" | wc -l) entries"

can_drop=yes
sync
if ! (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; then can_drop=no; fi
drop_caches() {
  sync
  if [ "$can_drop" = yes ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}
t() { # wall seconds of a command and of flushing what it wrote (the engine fsyncs; cp, tar
      # and rsync do not, so a final sync is timed for every one), caches dropped first
  drop_caches
  local s e
  s=$(date +%s.%N)
  "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; exit 1; }
  sync
  e=$(date +%s.%N)
  echo "$e - $s" | bc -l
}
if [ "$can_drop" = yes ]; then
  cache_note="page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before each phase"
else
  cache_note="page cache could NOT be dropped (no write access to /proc/sys/vm/drop_caches): warm-cache numbers"
fi

echo "== baselines: full copies"
cp_t=$(t cp -a "$src" "$work/cp")
tar_t=$(t bash -c "mkdir -p '$work/tar' && tar -C '$src' --xattrs --acls -cf - . | tar -C '$work/tar' --xattrs --acls -xf -")
rsync_t=$(t rsync -aHAXS "$src/" "$work/rsync/")
rm -rf "$work/cp" "$work/tar"

echo "== snapshot engine: first snapshot"
first_t=$(t "$cli" take "$src" "$work/app")

echo "== changing 1% of the files"
find "$src/files" -type f | awk 'NR % 100 == 0' | while read -r f; do echo changed >> "$f"; done
re_t=$(t "$cli" take "$src" "$work/app")
rsync_re_t=$(t rsync -aHAXS --delete "$src/" "$work/rsync/")
cp_re_t=$(t cp -a "$src" "$work/cp2")
rm -rf "$work/cp2"

echo "== restores"
full_t=$(t "$cli" restore "$work/app/snapshot" data "$work/restored")
unchanged_t=$(t "$cli" restore "$work/app/snapshot" data "$work/restored")
rsync_same_t=$(t rsync -aHAXS --delete "$src/" "$work/rsync/")
echo "   checking the restore: rsync -naHAXc --delete src/ restored/"
diffs=$(rsync -naHAXc --delete --numeric-ids --itemize-changes "$src/" "$work/restored/" | wc -l)

echo "== verify"
verify_t=$(t "$cli" verify "$work/app/snapshot")
verify_line=$(cat "$work/last.err")
# The same again with the snapshot in the page cache: the engine's own hashing throughput,
# where the cold number above is bounded by the disk's read speed.
sw=$(date +%s.%N)
"$cli" verify "$work/app/snapshot" >/dev/null 2>"$work/last.err"
verify_warm_t=$(echo "$(date +%s.%N) - $sw" | bc -l)
apparent=$(du -s --apparent-size --block-size=1 "$work/app/snapshot/volumes" | cut -f1)
allocated=$(du -s --block-size=1 "$work/app/snapshot/volumes" | cut -f1)
# GB/s of file size (holes included, as the engine reports it) and of data actually read.
verify_gbps=$(echo "scale=2; $apparent / $verify_t / 1000000000" | bc -l | sed 's/^\./0./')
verify_data_gbps=$(echo "scale=2; $allocated / $verify_t / 1000000000" | bc -l | sed 's/^\./0./')
verify_warm_gbps=$(echo "scale=2; $apparent / $verify_warm_t / 1000000000" | bc -l | sed 's/^\./0./')

ratio() { echo "scale=3; $1 / $2" | bc -l | sed 's/^\./0./'; }
verdict() { # value op target
  if [ "$(echo "$1 $2 $3" | bc -l)" = 1 ]; then echo ok; else echo MISSED; fi
}
echo
echo "($cache_note)"
echo "dataset: $(du -sh --apparent-size "$src" | cut -f1) apparent, $(find "$src" | wc -l) entries; restore check: $diffs rsync difference line(s)"
printf '%-34s %8s\n' "baseline" "seconds"
printf '%-34s %8.2f\n' "cp -a (full copy)" "$cp_t" "tar c | tar x (full copy)" "$tar_t" "rsync -aHAXS (full copy)" "$rsync_t" \
  "rsync update after 1% changed" "$rsync_re_t" "rsync onto an unchanged copy" "$rsync_same_t"
echo
printf '%-34s %8s  %-44s %s\n' phase seconds "ratios (engine / baseline)" target
r=$(ratio "$first_t" "$cp_t")
printf '%-34s %8.2f  %-44s %s\n' "first snapshot" "$first_t" "cp ${r}x  tar $(ratio "$first_t" "$tar_t")x  rsync $(ratio "$first_t" "$rsync_t")x" "<= 1.0x cp -a: $(verdict "$r" "<=" 1.0)"
r=$(ratio "$re_t" "$cp_t")
printf '%-34s %8.2f  %-44s %s\n' "re-snapshot, 1% changed" "$re_t" "cp ${r}x  rsync-update $(ratio "$re_t" "$rsync_re_t")x" "<= 0.05x cp -a: $(verdict "$r" "<=" 0.05)"
r=$(ratio "$full_t" "$cp_t")
printf '%-34s %8.2f  %-44s %s\n' "full restore (empty target)" "$full_t" "cp ${r}x  tar $(ratio "$full_t" "$tar_t")x  rsync $(ratio "$full_t" "$rsync_t")x" "<= 1.0x cp -a: $(verdict "$r" "<=" 1.0)"
r=$(ratio "$unchanged_t" "$cp_t")
printf '%-34s %8.2f  %-44s %s\n' "restore onto unchanged target" "$unchanged_t" "cp ${r}x  rsync-same $(ratio "$unchanged_t" "$rsync_same_t")x" "<= 0.05x cp -a: $(verdict "$r" "<=" 0.05)"
printf '%-34s %8.2f  %-44s %s\n' "verify" "$verify_t" "${verify_gbps} GB/s (data read: ${verify_data_gbps} GB/s)" ">= 1 GB/s: $(verdict "${verify_gbps:-0}" ">=" 1)"
printf '%-34s %8.2f  %-44s %s\n' "verify, warm page cache" "$verify_warm_t" "${verify_warm_gbps} GB/s" ">= 1 GB/s: $(verdict "${verify_warm_gbps:-0}" ">=" 1)"
echo "   ($verify_line)"
# What no incremental design can beat on this disk: walking the tree cold, and making a
# hardlink tree of it (what an incremental take and restore must at least do).
drop_caches; sw=$(date +%s.%N); find "$src" -printf '%i %s %T@ %C@\n' >/dev/null
walk_t=$(echo "$(date +%s.%N) - $sw" | bc -l)
link_t=$(t cp -al "$work/app/snapshot" "$work/linktree")
printf '%-34s %8.2f  %-44s\n' "floor: cold metadata walk (find)" "$walk_t" "cp $(ratio "$walk_t" "$cp_t")x"
printf '%-34s %8.2f  %-44s\n' "floor: hardlink tree (cp -al)" "$link_t" "cp $(ratio "$link_t" "$cp_t")x"
rm -rf "$work"
