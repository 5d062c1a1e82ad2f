// Package testenv finds the shared fixtures next to the repository and
// turns "cannot run here" into a skip locally and a failure in CI.
package testenv

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RepoRoot returns the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Shared returns the path of the shared/ folder beside the repository
// (SHARED_DIR overrides). A test that needs it fails in CI and skips
// elsewhere when it is missing.
func Shared(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("SHARED_DIR")
	if dir == "" {
		dir = filepath.Join(RepoRoot(), "..", "shared")
	}
	if _, err := os.Stat(filepath.Join(dir, "pcaps", "MANIFEST.tsv")); err != nil {
		Unavailable(t, "shared fixtures not found at "+dir+" (set SHARED_DIR)")
	}
	return dir
}

// Unavailable skips the test with reason, or fails it when CI=true: in CI
// every test must run.
func Unavailable(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and this test cannot run: %s", reason)
	}
	t.Skip(reason)
}

// Pcaps returns the shared capture corpus folder (Shared(t)/pcaps): a test
// that needs it fails in CI and skips elsewhere when it is missing.
func Pcaps(t testing.TB) string {
	t.Helper()
	return filepath.Join(Shared(t), "pcaps")
}

// KernelStates reads the corpus fixture kernel-states/VARIANT/CAPTURE.tsv
// ("nohelper" or "helpers"; CAPTURE is the capture's file name): the label
// Linux gave each packet, element i for packet i+1. A line out of order or
// without its tab fails the test: the fixtures are numbered 1, 2, 3...
func KernelStates(t testing.TB, variant, capture string) []string {
	t.Helper()
	path := filepath.Join(Pcaps(t), "kernel-states", variant, capture+".tsv")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		num, state, ok := strings.Cut(line, "\t")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		if n, err := strconv.Atoi(num); err != nil || n != len(out)+1 {
			t.Fatalf("%s: line %d numbered %q", path, len(out)+1, num)
		}
		out = append(out, state)
	}
	return out
}

// WaitInterval is how often WaitFor checks its condition.
const WaitInterval = 10 * time.Millisecond

// WaitFor calls cond every WaitInterval until it returns true or timeout
// has passed, and reports whether it returned true; cond runs at least
// once, and once more at the deadline. A test waits with it for the
// condition it needs (a counter reached, a line printed) instead of
// sleeping a guessed time, then asserts on what it saw last ("got X,
// want Y"): WaitFor fails nothing itself.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		time.Sleep(min(WaitInterval, left))
	}
}
