package ring

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWaiterWake checks the wake-up protocol without privileges (an
// eventfd, no socket): a Wake while the owner is prepared ends its Wait
// (counted Woken) however long the timeout; a Wake while it is not
// prepared writes nothing, so the next Wait sleeps its timeout out; a
// Wake between Prepare and Wait is not lost; Wake after Close does
// nothing.
func TestWaiterWake(t *testing.T) {
	w, err := NewWaiter()
	if err != nil {
		t.Fatal(err)
	}

	// Woken from another goroutine while asleep.
	w.Prepare()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !w.Asleep() {
		}
		w.Wake()
	}()
	w.Wait(time.Hour)
	<-done
	if st := w.Stats(); st.Woken != 1 || st.Sleeps != 1 {
		t.Fatalf("after a Wake of a sleeping owner: got %+v, want 1 sleep ended by Woken", st)
	}

	// A Wake while the owner is awake leaves nothing behind.
	w.Wake()
	w.Prepare()
	w.Wait(time.Millisecond)
	if st := w.Stats(); st.Timeout != 1 || st.Woken != 1 {
		t.Fatalf("after a Wake of an awake owner: got %+v, want the next sleep to time out", st)
	}

	// A Wake between Prepare and Wait (the owner's second look found
	// nothing just before) is kept by the eventfd.
	w.Prepare()
	w.Wake()
	if w.Asleep() {
		t.Fatal("Wake left the asleep flag up")
	}
	w.Wait(time.Hour)
	if st := w.Stats(); st.Woken != 2 {
		t.Fatalf("Wake before Wait: got %+v, want Woken 2", st)
	}

	// Cancel: a Wake after it writes nothing.
	w.Prepare()
	w.Cancel()
	w.Wake()
	w.Prepare()
	w.Wait(time.Millisecond)
	if st := w.Stats(); st.Woken != 2 || st.Timeout != 2 {
		t.Fatalf("Wake after Cancel: got %+v, want no wake-up recorded", st)
	}

	w.Prepare()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.Wake() // must not write to a closed (maybe reused) descriptor
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestWaiterWakeAllocs checks that Wake and a Wait cost no allocation.
func TestWaiterWakeAllocs(t *testing.T) {
	w, err := NewWaiter()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if a := testing.AllocsPerRun(100, func() {
		w.Prepare()
		w.Wake()
		w.Wait(0)
	}); a != 0 {
		t.Errorf("Prepare, Wake, Wait: got %v allocs, want 0", a)
	}
}

// TestThreadWaiter checks a thread waiter (NewThreadWaiter: the owner's
// thread blocks in epoll_wait, no Go poller) keeps the protocol of
// TestWaiterWake: a Wake from another goroutine ends a long Wait (Woken),
// a Wait with nothing to end it sleeps its timeout out (rounded up to a
// millisecond, never cut short), a Wake between Prepare and Wait is kept,
// a Wake after Cancel is not, and Close closes it.
func TestThreadWaiter(t *testing.T) {
	w, err := NewThreadWaiter()
	if err != nil {
		t.Fatal(err)
	}
	w.Prepare()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !w.Asleep() {
		}
		w.Wake()
	}()
	start := time.Now()
	w.Wait(time.Hour)
	<-done
	if st := w.Stats(); st.Woken != 1 || st.Sleeps != 1 {
		t.Fatalf("after a Wake of a sleeping owner: got %+v, want 1 sleep ended by Woken", st)
	}
	if el := time.Since(start); el > time.Minute {
		t.Fatalf("Wake ended a one-hour Wait after %v", el)
	}

	w.Prepare()
	start = time.Now()
	w.Wait(300 * time.Microsecond)
	if el := time.Since(start); el < 300*time.Microsecond {
		t.Errorf("Wait(300µs) with nothing to wake it returned after %v, want at least the timeout", el)
	}
	if st := w.Stats(); st.Timeout != 1 {
		t.Fatalf("Wait with no wake-up: got %+v, want it ended by Timeout", st)
	}

	w.Prepare()
	w.Wake()
	w.Wait(time.Hour)
	if st := w.Stats(); st.Woken != 2 {
		t.Fatalf("Wake before Wait: got %+v, want Woken 2", st)
	}

	w.Prepare()
	w.Cancel()
	w.Wake()
	w.Prepare()
	w.Wait(0)
	if st := w.Stats(); st.Woken != 2 || st.Timeout != 2 {
		t.Fatalf("Wake after Cancel: got %+v, want no wake-up recorded", st)
	}
	if a := testing.AllocsPerRun(100, func() {
		w.Prepare()
		w.Wake()
		w.Wait(0)
	}); a != 0 {
		t.Errorf("Prepare, Wake, Wait: got %v allocs, want 0", a)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.Wake()
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestWaiterArm checks that the watched sockets are in the epoll set only
// while the owner sleeps, without privileges: an eventfd stands in for an
// AF_XDP socket (Watch only uses its descriptor; epoll treats both as
// readable files). After Disarm a readable "socket" is not reported by
// the set; a Wait puts it back and, the set being level-triggered, returns
// at once for readiness that came while it was out (counted RX), with no
// allocation; Disarm then takes it out again. Both kinds of Waiter.
func TestWaiterArm(t *testing.T) {
	t.Run("poller", func(t *testing.T) { testWaiterArm(t, NewWaiter) })
	t.Run("thread", func(t *testing.T) { testWaiterArm(t, NewThreadWaiter) })
}

func testWaiterArm(t *testing.T, newWaiter func() (*Waiter, error)) {
	w, err := newWaiter()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := w.Watch(&Socket{fd: fd}); err != nil {
		t.Fatal(err)
	}
	inSet := func() bool {
		var ev [4]unix.EpollEvent
		n, err := unix.EpollWait(w.epfd, ev[:], 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ev[:max(n, 0)] {
			if int(e.Fd) == fd {
				return true
			}
		}
		return false
	}
	if _, err := unix.Write(fd, wakeValue[:]); err != nil { // readable from now on
		t.Fatal(err)
	}
	if !w.Armed() || !inSet() {
		t.Fatal("after Watch: the socket is not in the epoll set")
	}
	w.Disarm()
	if w.Armed() || inSet() {
		t.Fatal("after Disarm: the readable socket is still reported by the epoll set")
	}
	w.Disarm() // a second one is a no-op
	if d := w.Stats().Disarmed; d != 1 {
		t.Fatalf("Disarmed got %d after one Disarm of armed sockets and one of disarmed ones, want 1", d)
	}
	start := time.Now()
	w.Prepare()
	w.Wait(time.Hour)
	if st := w.Stats(); st.RX != 1 || st.Sleeps != 1 {
		t.Fatalf("Wait with a readable socket out of the set: got %+v, want 1 sleep ended by RX", st)
	}
	if d := time.Since(start); d > time.Minute {
		t.Fatalf("Wait took %v for a socket already readable", d)
	}
	if !w.Armed() || !inSet() {
		t.Fatal("after Wait: the socket is not in the epoll set")
	}
	w.Disarm()
	if inSet() {
		t.Fatal("after the second Disarm: the socket is still in the epoll set")
	}
	if a := testing.AllocsPerRun(100, func() {
		w.Prepare()
		w.Wait(time.Hour) // returns at once: the socket is readable
		w.Disarm()
	}); a != 0 {
		t.Errorf("Wait (arming) and Disarm: got %v allocs, want 0", a)
	}
}
