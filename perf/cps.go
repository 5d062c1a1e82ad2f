package perf

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// The TCP session of the connections-per-second mode (RFC 9411 style): a
// client on the left host and a server on the right host play every
// connection to its end, each frame sent only when the frame it answers has
// arrived. Eight frames of 64 B (60 on the wire without FCS), c and s the
// initial sequence numbers, L the data length:
//
//	step 0  client SYN          seq c
//	step 1  server SYN|ACK      seq s        ack c+1
//	step 2  client ACK          seq c+1      ack s+1
//	step 3  client PSH|ACK      seq c+1      ack s+1      L bytes
//	step 4  server PSH|ACK      seq s+1      ack c+1+L    L bytes
//	step 5  client FIN|ACK      seq c+1+L    ack s+1+L
//	step 6  server FIN|ACK      seq s+1+L    ack c+2+L
//	step 7  client ACK          seq c+2+L    ack s+2+L
//
// A connection is complete when all eight arrived at the other side, as
// recorded by the endpoints (never by the device).
const (
	cpsSteps   = 8
	cpsAllSeen = 1<<cpsSteps - 1
	cpsDataLen = 6
	// cpsFrameLen is the frame without FCS: 14 + 20 + 20 + 6 = 60.
	cpsFrameLen = 14 + 20 + 20 + cpsDataLen
	cpsISNC     = 0x10000000
	cpsISNS     = 0x50000000
	tcpFIN      = 0x01
)

// Connection k has ports cpsPortBase + k%cpsPortSpan (client) and
// cpsPortBase + k/cpsPortSpan%cpsPortSpan (server): every connection of a
// run is a fresh 5-tuple up to cpsTuples connections.
const (
	cpsPortBase = 1024
	cpsPortSpan = 64000
	cpsTuples   = cpsPortSpan * cpsPortSpan
)

// cpsStep describes one step of the session.
type cpsStep struct {
	fromServer bool
	flags      uint8
	// seq and ack are offsets from the sender's and the peer's ISN.
	seq, ack uint32
	data     bool
	// next are the steps its arrival triggers at the receiving side.
	next []int
}

var cpsScript = [cpsSteps]cpsStep{
	{false, tcpSYN, 0, 0, false, []int{1}},
	{true, tcpSYN | tcpACK, 0, 1, false, []int{2, 3}},
	{false, tcpACK, 1, 1, false, nil},
	{false, tcpPSH | tcpACK, 1, 1, true, []int{4}},
	{true, tcpPSH | tcpACK, 1, 1 + cpsDataLen, true, []int{5}},
	{false, tcpFIN | tcpACK, 1 + cpsDataLen, 1 + cpsDataLen, false, []int{6}},
	{true, tcpFIN | tcpACK, 1 + cpsDataLen, 2 + cpsDataLen, false, []int{7}},
	{false, tcpACK, 2 + cpsDataLen, 2 + cpsDataLen, false, nil},
}

// cpsPorts returns the client and server ports of connection k.
func cpsPorts(k uint64) (client, server uint16) {
	k %= cpsTuples
	return uint16(cpsPortBase + k%cpsPortSpan), uint16(cpsPortBase + k/cpsPortSpan)
}

// cpsAddrs are the Ethernet and IPv4 addresses of the two endpoints.
type cpsAddrs struct {
	clientMAC, serverMAC net.HardwareAddr
	client, server       netip.Addr
}

// cpsBuild writes step of connection k into f (at least cpsFrameLen bytes)
// with valid IPv4 and TCP checksums and returns the frame length (0 when f
// is too short).
func cpsBuild(f []byte, a *cpsAddrs, k uint64, step int) int {
	if len(f) < cpsFrameLen || step < 0 || step >= cpsSteps {
		return 0
	}
	st := &cpsScript[step]
	f = f[:cpsFrameLen]
	clear(f)
	cp, sp := cpsPorts(k)
	srcMAC, dstMAC, src, dst := a.clientMAC, a.serverMAC, a.client, a.server
	sport, dport, isn, peer := cp, sp, uint32(cpsISNC), uint32(cpsISNS)
	if st.fromServer {
		srcMAC, dstMAC, src, dst = a.serverMAC, a.clientMAC, a.server, a.client
		sport, dport, isn, peer = sp, cp, cpsISNS, cpsISNC
	}
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ipLen := 20 + 20
	if st.data {
		ipLen += cpsDataLen
	}
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(ipLen))
	ip[6] = 0x40
	ip[8] = 64
	ip[9] = 6
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum16(ip, 0)))
	tcp := f[34 : 14+ipLen]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], isn+st.seq)
	if st.flags&tcpACK != 0 {
		binary.BigEndian.PutUint32(tcp[8:], peer+st.ack)
	}
	tcp[12] = 5 << 4
	tcp[13] = st.flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	if st.data {
		binary.LittleEndian.PutUint32(tcp[20:], Magic)
	}
	var ps uint32
	ps = sum16(s4[:], ps)
	ps = sum16(d4[:], ps)
	ps += 6 + uint32(len(tcp))
	binary.BigEndian.PutUint16(tcp[16:], ^fold(sum16(tcp, ps)))
	return cpsFrameLen
}

