package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/statewire/statewire/internal/testenv"
	"github.com/statewire/statewire/replay"
)

// writeOneWay writes the corpus capture name with the first sender's
// direction tagged VLAN 100 (testenv.OneWay) to a temporary pcap.
func writeOneWay(t *testing.T, name string) string {
	t.Helper()
	frames, err := replay.ReadFile(filepath.Join(testenv.Pcaps(t), name))
	if err != nil {
		t.Fatal(err)
	}
	data := make([][]byte, len(frames))
	for i := range frames {
		data[i] = frames[i].Data
	}
	data, _ = testenv.OneWay(data, 100)
	path := filepath.Join(t.TempDir(), "oneway-"+name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for i, fr := range frames {
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(0, fr.Time), CaptureLength: len(data[i]), Length: fr.WireLen + len(data[i]) - len(fr.Data)}
		if err := w.WritePacket(ci, data[i]); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// TestReplayVLANZones: `statewire replay` of a capture whose client
// direction is tagged. --vlan-zones=false: one connection, the kernel's
// states (the SYN/ACK is ESTABLISHED), listed with zone=0. The default:
// the SYN/ACK finds no connection in zone 0 and is INVALID, and the SYN's
// entry is listed in zone 100.
func TestReplayVLANZones(t *testing.T) {
	pcap := writeOneWay(t, "tcp-http-handshake-data-fin.pcap")
	code, out, errs := run(t, "replay", "--vlan-zones=false", pcap)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(out, "\n")
	if want := "2\tB>A\treply\tESTABLISHED\tSYN_RECV\tACCEPT\t-"; lines[1] != want {
		t.Errorf("--vlan-zones=false, SYN/ACK: got %q, want %q", lines[1], want)
	}
	if !strings.Contains(out, "# /proc/net/nf_conntrack (1 entries)") || !strings.Contains(out, " TIME_WAIT src=128.232.110.120 dst=66.35.250.204 sport=34855 dport=80 ") || !strings.Contains(out, " [ASSURED] mark=0 zone=0 use=2") {
		t.Errorf("--vlan-zones=false: want one TIME_WAIT entry in zone 0:\n%s", out)
	}

	code, out, errs = run(t, "replay", pcap)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines = strings.Split(out, "\n")
	if !strings.HasPrefix(lines[1], "2\tB>A\t") || !strings.Contains(lines[1], "\tINVALID\t") {
		t.Errorf("default, SYN/ACK: got %q, want INVALID (another zone)", lines[1])
	}
	if !strings.Contains(out, " zone=100 ") {
		t.Errorf("default: want the tagged direction's entry in zone=100:\n%s", out)
	}
}
