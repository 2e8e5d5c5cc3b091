#!/usr/bin/env bash
# Snapshot benchmark, run by hand (not in CI): the snapshot engine (through the
# `snapshot-cli` example of ci-warm-snapshot, release build) against cp -a, rsync -aHAXS and,
# when installed, restic, on the same volume-like dataset, phase by phase, side by side.
#
#   bench/snapshot-bench.sh [WORKDIR]     (default /var/tmp/ci-warm-bench; must not be a tmpfs)
#
# Env: BENCH_SMALL_FILES (default 20000), BENCH_BIG_MIB (the database file, default 512),
#      BENCH_SPARSE_MIB (apparent size of the sparse file, default 1024; 4 MiB of it is data),
#      BENCH_RUNS (default 3: every timed phase is run that often and its median reported),
#      BENCH_XFS (auto: also run on an XFS loop image with reflink=1 when mkfs.xfs is there
#      and this runs as root; no: skip), CARGO_TARGET_DIR (default: the workspace's target/).
#
# Phases: first snapshot; again with nothing changed (no-op); again after appending to 1% of
# the small files; once more after appending to another 1% (every take after the first starts
# from the spare tree the previous one left, see docs/operations.md); then, once, a full restore into an empty dir, a restore onto an unchanged
# target and verify. The page cache is dropped before every timed phase when possible, and
# every timing includes a final `sync` (the engine fsyncs, the others do not).
# Targets (issue #19): first <= 1.0x cp -a; no-op <= rsync's no-op; 1%-changed <= 0.8x
# rsync's update; on ext4 and on XFS with reflink. Peak RSS of the engine (from
# /usr/bin/time -v) <= 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/var/tmp/ci-warm-bench}
small=${BENCH_SMALL_FILES:-20000}
big_mib=${BENCH_BIG_MIB:-512}
sparse_mib=${BENCH_SPARSE_MIB:-1024}
runs=${BENCH_RUNS:-3}
want_xfs=${BENCH_XFS:-auto}
target_dir=${CARGO_TARGET_DIR:-$PWD/target}

if [ "$(stat -f -c %T "$(dirname "$work")")" = tmpfs ]; then
  echo "$work is on a tmpfs: pick a directory on a real disk" >&2
  exit 2
fi

echo "== building the snapshot-cli example (release)"
CARGO_TARGET_DIR=$target_dir cargo build --quiet --release -p ci-warm-snapshot --example snapshot-cli
cli=$target_dir/release/examples/snapshot-cli
have_restic=no
if command -v restic >/dev/null; then have_restic=yes; fi
have_time=no
if [ -x /usr/bin/time ]; then have_time=yes; fi

