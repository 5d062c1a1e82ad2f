package lab_test

import (
	"context"
	"fmt"
	"log"

	"github.com/statewire/statewire/lab"
)

// A test in another package builds a None-mode lab, attaches to PortA and
// PortB inside BridgeNS, and sends traffic between the hosts. In a test use
// lab.NewT(t, opts), which skips without root and cleans up on t.Cleanup.
func Example() {
	l, err := lab.New(context.Background(), lab.Options{Mode: lab.KernelBridge, Queues: 2})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	// Open sockets (AF_XDP, AF_PACKET, listeners) inside a namespace:
	err = l.Do(l.BridgeNS, func() error { return nil })
	if err != nil {
		log.Fatal(err)
	}
	out, err := l.Run(context.Background(), l.LeftNS, "ping", "-c", "1", "-q", "198.18.0.2")
	fmt.Println(err == nil && len(out) > 0)
}
