package alg

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ftpSize is the file every FTP mode downloads.
const ftpSize = 5 << 20

// ftpMode is one way to open the data connection: curl's arguments.
type ftpMode struct {
	name string
	args []string
}

// ftpModes are curl's ways to open the data connection. Active modes make
// the server (right) connect to the client (left): NEW from the right, which
// only RELATED lets through. Passive modes make the client connect to a high
// port on the server: NEW from the left, but not to a control port.
var ftpModes = []ftpMode{
	{"active-PORT", []string{"--ftp-port", "198.18.0.1", "--disable-eprt"}},
	{"active-EPRT", []string{"--ftp-port", "198.18.0.1"}},
	{"passive-PASV", []string{"--ftp-pasv", "--disable-epsv"}},
	{"passive-EPSV", []string{"--ftp-pasv"}},
}

// startVsftpd runs vsftpd in the right namespace serving dir to anonymous
// users on port 21, passive ports 40000-40100, in the foreground.
func (r *rig) startVsftpd(t *testing.T, dir string) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "vsftpd.conf")
	text := fmt.Sprintf(`listen=YES
listen_ipv6=NO
listen_address=%s
listen_port=21
background=NO
anonymous_enable=YES
no_anon_password=YES
anon_root=%s
local_enable=NO
write_enable=NO
pasv_enable=YES
pasv_min_port=40000
pasv_max_port=40100
port_enable=YES
connect_from_port_20=YES
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
secure_chroot_dir=/var/run/vsftpd/empty
xferlog_enable=NO
dirmessage_enable=NO
data_connection_timeout=10
accept_timeout=5
connect_timeout=5
`, rightIP, dir)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("/var/run/vsftpd/empty", 0o755); err != nil {
		t.Fatal(err)
	}
	r.daemon(t, r.l.RightNS, "vsftpd", conf)
	r.waitListen(t, r.l.RightNS, rightIP.String()+":21")
}

// TestFTP downloads a 5 MB file from vsftpd on the right with curl on the
// left, in active (PORT, EPRT) and passive (PASV, EPSV) mode: with the ftp
// helper the file arrives intact and its data connection was RELATED;
// without it the data connection is dropped and curl fails.
func TestFTP(t *testing.T) {
	for _, helpers := range []bool{true, false} {
		t.Run(map[bool]string{true: "helper", false: "nohelper"}[helpers], func(t *testing.T) {
			runFTP(t, newRig(t, helpers), helpers, ftpModes)
		})
	}
}

// runFTP serves a 5 MB file with vsftpd on the right and downloads it with
// curl on the left in each mode, as a subtest per mode.
func runFTP(t *testing.T, r *rig, helpers bool, modes []ftpMode) {
	dir := publicDir(t)
	want := randomFile(t, dir, "file.bin", ftpSize)
	r.startVsftpd(t, dir)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.bin")
			maxTime := "60"
			if !helpers {
				maxTime = "4"
			}
			args := append([]string{"-sS", "--max-time", maxTime, "-o", out}, m.args...)
			args = append(args, fmt.Sprintf("ftp://%s/file.bin", rightIP))
			before := r.counts()
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			_, err := r.l.Run(ctx, r.l.LeftNS, "curl", args...)
			took := time.Since(start)
			if helpers {
				if err != nil {
					t.Fatalf("curl with the helper: %v", err)
				}
				got, n, err := fileSum(out)
				if err != nil || got != want {
					t.Fatalf("downloaded %d bytes (err %v), sha256 %x; want %d bytes, sha256 %x", n, err, got, ftpSize, want)
				}
				t.Logf("%d bytes in %v (%.0f Mbit/s)", n, took, float64(n)*8/took.Seconds()/1e6)
				r.checkRelated(t, before)
				r.checkHelperEntry(t, 21, "ftp")
				return
			}
			if err == nil {
				t.Fatalf("curl without the helper succeeded in %v; want the data connection dropped", took)
			}
			t.Logf("without the helper curl failed after %v as it should: %v", took, err)
			r.checkNoRelated(t, before)
		})
	}
}
