package ipset

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strconv"
)

// Save writes the sets in `ipset save` form, which Parse (and `ipset
// restore`) read back to the same sets: create lines in creation order
// (list:set ones last, as ipset saves them, so their members exist first),
// each followed by its elements in a fixed order. What statewire does not
// apply (timeouts, counters, comments) is not written back; CIDRs and
// ranges of hash:ip and the port types are written expanded, as ipset
// does.
func (ss *Sets) Save(w io.Writer) error {
	bw := bufio.NewWriter(w)
	if ss != nil {
		for pass := 0; pass < 2; pass++ {
			for _, s := range ss.order {
				if (s.typ == ListSet) != (pass == 1) {
					continue
				}
				s.save(bw)
			}
		}
	}
	return bw.Flush()
}

func (s *Set) save(w *bufio.Writer) {
	fmt.Fprintf(w, "create %s %s", s.name, s.typ)
	switch s.typ {
	case BitmapPort:
		fmt.Fprintf(w, " range %d-%d", s.first, s.last)
	case ListSet:
		fmt.Fprintf(w, " size %d", s.size)
	default:
		fmt.Fprintf(w, " family %s hashsize %d maxelem %d", familyName(s.family), s.hashsize, s.maxelem)
		if s.netmask != 0 {
			fmt.Fprintf(w, " netmask %d", s.netmask)
		}
	}
	for _, f := range s.flags {
		w.WriteString(" " + f)
	}
	w.WriteString("\n")
	add := func(e string) { w.WriteString("add " + s.name + " " + e + "\n") }
	switch s.typ {
	case HashIP:
		ks := make([]key, 0, len(s.ips))
		for k := range s.ips {
			ks = append(ks, k)
		}
		sortKeys(ks)
		for _, k := range ks {
			add(addrString(k))
		}
	case HashNet:
		for _, l := range s.nets {
			ks := make([]key, 0, len(l.m))
			for k := range l.m {
				ks = append(ks, k)
			}
			sortKeys(ks)
			for _, k := range ks {
				e := addrString(k) + "/" + strconv.Itoa(int(l.bits))
				if l.m[k] {
					e += " nomatch"
				}
				add(e)
			}
		}
	case HashIPPort:
		ks := make([]pkey, 0, len(s.ipp))
		for k := range s.ipp {
			ks = append(ks, k)
		}
		sortPKeys(ks)
		for _, k := range ks {
			add(addrString(k.a) + "," + protoPortString(k.proto, k.port))
		}
	case HashNetPort:
		for _, l := range s.netp {
			ks := make([]pkey, 0, len(l.m))
			for k := range l.m {
				ks = append(ks, k)
			}
			sortPKeys(ks)
			for _, k := range ks {
				e := addrString(k.a) + "/" + strconv.Itoa(int(l.bits)) + "," + protoPortString(k.proto, k.port)
				if l.m[k] {
					e += " nomatch"
				}
				add(e)
			}
		}
	case BitmapPort:
		for id := 0; id <= int(s.last-s.first); id++ {
			if s.bits[id/64]&(1<<(id%64)) != 0 {
				add(strconv.Itoa(int(s.first) + id))
			}
		}
	case ListSet:
		for _, m := range s.members {
			add(m.name)
		}
	}
}

func sortKeys(ks []key) {
	sort.Slice(ks, func(i, j int) bool {
		return ks[i].hi < ks[j].hi || ks[i].hi == ks[j].hi && ks[i].lo < ks[j].lo
	})
}

func sortPKeys(ks []pkey) {
	sort.Slice(ks, func(i, j int) bool {
		a, b := ks[i], ks[j]
		if a.a != b.a {
			return a.a.hi < b.a.hi || a.a.hi == b.a.hi && a.a.lo < b.a.lo
		}
		if a.proto != b.proto {
			return a.proto < b.proto
		}
		return a.port < b.port
	})
}

func addrString(k key) string {
	var b [16]byte
	for i := 0; i < 8; i++ {
		b[i] = byte(k.hi >> (56 - 8*i))
		b[8+i] = byte(k.lo >> (56 - 8*i))
	}
	return netip.AddrFrom16(b).Unmap().String()
}

// protoNames are the names Save writes (ipset's; others as numbers).
var protoNames = map[uint8]string{6: "tcp", 17: "udp", 132: "sctp", 136: "udplite", 1: "icmp", 58: "ipv6-icmp"}

func protoPortString(proto uint8, port uint16) string {
	name, ok := protoNames[proto]
	if !ok {
		name = strconv.Itoa(int(proto))
	}
	if proto == 1 || proto == 58 {
		return name + ":" + strconv.Itoa(int(port>>8)) + "/" + strconv.Itoa(int(port&0xff))
	}
	return name + ":" + strconv.Itoa(int(port))
}
