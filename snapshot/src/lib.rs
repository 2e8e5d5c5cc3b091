//! Faithful, atomic, incremental and verified snapshots of directory trees (Docker volumes).
