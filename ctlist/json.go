package ctlist

import (
	"github.com/statewire/statewire/flowtable"
	"github.com/statewire/statewire/helpers"
	"github.com/statewire/statewire/statemachine"
)

// TupleJSON is one direction of a connection.
type TupleJSON struct {
	Src      string  `json:"src"`
	Dst      string  `json:"dst"`
	SrcPort  *uint16 `json:"sport,omitempty"`
	DstPort  *uint16 `json:"dport,omitempty"`
	ICMPType *uint8  `json:"type,omitempty"`
	ICMPCode *uint8  `json:"code,omitempty"`
	ICMPID   *uint16 `json:"id,omitempty"`
}

// EntryJSON is one connection for machines (`-o json`, `--format=json`).
type EntryJSON struct {
	L3       string    `json:"l3"`
	Proto    string    `json:"proto"`
	ProtoNum uint8     `json:"protonum"`
	Timeout  int64     `json:"timeout"`
	State    string    `json:"state,omitempty"`
	Orig     TupleJSON `json:"original"`
	Reply    TupleJSON `json:"reply"`
	Status   []string  `json:"status"`
	Zone     uint16    `json:"zone"`
	Helper   string    `json:"helper,omitempty"`
}

func tupleJSON(t flowtable.Tuple) TupleJSON {
	j := TupleJSON{Src: flowtable.AddrString(t.Src), Dst: flowtable.AddrString(t.Dst)}
	switch {
	case t.IsICMP():
		ty, co, id := t.ICMPType(), t.ICMPCode(), t.ICMPID()
		j.ICMPType, j.ICMPCode, j.ICMPID = &ty, &co, &id
	case t.HasPorts():
		sp, dp := t.SrcPort, t.DstPort
		j.SrcPort, j.DstPort = &sp, &dp
	}
	return j
}

// JSON converts one entry.
func JSON(es *flowtable.EntrySnapshot, now int64) EntryJSON {
	l3, _ := L3Name(es.Orig.L3)
	j := EntryJSON{
		L3: l3, Proto: L4Name(es.Orig.Proto), ProtoNum: es.Orig.Proto,
		Timeout: Timeout(&es.Conn, now),
		Orig:    tupleJSON(es.Orig), Reply: tupleJSON(es.Reply()),
		Status: []string{}, Zone: es.Orig.VLAN,
	}
	if es.Orig.Proto == 6 {
		j.State = es.Conn.State.String()
	}
	if es.Conn.Status&statemachine.StatusSeenReply == 0 {
		j.Status = append(j.Status, "UNREPLIED")
	}
	if es.Conn.Status&statemachine.StatusAssured != 0 {
		j.Status = append(j.Status, "ASSURED")
	}
	if es.Conn.Status&statemachine.StatusExpected != 0 {
		j.Status = append(j.Status, "EXPECTED")
	}
	if es.Offloaded {
		// In the XDP fast path; Timeout is its live one.
		j.Status = append(j.Status, "OFFLOAD")
	}
	if es.Helper != 0 {
		j.Helper = helpers.ID(es.Helper).String()
	}
	return j
}
