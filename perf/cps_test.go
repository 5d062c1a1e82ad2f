package perf

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/statewire/statewire/lab"
)

var testAddrs = cpsAddrs{clientMAC: macL, serverMAC: macR, client: lab.LeftIPv4.Addr(), server: lab.RightIPv4.Addr()}

// TestCPSLab runs short CPS trials against the Linux bridge and statewire
// (when a binary is built) and checks that connections complete and are
// counted at the endpoints. Not a speed test.
func TestCPSLab(t *testing.T) {
	lab.RequireRoot(t)
	if testing.Short() {
		t.Skip("builds labs and plays TCP sessions for ~10 s")
	}
	o := QuickOptions()
	o.Mode = ModeCPS
	o.Devices = []string{KernelBridge}
	if bin := statewireBinary(); bin != "" {
		o.Devices = append(o.Devices, Statewire)
		o.Statewire = bin
	} else {
		t.Log("no statewire binary (../statewire or $STATEWIRE_BIN): kernel bridge only")
	}
	o.CPSTrial, o.CPSSteps = 150*time.Millisecond, 1
	var log bytes.Buffer
	o.Progress = &log
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := Run(ctx, o)
	t.Log("\n" + log.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Errors) > 0 {
		t.Fatalf("not measured: %v", rep.Errors)
	}
	if g := rep.CPSGenerator; g == nil || g.Done == 0 {
		t.Fatalf("generator calibration completed no connection: %+v", g)
	}
	for _, dev := range o.Devices {
		t.Run(dev, func(t *testing.T) {
			var x *CPSResult
			for i := range rep.CPS {
				if rep.CPS[i].Device == dev {
					x = &rep.CPS[i]
				}
			}
			if x == nil {
				t.Fatal("no CPS result")
			}
			if x.Error != "" {
				t.Fatalf("error: %s", x.Error)
			}
			ov := x.Overload
			if ov.Done == 0 {
				t.Errorf("overload trial: 0 connections completed, want > 0 (%+v)", ov)
			}
			// Counted at the endpoints: every completed connection is 8
			// frames received there.
			if ov.FramesRX < cpsSteps*ov.Done {
				t.Errorf("endpoints received %d frames for %d complete connections, want >= %d", ov.FramesRX, ov.Done, cpsSteps*ov.Done)
			}
			if ov.Done > ov.Opened {
				t.Errorf("done %d > opened %d", ov.Done, ov.Opened)
			}
		})
	}
}

