// Package ipam allocates pod addresses from a node's pod range and keeps the
// allocations in a bbolt file, one record per attachment, so that an address
// leaked by a crash can be found and freed again (CNI GC).
//
// The database holds one pod range. Its bucket tree:
//
//	meta/
//	  subnet      -> "10.244.1.0/24"   the range the allocations come from
//	  last        -> "10.244.1.17"     the address handed out last (round robin)
//	attachments/
//	  <containerID>/<ifname> -> JSON Allocation
//	addresses/
//	  <ip as text> -> <containerID>/<ifname>
//
// attachments is the source of truth; addresses is its inverse, kept in the
// same transaction, so "is this address taken" is one lookup.
//
// Every Store holds an exclusive file lock from Open to Close: concurrent
// plugin processes (a runtime starting many pods at once) queue on it.
// Callers keep a Store open only for the bookkeeping, never across slow
// network set-up.
package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketMeta        = []byte("meta")
	bucketAttachments = []byte("attachments")
	bucketAddresses   = []byte("addresses")
	keySubnet         = []byte("subnet")
	keyLast           = []byte("last")
)

var (
	// ErrExhausted means every address of the range is allocated.
	ErrExhausted = errors.New("no free address in the pod range")
	// ErrAttachmentExists means the attachment already holds an address.
	ErrAttachmentExists = errors.New("attachment already has an address")
	// ErrSubnetChanged means the store holds allocations from another range.
	ErrSubnetChanged = errors.New("store holds allocations from a different subnet")
)

// DBFile is the database's file name inside its directory.
const DBFile = "ipam.db"

// Attachment identifies one network attachment as CNI does: the pair
// (CNI_CONTAINERID, CNI_IFNAME).
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

func (a Attachment) key() []byte { return []byte(a.ContainerID + "/" + a.IfName) }

func (a Attachment) String() string { return a.ContainerID + "/" + a.IfName }

// Allocation is one attachment's record.
type Allocation struct {
	Attachment
	IP netip.Addr `json:"ip"`
	// HostIfName is the host end of the pod's veth, so DEL and GC can remove
	// it without entering the pod's network namespace.
	HostIfName string `json:"hostIfName,omitempty"`
	Netns      string `json:"netns,omitempty"`
	// Pod is "namespace/name" when the runtime passed Kubernetes CNI_ARGS,
	// so an operator can tell which pod holds an address.
	Pod     string    `json:"pod,omitempty"`
	Created time.Time `json:"created"`
}

// Store is an open, locked allocation database for one pod range.
type Store struct {
	db   *bolt.DB
	lock *fileLock
	pool Pool
}

// Open locks and opens the database in dir (created if missing) for pool.
// It waits at most lockTimeout for other invocations, then returns
// ErrLockTimeout.
func Open(dir string, pool Pool, lockTimeout time.Duration) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create store dir: %w", err)
	}
	lock, err := acquireLock(filepath.Join(dir, "lock"), lockTimeout)
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(filepath.Join(dir, DBFile), 0o600, &bolt.Options{
		// We hold the lock file already, so bbolt's own flock is uncontended.
		Timeout:        time.Second,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		lock.release()
		return nil, fmt.Errorf("open bbolt: %w", err)
	}
	s := &Store{db: db, lock: lock, pool: pool}
	if err := s.init(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// init creates the buckets and binds the store to the pool's subnet. A store
// whose subnet differs is re-bound only when it holds no allocations: a node
// whose podCIDR changed under running pods is a configuration error.
func (s *Store) init() error {
	want := s.pool.Prefix().String()
	// A read-only look first: the common case needs no write (and no fsync).
	ready := false
	if err := s.db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		ready = m != nil && string(m.Get(keySubnet)) == want &&
			tx.Bucket(bucketAttachments) != nil && tx.Bucket(bucketAddresses) != nil
		return nil
	}); err != nil {
		return fmt.Errorf("read meta: %w", err)
	}
	if ready {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		att, err := tx.CreateBucketIfNotExists(bucketAttachments)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketAddresses); err != nil {
			return err
		}
		if have := string(meta.Get(keySubnet)); have != "" && have != want {
			if n := att.Stats().KeyN; n > 0 {
				return fmt.Errorf("%w: %s has %d allocations, config says %s", ErrSubnetChanged, have, n, want)
			}
			if err := meta.Delete(keyLast); err != nil {
				return err
			}
		}
		return meta.Put(keySubnet, []byte(want))
	})
}

