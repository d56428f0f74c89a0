package boltstore

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skep-dev/skep/controlplane/store"
)

func TestSecretsEncryptedAtRest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "secrets.key")
	dbFile := filepath.Join(dir, "state.db")
	const secretMarker = "TOPSECRET-7f3a9c-the-value"
	const plainMarker = "PLAINTEXT-4b1e2d-the-value"
	opts := []Option{WithEncryptedPrefixes("/registry/secrets/"), WithKeyFile(keyFile)}

	s, err := Open(dbFile, opts...)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatalf("key file not created: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	key1, _ := os.ReadFile(keyFile)

	rev, err := s.Create(ctx, "/registry/secrets/default/db", []byte(`{"data":"`+secretMarker+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	// Update too: each write seals with a fresh nonce.
	if _, err := s.Update(ctx, "/registry/secrets/default/db", []byte(`{"data":"`+secretMarker+`2"}`), rev); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "/registry/configmaps/default/cm", []byte(`{"data":"`+plainMarker+`"}`)); err != nil {
		t.Fatal(err)
	}
	// Readers and watchers see plaintext.
	kv, err := s.Get(ctx, "/registry/secrets/default/db")
	if err != nil || !strings.Contains(string(kv.Value), secretMarker+"2") {
		t.Fatalf("get secret = %q, %v", kv.Value, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Every file the store writes: the database and its write-ahead log
	// (which holds the same records, already sealed).
	for _, f := range []string{dbFile, dbFile + ".wal"} {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte("TOPSECRET")) {
			t.Fatalf("the secret's value is readable in the raw file %s", filepath.Base(f))
		}
		if !bytes.Contains(raw, []byte(plainMarker)) {
			t.Fatalf("the configmap's value is not in the raw file %s: the grep itself is broken", filepath.Base(f))
		}
	}
	raw, err := os.ReadFile(dbFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(plainMarker)) {
		t.Fatal("the configmap's value is not in the raw file: the grep itself is broken")
	}
	if !bytes.Contains(raw, []byte("/registry/secrets/default/db")) {
		t.Fatal("the secret's key is not in the raw file: the grep itself is broken")
	}

	// Reopen: the same key file is reused and the secret decrypts.
	s2, err := Open(dbFile, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if key2, _ := os.ReadFile(keyFile); !bytes.Equal(key1, key2) {
		t.Fatal("key file rewritten on second start")
	}
	res, err := s2.List(ctx, "/registry/", store.ListOptions{})
	if err != nil || len(res.Items) != 2 {
		t.Fatalf("list after reopen: %d items, %v", len(res.Items), err)
	}
	if !strings.Contains(string(res.Items[1].Value), secretMarker+"2") {
		t.Fatalf("secret after reopen = %q", res.Items[1].Value)
	}
	s2.Close()

	// Another key file (lost or swapped) is refused at Open, not at the
	// first secret read.
	if s3, err := Open(dbFile, WithEncryptedPrefixes("/registry/secrets/"), WithKeyFile(filepath.Join(dir, "other.key"))); err == nil {
		s3.Close()
		t.Fatal("opened an encrypted store with a different key")
	}
	// Without encryption configured, plain values still read and a secret
	// read fails cleanly instead of returning ciphertext.
	s4, err := Open(dbFile)
	if err != nil {
		t.Fatal(err)
	}
	defer s4.Close()
	if kv, err := s4.Get(ctx, "/registry/secrets/default/db"); err == nil {
		t.Fatalf("secret read without the key: %q", kv.Value)
	}
	if _, err := s4.Get(ctx, "/registry/configmaps/default/cm"); err != nil {
		t.Fatalf("plain value unreadable without encryption: %v", err)
	}
}

// A ciphertext moved under another key must not open: the key is bound in
// as additional data.
func TestSealedValueBoundToKey(t *testing.T) {
	key := make([]byte, aesKeySize)
	sl, err := newSealer([]string{"/s/"}, key)
	if err != nil {
		t.Fatal(err)
	}
	a := newRecord("/s/a", []byte("value"), sl)
	b := newRecord("/s/a", []byte("value"), sl)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same value are identical: nonce reused")
	}
	if _, err := decodeRecord("/s/b", a, sl); err == nil {
		t.Fatal("record sealed for /s/a opened as /s/b")
	}
	kv, err := decodeRecord("/s/a", a, sl)
	if err != nil || string(kv.Value) != "value" {
		t.Fatalf("decode = %q, %v", kv.Value, err)
	}
}

func TestBadKeyFileRejected(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "secrets.key")
	if err := os.WriteFile(keyFile, []byte("too-short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(filepath.Join(dir, "state.db"), WithEncryptedPrefixes("/s/"), WithKeyFile(keyFile)); err == nil {
		s.Close()
		t.Fatal("opened with a malformed key file")
	}
}
