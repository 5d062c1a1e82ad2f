// Package sched puts the calling OS thread on a CPU (Pin) and under a
// scheduling policy or nice value (FIFO, Idle, Nice): the one place where
// statewire's worker threads, the perf harness's generator and floor
// threads, and the state sync's thread are placed and prioritised. Threads
// of other processes, by pid (ksoftirqd, NAPI threads in package perf),
// are not its business.
//
// # Ownership
//
// Every function acts on the calling OS thread only (pid 0 in
// sched_setaffinity(2), sched_setattr(2) and setpriority(2)), and nothing
// here locks a goroutine to its thread: the caller must have called
// runtime.LockOSThread first, or the setting lands on whichever thread the
// goroutine happens to run on and stays with that thread when the runtime
// hands it to another goroutine. For the same reason a caller that changed
// its thread should let the goroutine exit locked (the runtime then ends
// the thread) rather than call runtime.UnlockOSThread: a pinned or
// real-time thread back in the runtime's pool pins or prioritises whatever
// goroutine it runs next.
//
// The errors say what the operator can do about a refusal; the callers
// name the flag that chose the CPU. They wrap the kernel's errno (errors.Is
// with unix.EPERM, unix.EINVAL works).
package sched
