package offload

import "github.com/statewire/statewire/flowtable"

// HoldLock takes the lock of e's active flow from userspace, as Peek's
// fallback does, and returns its release; ok is false when e is not
// offered. Frames of the flow then find the lock held (lock_flow_spin).
func (p *Program) HoldLock(e *flowtable.Entry) (release func(), ok bool) {
	k := e.Key()
	mk := mapKey(&k)
	var v bpfFlowValue
	if err := p.flows.Lookup(&mk, &v); err != nil {
		return nil, false
	}
	if !p.rev.lock(v.Slot, uint64(v.Gen)) {
		return nil, false
	}
	return func() { p.rev.unlock(v.Slot, uint64(v.Gen)) }, true
}
