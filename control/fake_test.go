package control

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/statewire/statewire/control/controltest"
)

type conn = controltest.Conn

// fakeBridge wraps controltest.Fake with the short names the tests use.
type fakeBridge struct {
	*controltest.Fake
}

func newFake(t *testing.T, shards int) *fakeBridge {
	f := controltest.New(t, shards)
	return &fakeBridge{Fake: f}
}

func (f *fakeBridge) add(t *testing.T, c conn) { f.Fake.Add(t, c) }
func (f *fakeBridge) owner(fn func())          { f.Fake.Owner(fn) }

// servers are the servers serve started, by socket path (tests run one at
// a time in this package: no t.Parallel).
var servers = map[string]*Server{}

// serve starts a Server for f on a socket in a temporary directory.
func serve(t *testing.T, f Backend, opt Options) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sw.sock")
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := Listen(path, f, opt)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Close() })
	servers[path] = s
	return path
}