// cpsParse recognises a frame of the session: the connection index modulo
// cpsTuples and the step, from the addresses, ports, flags and sequence
// numbers. Anything else (the hosts' own frames, a corrupted segment)
// returns ok false. It never panics on any input.
func cpsParse(f []byte, a *cpsAddrs) (k uint64, step int, ok bool) {
	if len(f) < 54 || binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[14] != 0x45 || f[23] != 6 {
		return 0, 0, false
	}
	c4, s4 := a.client.As4(), a.server.As4()
	var fromServer bool
	switch {
	case [4]byte(f[26:30]) == c4 && [4]byte(f[30:34]) == s4:
	case [4]byte(f[26:30]) == s4 && [4]byte(f[30:34]) == c4:
		fromServer = true
	default:
		return 0, 0, false
	}
	sport, dport := binary.BigEndian.Uint16(f[34:]), binary.BigEndian.Uint16(f[36:])
	cp, sp := sport, dport
	isn := uint32(cpsISNC)
	if fromServer {
		cp, sp, isn = dport, sport, cpsISNS
	}
	if cp < cpsPortBase || cp >= cpsPortBase+cpsPortSpan || sp < cpsPortBase || sp >= cpsPortBase+cpsPortSpan {
		return 0, 0, false
	}
	k = uint64(sp-cpsPortBase)*cpsPortSpan + uint64(cp-cpsPortBase)
	flags, seq := f[47]&0x3f, binary.BigEndian.Uint32(f[38:])-isn
	for i := range cpsScript {
		st := &cpsScript[i]
		if st.fromServer == fromServer && st.flags == flags && st.seq == seq {
			return k, i, true
		}
	}
	return 0, 0, false
}

// cpsPlayer is the state of one trial's connections: which frames of each
// connection arrived. Connection i of the trial is connection base+i of the
// run. One goroutine (the trial loop) owns it.
type cpsPlayer struct {
	base uint64
	seen []uint8
	// stray counts frames that are not of this trial's connections, arrive
	// at the wrong side or a second time.
	stray uint64
	// full counts the connections whose frames have all arrived.
	full int
}

func newCPSPlayer(base uint64, n int) *cpsPlayer {
	return &cpsPlayer{base: base, seen: make([]uint8, n)}
}

// deliver records frame f arriving at the server (atServer) or the client
// and returns the connection's index in the trial and the step, with ok
// false for a frame that triggers nothing (stray or duplicate). The steps
// to send in answer are cpsScript[step].next.
func (p *cpsPlayer) deliver(f []byte, a *cpsAddrs, atServer bool) (idx int, step int, ok bool) {
	k, step, ok := cpsParse(f, a)
	if !ok || cpsScript[step].fromServer == atServer {
		p.stray++
		return 0, 0, false
	}
	i := (k + cpsTuples - p.base%cpsTuples) % cpsTuples
	if i >= uint64(len(p.seen)) {
		p.stray++
		return 0, 0, false
	}
	bit := uint8(1) << step
	if p.seen[i]&bit != 0 {
		p.stray++
		return 0, 0, false
	}
	p.seen[i] |= bit
	if p.seen[i] == cpsAllSeen {
		p.full++
	}
	return int(i), step, true
}

// complete returns how many of the trial's connections from..to-1 have
// had all their frames arrive.
func (p *cpsPlayer) complete(from, to int) (n int) {
	to = min(to, len(p.seen))
	for i := max(from, 0); i < to; i++ {
		if p.seen[i] == cpsAllSeen {
			n++
		}
	}
	return n
}
