// Package testutil holds the helpers the project's tests share: the gate of
// privileged tests (RequireRoot, RequireBinary; under CI=true a skip is a
// failure), Eventually, QuietLogger, network namespaces and cgroups of a
// test's own, and the re-executed child process that runs inside them.
//
// It stays light — it imports no skep component, so any package's tests can
// use it; the in-process API server is in the subpackage apitest.
package testutil
