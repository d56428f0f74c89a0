//go:build !linux

package boltstore

import "os"

func fdatasync(f *os.File) error { return f.Sync() }

func fallocate(*os.File, int64, int64) (bool, error) { return false, nil }
