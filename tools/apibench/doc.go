// Package apibench measures skep's API server as clients see it — creates per
// second through client-go at 1, 16 and 64 concurrent clients, watch delivery
// latency with 100 watchers, list latency and server memory with 10,000 pods —
// and, in the same run on the same disk, two references: bbolt with one
// db.Update per write, and Debian's etcd 3.4 (the store a Kubernetes API
// server sits on) driven through its gRPC client, go.etcd.io/etcd/client/v3,
// as kube-apiserver drives it.
//
// Run it with
//
//	go test -run '^$' -bench . ./tools/apibench
//
// Each benchmark reports its figure with b.ReportMetric; a summary table with
// the ratios to the references is printed at the end of the run.
package apibench
