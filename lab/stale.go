package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ownerDir holds one file per live lab, named by its prefix, containing the
// owning process's pid and kernel start time. It lets RemoveStale in one
// test binary tell a lab of a concurrently running binary (go test runs
// packages in parallel) from the leftover of a killed run.
const ownerDir = "/run/statewire-lab"

// procStart is taken at package initialisation: no lab of this process can
// be older.
var procStart = time.Now()

var (
	nsName   = regexp.MustCompile(`^(sw[0-9a-f]{6})-(left|right|br|br2)$`)
	linkName = regexp.MustCompile(`^(sw[0-9a-f]{6})-(l|r|a|b|br)(\.[0-9]+)?$`)
	pinName  = regexp.MustCompile(`^(sw[0-9a-f]{6})([-.].*)?$`)
)

// PinRoot is where statewire run pins its XDP program per bridge name
// (offload.PinRoot; lab does not import offload).
const PinRoot = "/sys/fs/bpf/statewire"

// removePinDir unpins everything in dir (unlinking a bpffs pin drops its
// reference: an XDP link no process holds detaches) and removes dir.
func removePinDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("lab: %w", err))
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("lab: %w", err))
	}
	return errors.Join(errs...)
}

// removePins removes the pin directories of bridges named after prefix.
func removePins(prefix string) error {
	ents, _ := os.ReadDir(PinRoot)
	var errs []error
	for _, e := range ents {
		if m := pinName.FindStringSubmatch(e.Name()); m != nil && m[1] == prefix {
			errs = append(errs, removePinDir(filepath.Join(PinRoot, e.Name())))
		}
	}
	return errors.Join(errs...)
}

func writeOwner(prefix string) error {
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	st, err := startTime(os.Getpid())
	if err != nil {
		return err
	}
	rec := strconv.Itoa(os.Getpid()) + " " + st + "\n"
	if err := os.WriteFile(filepath.Join(ownerDir, prefix), []byte(rec), 0o644); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	return nil
}

func removeOwner(prefix string) { os.Remove(filepath.Join(ownerDir, prefix)) }

// startTime returns field 22 of /proc/PID/stat (start time in clock ticks
// since boot), which tells a reused pid from the original process.
func startTime(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", fmt.Errorf("lab: odd /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// s[i+1:] starts at field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return "", fmt.Errorf("lab: short /proc/%d/stat", pid)
	}
	return f[19], nil
}

// ownerAlive reports whether prefix has an owner record and its process
// still runs; known is false without a record.
func ownerAlive(prefix string) (alive, known bool) {
	b, err := os.ReadFile(filepath.Join(ownerDir, prefix))
	if err != nil {
		return false, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return false, true
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return false, true
	}
	st, err := startTime(pid)
	return err == nil && st == f[1], true
}

// RemoveStale deletes namespaces, root-namespace links and bpffs pin
// directories (PinRoot/sw<6 hex>..., left by a fail-open statewire run
// named after the lab) left by labs of killed runs: objects named
// sw<6 hex>-..., whose owner process is gone, or
// which have no owner record and are older than this process. Labs of live
// processes (including this one) are left alone. It returns the names it
// removed.
func RemoveStale() ([]string, error) {
	ctx := context.Background()
	stale := map[string]bool{}
	isStale := func(prefix string) bool {
		if v, ok := stale[prefix]; ok {
			return v
		}
		alive, known := ownerAlive(prefix)
		v := known && !alive
		if !known {
			// No record: judge by the age of the prefix's namespaces.
			v = true
			for _, suf := range []string{"-left", "-right", "-br"} {
				fi, err := os.Stat(filepath.Join(netnsDir, prefix+suf))
				if err == nil && !fi.ModTime().Before(procStart) {
					v = false
				}
			}
		}
		stale[prefix] = v
		return v
	}
	var removed []string
	var errs []error
	ents, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab: %w", err)
	}
	for _, e := range ents {
		m := nsName.FindStringSubmatch(e.Name())
		if m == nil || !isStale(m[1]) {
			continue
		}
		if err := run(ctx, "ip", "netns", "del", e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	ifs, err := net.Interfaces()
	if err != nil {
		errs = append(errs, err)
	}
	for _, ifi := range ifs {
		m := linkName.FindStringSubmatch(ifi.Name)
		if m == nil || !isStale(m[1]) {
			continue
		}
		if err := run(ctx, "ip", "link", "del", ifi.Name); err != nil {
			// The peer of a veth deleted just before is gone already.
			if _, gone := net.InterfaceByName(ifi.Name); gone != nil {
				continue
			}
			errs = append(errs, err)
			continue
		}
		removed = append(removed, ifi.Name)
	}
	// bpffs pins of statewire runs named after a lab (--name PREFIX...),
	// which --fail-mode=open leaves after a kill.
	pins, _ := os.ReadDir(PinRoot)
	for _, e := range pins {
		m := pinName.FindStringSubmatch(e.Name())
		if m == nil || !isStale(m[1]) {
			continue
		}
		if err := removePinDir(filepath.Join(PinRoot, e.Name())); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, filepath.Join(PinRoot, e.Name()))
	}
	for prefix, v := range stale {
		if v {
			removeOwner(prefix)
		}
	}
	// Records of dead owners whose objects are already gone.
	recs, _ := os.ReadDir(ownerDir)
	for _, r := range recs {
		if alive, known := ownerAlive(r.Name()); known && !alive {
			removeOwner(r.Name())
		}
	}
	sort.Strings(removed)
	return removed, errors.Join(errs...)
}
