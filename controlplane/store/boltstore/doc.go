// Package boltstore is the control plane's embedded state: a bbolt file and its
// write-ahead log, with etcd's semantics — a global revision bumped by every write, compare-and-swap on a
// key's revision, and watches from a recent revision served by an in-memory
// event log.
//
// # Bucket tree
//
// Two files: state.db, the bbolt file, holds the state as of the last
// checkpoint; state.db.wal holds the writes since (see below). In the bbolt
// file everything lives under one versioned root bucket so the schema can
// migrate:
//
//	v1                              ← schema version 1
//	├── meta
//	│   ├── revision : uint64 BE    ← global revision of the last checkpoint
//	│   └── keycheck : sealed constant ← present once encryption is on; proves the key file
//	└── kv
//	    └── <key> : record          ← e.g. /registry/pods/default/web-0
//
//	record = version(1) | flags(1) | createRevision(8 BE) | modRevision(8 BE) | payload
//	payload = value                       when flags&encrypted == 0
//	        = nonce(12) | AES-GCM(value)  when flags&encrypted != 0 (key as AAD)
//
// Keys are opaque to the store; the API server chooses them
// (/registry/<resource>/<namespace>/<name>). Values whose key starts with one
// of the encrypted prefixes (WithEncryptedPrefixes) are sealed with AES-256-GCM
// under a key read from, or created with mode 0600 in, the key file. The
// flag is per record, so adding a prefix later encrypts on the next write and
// older plaintext records still read.
//
// # Group commit, WAL and checkpoints
//
// Writers queue their operation and wait. One committer goroutine takes every
// operation queued while the previous group was committing and applies them
// in queue order — each precondition (exists, revision) checked against the
// state including the earlier operations of the same group, a failing
// operation getting its own error without failing the others. The group's
// changes are then appended as one frame to the write-ahead log
// (<path>.wal) and made durable with one fdatasync; only then are they laid
// into an in-memory overlay (the latest write per key since the last
// checkpoint), fed to the event log and published with their revision, and
// each writer acknowledged. A write is therefore acknowledged only once it
// is durable, and revisions follow queue order. If the append fails (an I/O
// error, a full disk), every write in the group gets that error and none is
// applied.
//
// A checkpoint folds the overlay into the bbolt file in one ordinary bbolt
// transaction (bbolt's own two fsyncs), every 100 ms or 10,000 writes
// (WithCheckpoint), and when the WAL is half full; the WAL then starts over
// from offset 0. This is etcd's design (raft WAL, then a batched bbolt
// backend) and why a group costs one small write and one fdatasync instead
// of a B+tree commit. Reads see the overlay laid over the bbolt file: Get
// looks in the overlay first; List merges the overlay's keys with a bbolt
// cursor, and retries if a checkpoint committed between its two reads, so a
// page is one consistent snapshot at ListResult.Revision.
//
// After a crash, Open replays the WAL frames beyond the bbolt file's
// revision in one transaction. The WAL is preallocated and overwritten in
// place, so its tail may hold frames of an earlier generation: each frame
// carries a checksum and the revision it starts at, and reading stops at the
// first frame that is torn or does not continue the revision sequence. A WAL
// that starts beyond the file's next revision means writes are missing, and
// Open refuses it.
//
// A writer whose context ends while its operation is still queued removes it
// and gets the context's error: the operation was not applied. Once the
// committer has taken the operation into a transaction, the writer waits for
// that transaction (one commit) and gets its real outcome; so a context error
// from a write always means "not applied", never "maybe". Likewise a write
// still queued when Close is called gets ErrClosed and was not applied.
//
// # Watch
//
// The event log is a ring of the last N events (WithEventLogSize) indexed by
// revision, holding at most about WithEventLogBytes of values (128 MiB: large
// objects make it shorter); it starts empty at Open, so a watch from a revision older than the
// store's revision at Open, or older than the ring's oldest event, gets
// ErrExpired and the client relists. Each watcher has a goroutine that pulls
// from the ring at its own pace into a buffered channel; the committer never
// waits for a watcher. A watcher whose position has been overwritten in the
// ring has fallen too far behind: its channel is closed. Progress events
// (bookmarks) are sent in-band when a watcher has been idle for the progress
// interval (WithProgressInterval). An event's PrevKV shares the bytes of the
// key's previous event when the log still holds it, so the log costs about
// one copy of each value written, not two.
//
// # Metrics
//
// WithMetrics registers skep_store_commit_duration_seconds,
// skep_store_commit_batch_writes, skep_store_commit_errors_total,
// skep_store_checkpoint_duration_seconds, skep_store_checkpoint_errors_total,
// skep_store_watchers, skep_store_watchers_dropped_total and
// skep_store_revision.
package boltstore
