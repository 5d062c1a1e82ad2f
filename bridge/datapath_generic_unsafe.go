package bridge

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// checkGenericSegments reports, for a port attached in generic (skb) XDP
// mode, what will drop frames there, or nil: generic XDP runs on the skb,
// after the sender's segmentation offloads, so a veth whose peer has TSO
// or GSO on (the kernel's default) hands it TCP super-frames of up to 64
// KB; they fit no UMEM frame and the kernel drops them before the RX ring
// (XDP_STATISTICS rx_dropped): TCP stalls. In native mode veth turns TSO
// off on the peer itself (veth_fix_features drops NETIF_F_GSO_SOFTWARE
// while the port has a program), so this is a generic-mode check only.
// Only veth ports are checked: the peer is where the fix goes.
func checkGenericSegments(ifname string) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return err
	}
	if l.Type() != "veth" || l.Attrs().ParentIndex == 0 {
		return nil
	}
	ns, err := peerNamespace(l.Attrs().NetNsID)
	if err != nil {
		return fmt.Errorf("%s is a veth; its peer's namespace (nsid %d): %w", ifname, l.Attrs().NetNsID, err)
	}
	defer ns.Close()
	var pname string
	var tso, gso bool
	err = inNamespace(ns, func() error {
		pl, err := netlink.LinkByIndex(l.Attrs().ParentIndex)
		if err != nil {
			return err
		}
		pname = pl.Attrs().Name
		if tso, err = ethtoolFlag(pname, ethtoolGTSO); err != nil {
			return err
		}
		gso, err = ethtoolFlag(pname, ethtoolGGSO)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s is a veth; checking its peer: %w", ifname, err)
	}
	if tso || gso {
		return fmt.Errorf("%s is a veth in generic XDP mode whose peer %s has TSO or GSO on: its TCP super-frames (up to 64 KB) fit no UMEM frame and are dropped, TCP stalls (ethtool -K %s tso off gso off, or run in native mode)",
			ifname, pname, pname)
	}
	return nil
}

// ethtool commands that read one feature flag (struct ethtool_value).
const (
	ethtoolGTSO = 0x1e
	ethtoolGGSO = 0x23
)

// ethtoolFlag reads one ethtool_value feature flag of ifname (in the
// calling thread's namespace).
func ethtoolFlag(ifname string, cmd uint32) (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	val := struct{ cmd, data uint32 }{cmd: cmd}
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data uintptr
		_    [16]byte
	}
	copy(ifr.name[:], ifname)
	ifr.data = uintptr(unsafe.Pointer(&val))
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return false, fmt.Errorf("ethtool command %#x on %s: %w", cmd, ifname, errno)
	}
	runtime.KeepAlive(&val)
	return val.data != 0, nil
}
