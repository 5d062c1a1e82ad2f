package bridge

import (
	"github.com/statewire/statewire/ring"
	"github.com/statewire/statewire/rules"
)

// answer sends the REJECT answer to a frame received on port in of q
// (first descriptor d, nb buffers, frame its bytes as judged) back out of
// port in: the answer is built in the pipeline's scratch and written over
// the frame's first buffer, which goes on port in's TX ring (the UMEM is
// shared by both ports of the queue); the rest of a chain is freed. It
// reports whether the buffer was used: if not (no answer, no room), the
// caller frees the frame as for any drop. Worker only.
func (w *worker) answer(q *dpQueue, in Port, d ring.Desc, nb uint32, frame []byte, k rules.RejectWith, now int64) bool {
	ans := w.pl.RejectAnswer(frame, k, now)
	if len(ans) == 0 {
		return false
	}
	buf := q.umem.Frame(d.Addr, uint32(len(ans)))
	s := q.sock[in]
	tx := s.TX()
	if buf == nil {
		w.pl.NoteRejectSent(k, false)
		return false
	}
	got, t := tx.Reserve(1)
	if got != 1 {
		w.pl.NoteRejectSent(k, false)
		return false
	}
	copy(buf, ans)
	tx.Set(t, ring.Desc{Addr: d.Addr, Len: uint32(len(ans))})
	tx.Submit(1)
	s.KickTX()
	if nb > 1 && d.More() {
		q.freeFrame(q.nextBuf(d))
	}
	q.ctr[in].Answers++
	w.pl.NoteRejectSent(k, true)
	return true
}

// answerHandedOff is answer for a frame of ours another worker judged
// (its reply carries the REJECT's answer kind).
func (w *worker) answerHandedOff(q *dpQueue, h *handoff, d ring.Desc, now int64) bool {
	var frame []byte
	nb := uint32(1)
	if d.More() {
		nb = q.chainLen(d)
		frame = q.gather(d, w.one)
	} else {
		frame = q.umem.Frame(d.Addr, d.Len)
	}
	if frame == nil {
		return false
	}
	return w.answer(q, h.in, d, nb, frame, h.reject, now)
}
