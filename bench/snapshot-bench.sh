#!/usr/bin/env bash
# Snapshot benchmark, run by hand (not in CI): ci-warm's snapshot engine against cp -a,
# tar c | tar x and rsync -aHAXS on the same volume-like dataset, in one run.
#
#   bench/snapshot-bench.sh [WORKDIR]     (default /var/tmp/ci-warm-bench; not a tmpfs)
#
# Prints wall times and ratios (ci-warm / baseline; lower is better) for: first snapshot,
# re-snapshot after changing 1% of files, full restore, restore onto an unchanged target, and
# verify throughput. Targets: first <= 1.0x cp -a; re-snapshot <= 0.05x; restore-unchanged
# <= 0.05x; full restore <= 1.0x; verify >= 1 GB/s.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/var/tmp/ci-warm-bench}
small=${BENCH_SMALL_FILES:-20000}
big_mib=${BENCH_BIG_MIB:-420}

cargo build --quiet --release --locked -p ci-warm
cw=$PWD/target/release/ci-warm
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
printf 'data' | dd of="$src/db/sparse.img" bs=1 seek=$((512 << 20)) conv=notrunc status=none
ln -s db/big.bin "$src/link-to-big"
ln -s /etc/passwd "$src/outside"
ln "$src/files/000/0/f000000" "$src/hardlink"
echo "   $(du -sh --apparent-size "$src" | cut -f1) apparent, $(find "$src" | wc -l) entries"

drop_caches() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; fi
}
t() { # seconds a command takes, caches dropped first
  drop_caches
  local s e
  s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
  echo "$e - $s" | bc -l
}
cache_note="page cache dropped before each phase"
[ -w /proc/sys/vm/drop_caches ] || cache_note="page cache could NOT be dropped (not root?): warm-cache numbers"

echo "== baselines"
cp_t=$(t cp -a "$src" "$work/cp")
tar_t=$(t bash -c "mkdir -p '$work/tar' && tar -C '$src' -cf - . | tar -C '$work/tar' -xf -")
rsync_t=$(t rsync -aHAXS "$src/" "$work/rsync/")
rm -rf "$work/cp" "$work/tar"

echo "== ci-warm"
first_t=$(t "$cw" snapshot dir take "$src" "$work/snap")
# Change 1% of the small files.
find "$src/files" -type f | awk 'NR % 100 == 0' | while read -r f; do echo changed >> "$f"; done
re_t=$(t "$cw" snapshot dir take "$src" "$work/snap")
rsync_re_t=$(t rsync -aHAXS --delete "$src/" "$work/rsync/")
full_t=$(t "$cw" snapshot dir restore "$work/snap" "$work/restored")
unchanged_t=$(t "$cw" snapshot dir restore "$work/snap" "$work/restored")
verify_out=$(drop_caches; "$cw" snapshot dir verify "$work/snap")
verify_gbps=$(echo "$verify_out" | sed -n 's/.*(\([0-9.]*\) GB\/s).*/\1/p')

ratio() { echo "scale=3; $1 / $2" | bc -l; }
echo
echo "($cache_note)"
printf '%-32s %8s  %s\n' phase seconds "ratios (ci-warm / baseline)"
printf '%-32s %8.2f  cp -a %.2f  tar %.2f  rsync %.2f\n' "cp -a / tar / rsync (full copy)" "$cp_t" 1 "$(ratio "$cp_t" "$tar_t")" "$(ratio "$cp_t" "$rsync_t")"
printf '%-32s %8.2f  vs cp -a %sx  vs tar %sx  vs rsync %sx   (target <= 1.0x cp -a)\n' "first snapshot" "$first_t" "$(ratio "$first_t" "$cp_t")" "$(ratio "$first_t" "$tar_t")" "$(ratio "$first_t" "$rsync_t")"
printf '%-32s %8.2f  vs cp -a %sx  vs rsync-update %sx   (target <= 0.05x cp -a)\n' "re-snapshot after 1% changed" "$re_t" "$(ratio "$re_t" "$cp_t")" "$(ratio "$re_t" "$rsync_re_t")"
printf '%-32s %8.2f  vs cp -a %sx  vs tar %sx  vs rsync %sx   (target <= 1.0x cp -a)\n' "full restore" "$full_t" "$(ratio "$full_t" "$cp_t")" "$(ratio "$full_t" "$tar_t")" "$(ratio "$full_t" "$rsync_t")"
printf '%-32s %8.2f  vs cp -a %sx  vs rsync-update %sx   (target <= 0.05x cp -a)\n' "restore onto unchanged target" "$unchanged_t" "$(ratio "$unchanged_t" "$cp_t")" "$(ratio "$unchanged_t" "$rsync_re_t")"
printf '%-32s %8s  %s GB/s   (target >= 1 GB/s)\n' "verify" "" "$verify_gbps"
rm -rf "$work"
