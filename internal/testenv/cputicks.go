package testenv

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// ClockTicks is USER_HZ, the unit of the CPU times in /proc (100 on Linux).
const ClockTicks = 100

// CPUTicks returns utime + stime (fields 14 and 15) of a /proc stat file:
// /proc/PID/stat for a process, /proc/PID/task/TID/stat for one thread.
func CPUTicks(t testing.TB, path string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		t.Fatalf("%s: %q: too few fields", path, s)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	k, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("%s: utime %q stime %q", path, f[11], f[12])
	}
	return u + k
}
