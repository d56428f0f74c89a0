package apiserver

import (
	"log/slog"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skep-dev/skep/controlplane/store"
)

// Store files in the data directory.
const (
	StateFile      = "state.db"
	SecretsKeyFile = "secrets.key"
)

// secretsPrefix is where secrets live in the store; their values are
// encrypted at rest.
const secretsPrefix = "/registry/secrets/"

// openStore opens the bbolt store in the data directory.
func openStore(dataDir string, reg prometheus.Registerer, log *slog.Logger) (store.Interface, error) {
	return store.Open(filepath.Join(dataDir, StateFile),
		store.WithEncryptedPrefixes(secretsPrefix),
		store.WithKeyFile(filepath.Join(dataDir, SecretsKeyFile)),
		store.WithMetrics(reg),
		store.WithLogger(log))
}
