package lab

import (
	"os"
	"testing"

	"github.com/statewire/statewire/internal/testenv"
)

// RequireRoot skips t (testenv.Unavailable) when the process is not root, because the lab needs
// CAP_NET_ADMIN and CAP_SYS_ADMIN (namespaces, links, nftables). In CI
// (CI=true) a missing privilege is a configuration error, so it fails
// instead: a privileged test that silently skips there tests nothing.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "needs root (network namespaces, veths, nftables); run with sudo")
	}
}
