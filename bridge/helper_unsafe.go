package bridge

import (
	"unsafe"

	"github.com/statewire/statewire/flowtable"
)

// helperSlotSize is the size of a helperSlot: the flow table keeps one per
// entry slot (flowtable.Config.AuxSize), so with a state file the helpers'
// state survives a restart with its connection, and the state file's
// layout fingerprint records it.
const helperSlotSize = int(unsafe.Sizeof(helperSlot{}))

// helperStatesOf returns shard i's helper slots: a view of the table's aux
// slots when it keeps them (helperSlot holds no pointers; the aux region
// is 8-byte aligned), else a fresh array (a table made without AuxSize:
// replay, tests).
func helperStatesOf(t *flowtable.Table, i int) helperStates {
	n := t.Shard(i).Max()
	aux := t.Aux(i)
	if len(aux) != n*helperSlotSize || n == 0 {
		return make(helperStates, n)
	}
	return unsafe.Slice((*helperSlot)(unsafe.Pointer(&aux[0])), n)
}
