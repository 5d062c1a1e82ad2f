// Package alg holds the end-to-end tests of the conntrack helpers (issue 4):
// real FTP (vsftpd, curl), TFTP (tftpd-hpa, tftp-hpa) and IRC (ngircd, with a
// small raw-TCP IRC client for the DCC users) peers from Debian's packages,
// talking through statewire's AF_XDP datapath in the lab. The FORWARD rules
// admit NEW connections only from the left and only to the control ports
// (21, 69, 6667), and ESTABLISHED,RELATED both ways, so every data connection
// passes only if a helper made it RELATED. Each protocol runs twice: with the
// helper attached by a raw-table CT --helper rule (the transfer works, and the
// pipeline counts expectations created and used) and without it (the
// transfer fails within a short timeout, and no expectation is counted).
//
// The daemons run inside the lab's right namespace with configuration files
// in t.TempDir(), in the foreground, and are killed in t.Cleanup. Services the
// Debian packages' postinst may have started live in the root namespace and
// cannot see the lab's addresses, so they do not interfere.
//
// Ownership: each test owns its lab, datapath and daemons; the datapath's
// workers own their rings (see bridge.Datapath), the test goroutine only
// starts, reads published counters and stops.
//
// The tests need root; they skip without it, and fail in CI (CI=true).
package alg
