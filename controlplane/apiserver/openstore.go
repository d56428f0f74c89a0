package apiserver

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/skep-dev/skep/controlplane/store"
	"github.com/skep-dev/skep/controlplane/store/boltstore"
)

// Store files in the data directory.
const (
	StateFile      = "state.db"
	SecretsKeyFile = "secrets.key"
)

// secretsPrefix is where secrets live in the store; their values are
// encrypted at rest.
const secretsPrefix = "/registry/secrets/"

// storeLockWait is how long to wait for the store's file lock. A live
// server holds it for its whole life, so waiting longer than a restart's
// hand-over only delays the error.
const storeLockWait = 250 * time.Millisecond

// ErrDataDirInUse is returned by New when another server holds the data
// directory's store.
var ErrDataDirInUse = errors.New("data dir is in use by another skep server")

// dataDirInUseError names the directory and matches ErrDataDirInUse.
type dataDirInUseError string

func (e dataDirInUseError) Error() string {
	return "data dir " + string(e) + " is in use by another skep server"
}

func (e dataDirInUseError) Is(target error) bool { return target == ErrDataDirInUse }

// openStore opens the bbolt store in the data directory.
func openStore(dataDir string, reg prometheus.Registerer, log *slog.Logger) (store.Interface, error) {
	st, err := boltstore.Open(filepath.Join(dataDir, StateFile),
		boltstore.WithEncryptedPrefixes(secretsPrefix),
		boltstore.WithKeyFile(filepath.Join(dataDir, SecretsKeyFile)),
		boltstore.WithOpenTimeout(storeLockWait),
		boltstore.WithMetrics(reg),
		boltstore.WithLogger(log))
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, dataDirInUseError(dataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return st, nil
}