mnt=""
loopdev=""
cleanup() {
  # The XFS image is unmounted and its loop device detached even when a phase failed.
  if [ -n "$mnt" ] && mountpoint -q "$mnt"; then umount "$mnt" || umount -l "$mnt" || true; fi
  if [ -n "$loopdev" ]; then losetup -d "$loopdev" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
rm -rf "$work"; mkdir -p "$work"

can_drop=yes
sync
if ! (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; then can_drop=no; fi
drop_caches() {
  sync
  if [ "$can_drop" = yes ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}
rss_max=0
# t CMD...: wall seconds of a command and of flushing what it wrote, caches dropped first.
t() {
  drop_caches
  local s e
  s=$(date +%s.%N)
  "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; exit 1; }
  sync
  e=$(date +%s.%N)
  echo "$e - $s" | bc -l
}
# te CMD...: like t, for the engine: also records its peak RSS (kB) from /usr/bin/time -v.
te() {
  if [ "$have_time" = no ]; then t "$@"; return; fi
  local secs rss
  secs=$(t /usr/bin/time -v -o "$work/time.out" "$@")
  rss=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$work/time.out")
  if [ "${rss:-0}" -gt "$(cat "$work/rss")" ]; then echo "$rss" > "$work/rss"; fi
  echo "$secs"
}
echo 0 > "$work/rss"
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { echo "scale=3; $1 / $2" | bc -l | sed 's/^\./0./'; }
verdict() { if [ "$(echo "$1 $2 $3" | bc -l)" = 1 ]; then echo ok; else echo MISSED; fi; }

gen() { # gen DIR: the dataset
  local src=$1
  mkdir -p "$src/db" "$src/files"
  head -c "$((big_mib << 20))" /dev/urandom > "$src/db/big.db"
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
  # 64 blocks of 64 KiB of data (4 MiB) spread over the sparse file.
  truncate -s "${sparse_mib}M" "$src/db/sparse.img"
  local k
  for k in $(seq 0 63); do
    head -c 65536 /dev/urandom | dd of="$src/db/sparse.img" bs=64K seek="$((k * sparse_mib / 4))" conv=notrunc status=none
  done
  ln -s db/big.db "$src/link-to-big"
  ln -s /etc/passwd "$src/outside"
  ln -s no/such/target "$src/dangling"
  for k in 0 1 2 3 4 5 6 7 8 9; do ln "$src/files/00$k/0/f00000$k" "$src/hardlink-$k"; done
}

# suite LABEL DIR: every phase, $runs times, on the filesystem holding DIR; prints the table.
suite() {
  local label=$1 dir=$2 src=$2/src
  mkdir -p "$dir"
  echo "== [$label] generating the dataset in $src"
  gen "$src"
  local apparent allocated entries
  apparent=$(du -sh --apparent-size "$src" | cut -f1)
  allocated=$(du -sh "$src" | cut -f1)
  entries=$(find "$src" | wc -l)
  echo "   $apparent apparent, $allocated allocated, $entries entries"
  local -a e_first=() e_noop=() e_change=() cp_first=() rs_first=() rs_noop=() rs_change=()
  local -a rq_first=() rq_noop=() rq_change=() e_again=() rs_again=() rq_again=()
  local run
  export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$dir/restic-cache
  for run in $(seq 1 "$runs"); do
    echo "== [$label] run $run/$runs"
    rm -rf "$dir/app" "$dir/cp" "$dir/rsync" "$dir/restic" "$dir/restic-cache"
    e_first+=("$(te "$cli" take "$src" "$dir/app")")
    cp_first+=("$(t cp -a "$src" "$dir/cp")")
    rm -rf "$dir/cp"
    rs_first+=("$(t rsync -aHAXS "$src/" "$dir/rsync/")")
    if [ "$have_restic" = yes ]; then
      restic -q init -r "$dir/restic" >/dev/null
      rq_first+=("$(t restic -q -r "$dir/restic" backup "$src")")
    fi
    e_noop+=("$(te "$cli" take "$src" "$dir/app")")
    rs_noop+=("$(t rsync -aHAXS --delete "$src/" "$dir/rsync/")")
    if [ "$have_restic" = yes ]; then
      rq_noop+=("$(t restic -q -r "$dir/restic" backup "$src")")
    fi
    # A different 1% of the small files each run.
    find "$src/files" -type f | awk -v r="$run" 'NR % 100 == r' | while read -r f; do echo "changed $run" >> "$f"; done
    e_change+=("$(te "$cli" take "$src" "$dir/app")")
    rs_change+=("$(t rsync -aHAXS --delete "$src/" "$dir/rsync/")")
    if [ "$have_restic" = yes ]; then
      rq_change+=("$(t restic -q -r "$dir/restic" backup "$src")")
    fi
    find "$src/files" -type f | awk -v r="$((run + 50))" 'NR % 100 == r' | while read -r f; do echo "changed again $run" >> "$f"; done
    e_again+=("$(te "$cli" take "$src" "$dir/app")")
    rs_again+=("$(t rsync -aHAXS --delete "$src/" "$dir/rsync/")")
    if [ "$have_restic" = yes ]; then
      rq_again+=("$(t restic -q -r "$dir/restic" backup "$src")")
    fi
  done
  echo "== [$label] restores and verify (once each)"
  local full unchanged verify_t verify_warm_t diffs sw
  full=$(te "$cli" restore "$dir/app/snapshot" data "$dir/restored")
  unchanged=$(te "$cli" restore "$dir/app/snapshot" data "$dir/restored")
  diffs=$(rsync -naHAXc --delete --numeric-ids --itemize-changes "$src/" "$dir/restored/" | wc -l)
  verify_t=$(te "$cli" verify "$dir/app/snapshot")
  local verify_line
  verify_line=$(cat "$work/last.err")
  sw=$(date +%s.%N)
  "$cli" verify "$dir/app/snapshot" >/dev/null 2>&1
  verify_warm_t=$(echo "$(date +%s.%N) - $sw" | bc -l)
  local cp_m rs_m
  cp_m=$(median "${cp_first[@]}")
  rs_m=$(median "${rs_first[@]}")
  local m1 m2 m3 m4 r1 r2 r3 r4 q1=- q2=- q3=- q4=- qr1=- qr2=- qr3=- qr4=-
  m1=$(median "${e_first[@]}"); m2=$(median "${e_noop[@]}"); m3=$(median "${e_change[@]}")
  m4=$(median "${e_again[@]}")
  r2=$(median "${rs_noop[@]}"); r3=$(median "${rs_change[@]}"); r4=$(median "${rs_again[@]}")
  if [ "$have_restic" = yes ]; then
    q1=$(printf '%.2f' "$(median "${rq_first[@]}")"); q2=$(printf '%.2f' "$(median "${rq_noop[@]}")")
    q3=$(printf '%.2f' "$(median "${rq_change[@]}")"); q4=$(printf '%.2f' "$(median "${rq_again[@]}")")
    qr1="$(ratio "$m1" "$q1")x"; qr2="$(ratio "$m2" "$q2")x"; qr3="$(ratio "$m3" "$q3")x"
    qr4="$(ratio "$m4" "$q4")x"
  fi
  {
    echo
    echo "### $label ($(stat -f -c %T "$dir")): $apparent apparent, $allocated allocated, $entries entries"
    echo "seconds, median of $runs runs (all runs: engine | cp -a | rsync | restic); ratio = engine / baseline"
    printf '%-26s %8s %8s %8s %8s  %-9s %-9s %-9s %s\n' phase engine "cp -a" rsync restic "/cp" "/rsync" "/restic" target
    r1=$(ratio "$m1" "$cp_m")
    printf '%-26s %8.2f %8.2f %8.2f %8s  %-9s %-9s %-9s %s\n' "first snapshot" "$m1" "$cp_m" "$rs_m" "$q1" \
      "${r1}x" "$(ratio "$m1" "$rs_m")x" "$qr1" "<= 1.0x cp -a: $(verdict "$r1" "<=" 1.0)"
    printf '%-26s %8.2f %8s %8.2f %8s  %-9s %-9s %-9s %s\n' "again, nothing changed" "$m2" - "$r2" "$q2" \
      "$(ratio "$m2" "$cp_m")x" "$(ratio "$m2" "$r2")x" "$qr2" "<= rsync no-op: $(verdict "$m2" "<=" "$r2")"
    printf '%-26s %8.2f %8s %8.2f %8s  %-9s %-9s %-9s %s\n' "again, 1% changed" "$m3" - "$r3" "$q3" \
      "$(ratio "$m3" "$cp_m")x" "$(ratio "$m3" "$r3")x" "$qr3" "<= 0.8x rsync update: $(verdict "$(ratio "$m3" "$r3")" "<=" 0.8)"
    printf '%-26s %8.2f %8s %8.2f %8s  %-9s %-9s %-9s %s\n' "again, another 1%" "$m4" - "$r4" "$q4" \
      "$(ratio "$m4" "$cp_m")x" "$(ratio "$m4" "$r4")x" "$qr4" "<= 0.8x rsync update: $(verdict "$(ratio "$m4" "$r4")" "<=" 0.8)"
    printf '%-26s %8.2f %8.2f %8.2f %8s  %-9s %-9s\n' "full restore (once)" "$full" "$cp_m" "$rs_m" - \
      "$(ratio "$full" "$cp_m")x" "$(ratio "$full" "$rs_m")x"
    printf '%-26s %8.2f %8s %8.2f %8s  %-9s %-9s\n' "restore, unchanged (once)" "$unchanged" - "$r2" - \
      "$(ratio "$unchanged" "$cp_m")x" "$(ratio "$unchanged" "$r2")x"
    printf '%-26s %8.2f   (warm page cache: %.2f s)\n' "verify (once)" "$verify_t" "$verify_warm_t"
    echo "   verify: $verify_line"
    echo "   restore check: $diffs rsync -c difference line(s) between source and restored"
    echo "   engine  first: ${e_first[*]} | no-op: ${e_noop[*]} | 1%: ${e_change[*]} | 1% more: ${e_again[*]}"
    echo "   cp -a   first: ${cp_first[*]}"
    echo "   rsync   first: ${rs_first[*]} | no-op: ${rs_noop[*]} | 1%: ${rs_change[*]} | 1% more: ${rs_again[*]}"
    if [ "$have_restic" = yes ]; then
      echo "   restic  first: ${rq_first[*]} | no-op: ${rq_noop[*]} | 1%: ${rq_change[*]} | 1% more: ${rq_again[*]}"
    fi
  } >> "$work/report"
  rm -rf "$dir/src" "$dir/app" "$dir/cp" "$dir/rsync" "$dir/restic" "$dir/restic-cache" "$dir/restored"
}

: > "$work/report"
suite "$(stat -f -c %T "$work")" "$work/native"

xfs_note="XFS: skipped (BENCH_XFS=no)"
if [ "$want_xfs" != no ]; then
  if ! command -v mkfs.xfs >/dev/null; then
    xfs_note="XFS: skipped (no mkfs.xfs; apt-get install xfsprogs)"
  elif [ "$(id -u)" != 0 ]; then
    xfs_note="XFS: skipped (loop devices need root)"
  else
    img=$work/xfs.img
    truncate -s "$(( (big_mib + sparse_mib / 64 + 400) * 6 + 2048 ))M" "$img"
    mkfs.xfs -q -m reflink=1 "$img"
    loopdev=$(losetup -f --show "$img")
    mnt=$work/xfs
    mkdir -p "$mnt"
    mount "$loopdev" "$mnt"
    xfs_note="XFS: loop image $img on $loopdev, reflink=1"
    suite "xfs-reflink" "$mnt/bench"
  fi
fi

echo
echo "== results"
if [ "$can_drop" = yes ]; then
  echo "(page cache dropped before each timed phase; the machine may be shared: compare ratios, not seconds)"
else
  echo "(page cache could NOT be dropped: warm-cache numbers)"
fi
echo "restic: $([ "$have_restic" = yes ] && restic version | head -1 || echo 'not installed (apt-get install restic)')"
echo "$xfs_note"
cat "$work/report"
rss=$(cat "$work/rss")
if [ "$have_time" = yes ]; then
  echo
  echo "engine peak RSS over every phase: $((rss / 1024)) MiB ($rss kB) <= 64 MiB: $(verdict "$rss" "<=" 65536)"
fi
