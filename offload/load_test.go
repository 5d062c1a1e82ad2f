package offload_test

import (
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/offload"
)

// load loads the fast path or reports it unavailable (not root, no BPF).
func load(t *testing.T, opts offload.Options) *offload.Program { return loadB(t, opts) }

func loadB(t testing.TB, opts offload.Options) *offload.Program {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "loading XDP programs needs root")
	}
	p, err := offload.Load(opts)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("verifier: %+v", ve)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestLoad(t *testing.T) {
	p := load(t, offload.Options{MaxFlows: 1024})
	if err := p.SetPorts(1, 1); err != nil {
		t.Fatal(err)
	}
}
