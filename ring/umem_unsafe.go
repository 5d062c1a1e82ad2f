package ring

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmapArea maps an anonymous, pre-faulted area for the UMEM.
func mmapArea(size int) ([]byte, error) {
	return unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
}

func munmap(b []byte) error { return unix.Munmap(b) }

func closeFD(fd int) error { return unix.Close(fd) }

// registerUMEM is setsockopt(XDP_UMEM_REG) with struct xdp_umem_reg.
func registerUMEM(fd int, area []byte, frameSize, headroom int) error {
	reg := unix.XDPUmemReg{
		Addr:     uint64(uintptr(unsafe.Pointer(&area[0]))),
		Len:      uint64(len(area)),
		Size:     uint32(frameSize),
		Headroom: uint32(headroom),
	}
	return setsockopt(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg))
}

func setsockopt(fd, opt int, p unsafe.Pointer, n uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), n, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getsockopt(fd, opt int, p unsafe.Pointer, n uintptr) error {
	l := uint32(n)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	return nil
}