// Close releases the database and the lock.
func (s *Store) Close() error {
	err := s.db.Close()
	if lerr := s.lock.release(); err == nil {
		err = lerr
	}
	return err
}

// Pool is the range the store allocates from.
func (s *Store) Pool() Pool { return s.pool }

// Update runs fn in one read-write transaction: it commits if fn returns nil.
func (s *Store) Update(fn func(*Tx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx, pool: s.pool}) })
}

// View runs fn in one read-only transaction.
func (s *Store) View(fn func(*Tx) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx, pool: s.pool}) })
}

// Tx is a transaction on the store; operations on one Tx compose atomically.
type Tx struct {
	tx   *bolt.Tx
	pool Pool
}

// Allocate records a for its attachment and returns the address it got: the
// first free address after the one handed out last, so a just-freed address
// is the last to be reused (a stale ARP entry or a lingering connection to
// the old pod does not reach the new one).
func (t *Tx) Allocate(a Allocation) (netip.Addr, error) {
	att := t.tx.Bucket(bucketAttachments)
	addrs := t.tx.Bucket(bucketAddresses)
	meta := t.tx.Bucket(bucketMeta)
	if att.Get(a.key()) != nil {
		return netip.Addr{}, fmt.Errorf("%w: %s", ErrAttachmentExists, a.Attachment)
	}
	var last netip.Addr
	if b := meta.Get(keyLast); b != nil {
		last, _ = netip.ParseAddr(string(b))
	}
	ip, ok := t.pool.NextFree(last, func(ip netip.Addr) bool {
		return addrs.Get([]byte(ip.String())) != nil
	})
	if !ok {
		return netip.Addr{}, ErrExhausted
	}
	a.IP = ip
	if a.Created.IsZero() {
		a.Created = time.Now().UTC()
	}
	rec, err := json.Marshal(a)
	if err != nil {
		return netip.Addr{}, err
	}
	if err := att.Put(a.key(), rec); err != nil {
		return netip.Addr{}, err
	}
	if err := addrs.Put([]byte(ip.String()), a.key()); err != nil {
		return netip.Addr{}, err
	}
	if err := meta.Put(keyLast, []byte(ip.String())); err != nil {
		return netip.Addr{}, err
	}
	return ip, nil
}

// Get returns the attachment's record.
func (t *Tx) Get(a Attachment) (Allocation, bool, error) {
	b := t.tx.Bucket(bucketAttachments).Get(a.key())
	if b == nil {
		return Allocation{}, false, nil
	}
	var rec Allocation
	if err := json.Unmarshal(b, &rec); err != nil {
		return Allocation{}, false, fmt.Errorf("decode %s: %w", a, err)
	}
	return rec, true, nil
}

// Release frees the attachment's address. Releasing an attachment that holds
// nothing is not an error: DEL and GC may release twice.
func (t *Tx) Release(a Attachment) (Allocation, bool, error) {
	rec, ok, err := t.Get(a)
	if err != nil || !ok {
		// A record we cannot decode is still removed, or it would leak forever.
		if err != nil {
			_ = t.tx.Bucket(bucketAttachments).Delete(a.key())
		}
		return rec, false, err
	}
	if err := t.tx.Bucket(bucketAttachments).Delete(a.key()); err != nil {
		return rec, false, err
	}
	addrs := t.tx.Bucket(bucketAddresses)
	k := []byte(rec.IP.String())
	// Only drop the inverse entry if it still points at this attachment.
	if string(addrs.Get(k)) == string(a.key()) {
		if err := addrs.Delete(k); err != nil {
			return rec, false, err
		}
	}
	return rec, true, nil
}

// List returns every allocation.
func (t *Tx) List() ([]Allocation, error) {
	var out []Allocation
	err := t.tx.Bucket(bucketAttachments).ForEach(func(k, v []byte) error {
		var rec Allocation
		if err := json.Unmarshal(v, &rec); err != nil {
			// Keep the key so GC can still free it.
			id, ifname, _ := strings.Cut(string(k), "/")
			rec = Allocation{Attachment: Attachment{ContainerID: id, IfName: ifname}}
		}
		out = append(out, rec)
		return nil
	})
	return out, err
}

// Used is the number of allocated addresses.
func (t *Tx) Used() int { return t.tx.Bucket(bucketAttachments).Stats().KeyN }

// Free is the number of addresses still available.
func (t *Tx) Free() int { return t.pool.Size() - t.Used() }
