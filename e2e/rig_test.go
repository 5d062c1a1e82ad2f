package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/statewire/statewire/lab"
)

// TestMain builds the statewire binary at most once (lab.StatewireBinary)
// and removes it at the end.
func TestMain(m *testing.M) { os.Exit(lab.RunTests(m)) }

// coreCounts are the worker counts every scenario runs with, on 2-queue veths.
var coreCounts = []int{1, 2}

// forEachCores runs fn as a subtest per worker count.
func forEachCores(t *testing.T, fn func(t *testing.T, cores int)) {
	for _, c := range coreCounts {
		t.Run(fmt.Sprintf("cores=%d", c), func(t *testing.T) { fn(t, c) })
	}
}

func ctx(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

// listenTCP opens a TCP listener in ns.
func listenTCP(t *testing.T, l *lab.Lab, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := l.Do(ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialTCP connects from ns to addr within timeout.
func dialTCP(l *lab.Lab, ns, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := l.Do(ns, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	return c, err
}

// udpEcho starts an echo server on addr in ns.
func udpEcho(t *testing.T, l *lab.Lab, ns string, addr *net.UDPAddr) {
	t.Helper()
	var srv *net.UDPConn
	if err := l.Do(ns, func() (err error) { srv, err = net.ListenUDP("udp4", addr); return err }); err != nil {
		t.Fatalf("udp listen: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			srv.WriteToUDP(buf[:k], from)
		}
	}()
}

// dialUDP makes a connected UDP socket in ns.
func dialUDP(t *testing.T, l *lab.Lab, ns string, to *net.UDPAddr) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := l.Do(ns, func() (err error) { c, err = net.DialUDP("udp4", nil, to); return err }); err != nil {
		t.Fatalf("udp dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var (
	leftIP  = lab.LeftIPv4.Addr()
	rightIP = lab.RightIPv4.Addr()
)
