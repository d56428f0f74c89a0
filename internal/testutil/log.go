package testutil

import (
	"io"
	"log/slog"
	"os"
)

// QuietLogger is the logger for code under test whose logs would only be
// noise: it discards everything. With SKEP_TEST_VERBOSE set it logs at debug
// level to stderr instead, for a test being debugged.
func QuietLogger() *slog.Logger {
	if os.Getenv("SKEP_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
