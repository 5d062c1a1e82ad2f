// Package soak holds statewire's soak test: a long run of the AF_XDP
// datapath in a netns/veth lab under mixed traffic and churn (short TCP
// connections opening and closing, UDP flows that come and go, one long
// TCP transfer checked with SHA-256, pings, rule-set swaps and table dumps
// every few seconds). Every 10 s it samples the heap in use after a GC,
// the goroutines, the table's entries and the frame counters into a TSV
// file; at the end it asserts that memory stayed flat, goroutines stable,
// frames conserved, and that once the traffic stops every entry expires
// within its (shortened) timeout.
//
// The test is behind the build tag `soak`, so `go test ./...` and CI never
// compile it; it runs only with SOAK_DURATION set (and fails, rather than
// skip, without it):
//
//	SOAK_DURATION=30m SOAK_OUT=soak.tsv go test -tags soak -run TestSoak -timeout 0 -v ./e2e/soak
//
// or `make soak` (SOAK_DURATION defaults to 30m there). SOAK_OUT names the
// TSV (default soak.tsv in the package directory); the summary goes next to
// it with the suffix .summary.txt and to the test log.
//
// Ownership: the test goroutine owns the lab and the datapath (Start,
// Stop, Control().Store, Stats, Table().Snapshot); each traffic goroutine
// owns its sockets and reports through atomics; the datapath's workers own
// their rings and shards.
package soak
