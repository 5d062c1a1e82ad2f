package perf

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// The TCP session of the connections-per-second mode (RFC 9411 style): a
// client on the left host and a server on the right host play every
// connection to its end, each frame sent when the frame it answers has
// arrived. The session is a chain, every frame answered by exactly one
// (an XDP program answers a frame with one XDP_TX): the server speaks
// first after the handshake (as an SMTP or SSH server does) and closes
// first. Eight frames of 64 B (60 on the wire without FCS), c and s the
// initial sequence numbers, L the data length:
//
//	step 0  client SYN          seq c
//	step 1  server SYN|ACK      seq s        ack c+1
//	step 2  client ACK          seq c+1      ack s+1
//	step 3  server PSH|ACK      seq s+1      ack c+1      L bytes
//	step 4  client PSH|ACK      seq c+1      ack s+1+L    L bytes
//	step 5  server FIN|ACK      seq s+1+L    ack c+1+L
//	step 6  client FIN|ACK      seq c+1+L    ack s+2+L
//	step 7  server ACK          seq s+2+L    ack c+2+L
//
// A connection is complete when step 7 arrived at the client, as the
// client's program counts it (never the device). Every step has its own
// (flags, sequence number) pair, which is how the programs tell them
// apart.
const (
	cpsSteps   = 8
	cpsDataLen = 6
	// cpsFrameLen is every frame without FCS: 14 + 20 + 20 + 6 = 60 (the
	// frames without data carry 6 bytes of Ethernet padding).
	cpsFrameLen = 14 + 20 + 20 + cpsDataLen
	cpsISNC     = 0x10000000
	cpsISNS     = 0x50000000
	tcpFIN      = 0x01
)

// Connection k has client port 0x8000|k&0x7fff and server port
// 0x4000+k>>15, as the generator program writes them from its counter
// (genProgram's flow index): every connection of a run is a fresh 5-tuple
// up to cpsTuples connections.
const cpsTuples = 1 << 29

// cpsStep describes one step of the session.
type cpsStep struct {
	fromServer bool
	flags      uint8
	// seq and ack are offsets from the sender's and the peer's ISN.
	seq, ack uint32
	data     bool
}

var cpsScript = [cpsSteps]cpsStep{
	{false, tcpSYN, 0, 0, false},
	{true, tcpSYN | tcpACK, 0, 1, false},
	{false, tcpACK, 1, 1, false},
	{true, tcpPSH | tcpACK, 1, 1, true},
	{false, tcpPSH | tcpACK, 1, 1 + cpsDataLen, true},
	{true, tcpFIN | tcpACK, 1 + cpsDataLen, 1 + cpsDataLen, false},
	{false, tcpFIN | tcpACK, 1 + cpsDataLen, 2 + cpsDataLen, false},
	{true, tcpACK, 2 + cpsDataLen, 2 + cpsDataLen, false},
}

// cpsPorts returns the client and server ports of connection k.
func cpsPorts(k uint64) (client, server uint16) {
	k %= cpsTuples
	return uint16(0x8000 | k&0x7fff), uint16(0x4000 + k>>15)
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
	cp, sp := cpsPorts(k)
	return cpsBuildPorts(f, a, cp, sp, step)
}

// cpsBuildPorts is cpsBuild with the ports given: with both 0 it is the
// template the XDP programs write before they add the ports (and their sum
// to the TCP checksum).
func cpsBuildPorts(f []byte, a *cpsAddrs, cp, sp uint16, step int) int {
	if len(f) < cpsFrameLen || step < 0 || step >= cpsSteps {
		return 0
	}
	st := &cpsScript[step]
	f = f[:cpsFrameLen]
	clear(f)
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
// numbers, as the XDP programs do. Anything else (the hosts' own frames, a
// corrupted segment) returns ok false. It never panics on any input.
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
	if cp&0x8000 == 0 || sp < 0x4000 || sp >= 0x8000 {
		return 0, 0, false
	}
	k = uint64(sp-0x4000)<<15 | uint64(cp&0x7fff)
	flags, seq := f[47]&0x3f, binary.BigEndian.Uint32(f[38:])-isn
	for i := range cpsScript {
		st := &cpsScript[i]
		if st.fromServer == fromServer && st.flags == flags && st.seq == seq {
			return k, i, true
		}
	}
	return 0, 0, false
}
