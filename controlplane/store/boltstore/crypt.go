package boltstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	bolt "go.etcd.io/bbolt"
)

const aesKeySize = 32 // AES-256

// sealer encrypts the values of keys under its prefixes.
type sealer struct {
	prefixes []string
	aead     cipher.AEAD
}

func (s *sealer) covers(key string) bool {
	if s == nil {
		return false
	}
	for _, p := range s.prefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// seal appends nonce|ciphertext of value to dst. The key is the additional
// data, so a ciphertext copied under another key does not open.
func (s *sealer) seal(dst []byte, key string, value []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	dst = append(dst, nonce...)
	return s.aead.Seal(dst, nonce, value, []byte(key))
}

func (s *sealer) open(key string, payload []byte) ([]byte, error) {
	if s == nil {
		return nil, fmt.Errorf("decrypt %q: no encryption key configured", key)
	}
	n := s.aead.NonceSize()
	if len(payload) < n {
		return nil, fmt.Errorf("decrypt %q: short payload", key)
	}
	v, err := s.aead.Open(nil, payload[:n], payload[n:], []byte(key))
	if err != nil {
		return nil, fmt.Errorf("decrypt %q: %w", key, err)
	}
	return v, nil
}

// loadOrCreateKey reads the base64 AES key at path, or creates it (mode
// 0600, fsynced) if absent.
func loadOrCreateKey(path string, log *slog.Logger) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("encryption key file is readable by group or others", "path", path, "mode", fi.Mode().Perm())
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(key) != aesKeySize {
		return nil, fmt.Errorf("key file %s: want %d base64-encoded bytes", path, aesKeySize)
	}
	return key, nil
}

func createKey(path string) ([]byte, error) {
	key := make([]byte, aesKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create key dir: %w", err)
	}
	// O_EXCL: two servers racing on a fresh data dir must not end with two keys.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create key file: %w", err)
	}
	_, err = f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("write key file: %w", err)
	}
	return key, nil
}

func newSealer(prefixes []string, key []byte) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return &sealer{prefixes: prefixes, aead: aead}, nil
}

// keyCheckPlaintext is sealed into meta/keycheck with the first encryption
// key, so a store opened later with another key (a lost or swapped key file)
// fails at Open instead of serving secrets it cannot read.
const keyCheckPlaintext = "skep store encryption key check"

func checkKey(meta *bolt.Bucket, sl *sealer) error {
	if sl == nil {
		return nil
	}
	sealed := meta.Get(keyKeyCheck)
	if sealed == nil {
		return meta.Put(keyKeyCheck, sl.seal(nil, string(keyKeyCheck), []byte(keyCheckPlaintext)))
	}
	if v, err := sl.open(string(keyKeyCheck), sealed); err != nil || string(v) != keyCheckPlaintext {
		return errors.New("the encryption key file is not the key this store was written with")
	}
	return nil
}
