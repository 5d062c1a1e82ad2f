package statemachine

import (
	"time"

	"github.com/statewire/statewire/packet"
)

// Packet classes (kernel enum tcp_bit_set), the middle index of
// tcpConntracks. The order is the kernel's: LastIndex stores these values.
const (
	classSyn    uint8 = iota // SYN without ACK
	classSynAck              // SYN+ACK
	classFin                 // FIN (no SYN, no RST)
	classAck                 // ACK only
	classRst                 // RST, whatever else is set
	classNone                // none of the above
	numClasses
)

// tcpClass returns the packet class, in the kernel's priority order
// rst > synack > syn > fin > ack > none.
func tcpClass(flags uint8) uint8 {
	switch {
	case flags&packet.TCPRst != 0:
		return classRst
	case flags&packet.TCPSyn != 0:
		if flags&packet.TCPAck != 0 {
			return classSynAck
		}
		return classSyn
	case flags&packet.TCPFin != 0:
		return classFin
	case flags&packet.TCPAck != 0:
		return classAck
	}
	return classNone
}

// tcpFlagMask keeps FIN, SYN, RST, ACK and URG: PSH, ECE and CWR are always
// valid and take no part in the combination check.
const tcpFlagMask = packet.TCPFin | packet.TCPSyn | packet.TCPRst | packet.TCPAck | packet.TCPUrg

// tcpValidFlags is the kernel's tcp_valid_flags: the only combinations of
// FIN|SYN|RST|ACK|URG a legitimate segment carries.
var tcpValidFlags = [tcpFlagMask + 1]bool{
	packet.TCPSyn:                                 true,
	packet.TCPSyn | packet.TCPUrg:                 true,
	packet.TCPSyn | packet.TCPAck:                 true,
	packet.TCPRst:                                 true,
	packet.TCPRst | packet.TCPAck:                 true,
	packet.TCPFin | packet.TCPAck:                 true,
	packet.TCPFin | packet.TCPAck | packet.TCPUrg: true,
	packet.TCPAck:                                 true,
	packet.TCPAck | packet.TCPUrg:                 true,
}

// Short names for the table, as in the kernel source.
const (
	sNO = TCPNone
	sSS = TCPSynSent
	sSR = TCPSynRecv
	sES = TCPEstablished
	sFW = TCPFinWait
	sCW = TCPCloseWait
	sLA = TCPLastAck
	sTW = TCPTimeWait
	sCL = TCPClose
	sS2 = TCPSynSent2
	sIV = tcpIV
	sIG = tcpIG
)

// tcpConntracks is the kernel's tcp_conntracks[dir][class][state]: the new
// state of a connection in state (column) when a packet of class (row)
// arrives in dir. sIV: the packet is INVALID; sIG: accepted, no state change.
var tcpConntracks = [2][numClasses][NumTCPStates]TCPState{
	Original: {
		//            sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2
		classSyn: {sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2},
		// syn: NO→SS new connection; SS→SS retransmitted SYN; S2→S2 late
		// retransmission; SR..LA→IG: a SYN in window outside SYN_SENT is
		// an error the receiver answers with RST (or we are out of sync);
		// TW, CL→SS: reopened connection (RFC 1122).
		classSynAck: {sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR},
		// synack: the client cannot send SYN then SYN/ACK (NO, SS→IV);
		// S2→SR: SYN/ACK to SYN2 in simultaneous open; SR→SR late
		// retransmission of that; everything later: invalid from the client.
		classFin: {sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV},
		// fin: not before the SYN/ACK (NO, SS, S2→IV); SR, ES→FW close
		// starts; FW, CW→LA FIN seen both ways; LA→LA retransmitted FIN.
		classAck: {sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV},
		// ack: NO→ES pickup (loose); SS→IV no SYN/ACK seen yet; SR→ES
		// handshake done; FW→CW close answered; LA→TW last ACK
		// (RFC 5961 challenge ACKs are caught after the lookup).
		classRst: {sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
		// rst: closes anything that exists; validated after the lookup.
		classNone: {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
		// none: a segment without SYN, FIN, ACK or RST is never valid.
	},
	Reply: {
		//            sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2
		classSyn: {sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2},
		// syn: SS→S2 simultaneous open; S2→S2 its retransmission; TW→SS
		// reopened by the server that switched roles; otherwise invalid.
		classSynAck: {sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR},
		// synack: SS→SR standard open; S2→SR simultaneous open; later:
		// retransmitted SYN/ACK or one answering an ignored SYN (IG).
		classFin: {sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV},
		// fin: the server may not FIN before the handshake; then as original.
		classAck: {sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG},
		// ack: SS, S2→IG maybe a half-open connection (challenge ACK);
		// SR→SR may answer a late SYN; FW→CW; LA→TW last ACK.
		classRst: {sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
		// rst: as original.
		classNone: {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
		// none: never valid.
	},
}

// before reports whether sequence number a comes before b (wrap-around,
// signed 32-bit difference), as the kernel's before().
func before(a, b uint32) bool { return int32(a-b) < 0 }

// after reports whether a comes after b.
func after(a, b uint32) bool { return int32(b-a) < 0 }

// maxAckWinConst is the kernel's MAXACKWINCONST: the lower ACK bound is at
// least this far behind td_end.
const maxAckWinConst = 66000

// tcpMaxWScale is RFC 7323's largest window shift (kernel TCP_MAX_WSCALE).
const tcpMaxWScale = 14

// segEnd is seq + payload + SYN + FIN (kernel segment_seq_plus_len).
func segEnd(p *packet.Packet) uint32 {
	end := p.TCP.Seq + p.PayloadLen
	if p.TCP.Flags&packet.TCPSyn != 0 {
		end++
	}
	if p.TCP.Flags&packet.TCPFin != 0 {
		end++
	}
	return end
}

// tcpOptions records the window scale and SACK-permitted options of a SYN
// or SYN/ACK in peer (kernel tcp_options). Like the kernel it resets the
// peer's scale and flags only when the header has options at all, and keeps
// BE_LIBERAL (flags &= IP_CT_TCP_FLAG_BE_LIBERAL): a side of a picked-up
// connection stays liberal when a SYN/ACK re-initialises it.
func tcpOptions(peer *TCPPeer, th *packet.TCP) {
	if th.DataOff <= 20 {
		return
	}
	peer.Scale = 0
	peer.Flags &= TCPFlagBeLiberal
	if th.SACKPerm {
		peer.Flags |= TCPFlagSACKPerm
	}
	if th.WScale != packet.WScaleAbsent {
		peer.Scale = min(th.WScale, tcpMaxWScale)
		peer.Flags |= TCPFlagWindowScale
	}
}

// tcpSACK returns the highest SACK right edge after sack (kernel tcp_sack).
func tcpSACK(th *packet.TCP, sack uint32) uint32 {
	n := int(th.NumSACK)
	if n > len(th.SACK) {
		n = len(th.SACK)
	}
	for i := 0; i < n; i++ {
		if after(th.SACK[i].Right, sack) {
			sack = th.SACK[i].Right
		}
	}
	return sack
}

// tcpNew initialises c.TCP from the first packet of a connection (kernel
// tcp_new). It returns a reason when no entry may be created.
func tcpNew(c *Conn, p *packet.Packet, cfg *Config) InvalidReason {
	th := &p.TCP
	ns := tcpConntracks[Original][tcpClass(th.Flags)][TCPNone]
	if ns >= NumTCPStates {
		return ReasonTCPNewState
	}
	c.TCP = TCPConn{}
	s := &c.TCP.Peer[Original]
	s.End = segEnd(p)
	s.MaxWin = max(uint32(th.Window), 1)
	if ns == TCPSynSent {
		s.MaxEnd = s.End
		tcpOptions(s, th)
	} else {
		if !cfg.Loose {
			return ReasonTCPNewNotSyn
		}
		// Mid-connection pickup: its history is lost, so assume SACK
		// and track liberally (window scaling is unknown).
		s.MaxEnd = s.End + s.MaxWin
		c.TCP.Peer[Original].Flags = TCPFlagSACKPerm | TCPFlagBeLiberal
		c.TCP.Peer[Reply].Flags = TCPFlagSACKPerm | TCPFlagBeLiberal
	}
	c.TCP.LastIndex = classNone
	return ReasonNone
}

// tcpVerdict is the outcome of tcpPacket.
type tcpVerdict uint8

const (
	tcpAccept tcpVerdict = iota
	tcpIgnore
	tcpInvalid
	tcpKill
	tcpReopen
)

// tcpError is the kernel's tcp_error minus what the parser already
// checked: the data offset and the flag combination.
func tcpError(th *packet.TCP) InvalidReason {
	if th.DataOff < 20 {
		return ReasonTCPDataOffset
	}
	if !tcpValidFlags[th.Flags&tcpFlagMask] {
		return ReasonTCPFlags
	}
	return ReasonNone
}

// tcpEstablished is the kernel's nf_conntrack_tcp_established.
func tcpEstablished(c *Conn) bool {
	return c.State == TCPEstablished && c.Status&StatusAssured != 0
}

// tcpClosing is the kernel's tcp_can_early_drop: the closing states.
func tcpClosing(s TCPState) bool {
	switch s {
	case TCPFinWait, TCPLastAck, TCPTimeWait, TCPClose, TCPCloseWait:
		return true
	}
	return false
}

// resetPeer is the kernel's nf_ct_tcp_state_reset: forget a direction's
// window data but keep BE_LIBERAL.
func resetPeer(p *TCPPeer) {
	*p = TCPPeer{Flags: p.Flags & TCPFlagBeLiberal}
}

// tcpPacket runs one TCP packet of connection c in direction dir (kernel
// nf_conntrack_tcp_packet after tcp_error/tcp_new). seenReply is the
// SEEN_REPLY bit before this packet.
func tcpPacket(c *Conn, p *packet.Packet, dir Dir, now int64, cfg *Config) (tcpVerdict, InvalidReason) {
	t := &c.TCP
	th := &p.TCP
	dir &= 1
	oldState := c.State
	if oldState >= NumTCPStates {
		return tcpInvalid, ReasonTCPState
	}
	index := tcpClass(th.Flags)
	newState := tcpConntracks[dir][index][oldState]
	skipWindow := false

	switch newState {
	case TCPSynSent:
		if oldState < TCPTimeWait {
			break
		}
		// Reopen from TIME_WAIT/CLOSE: only if the connection really
		// closed (FIN seen) or was reset by this side; else the SYN is
		// treated like an ignored one, below.
		if (t.Peer[dir].Flags|t.Peer[dir^1].Flags)&TCPFlagCloseInit != 0 ||
			(t.LastDir == dir && t.LastIndex == classRst) {
			return tcpReopen, ReasonNone
		}
		fallthrough
	case tcpIG:
		if index == classSynAck && t.LastIndex == classSyn &&
			t.LastDir != dir && th.Ack == t.LastEnd {
			// This SYN/ACK answers a SYN we ignored: client and
			// server are in sync and we are not. Rebuild the SYN
			// side from the values saved when we ignored it.
			oldState = TCPSynSent
			newState = TCPSynRecv
			ld := &t.Peer[t.LastDir&1]
			ld.End = t.LastEnd
			ld.MaxEnd = t.LastEnd
			ld.MaxWin = max(uint32(t.LastWin), 1)
			ld.Scale = t.LastWScale
			t.Flags &^= TCPFlagChallengeAck
			ld.Flags = t.LastFlags
			resetPeer(&t.Peer[dir])
			break
		}
		t.LastIndex = index
		t.LastDir = dir
		t.LastSeq = th.Seq
		t.LastEnd = segEnd(p)
		t.LastWin = th.Window
		if index == classSyn && dir == Original {
			// Save the SYN's options in case the server answers
			// it with a SYN/ACK (resync above).
			var seen TCPPeer
			t.LastFlags, t.LastWScale, t.Flags = 0, 0, 0
			tcpOptions(&seen, th)
			if seen.Flags&TCPFlagWindowScale != 0 {
				t.LastFlags |= TCPFlagWindowScale
				t.LastWScale = seen.Scale
			}
			if seen.Flags&TCPFlagSACKPerm != 0 {
				t.LastFlags |= TCPFlagSACKPerm
			}
			// In LAST_ACK the answer may be an RFC 5961 challenge
			// ACK that must not be taken for the last ACK.
			if oldState == TCPLastAck {
				t.Flags |= TCPFlagChallengeAck
			}
		}
		// A reply ACK to our SYN may be a challenge ACK; the RST that
		// follows carries its ack as seq.
		if oldState == TCPSynSent && index == classAck && dir == Reply {
			t.LastAck = th.Ack
		}
		return tcpIgnore, ReasonNone
	case tcpIV:
		return tcpInvalid, ReasonTCPState
	case TCPTimeWait:
		if oldState == TCPLastAck && index == classAck && t.LastDir != dir &&
			t.LastIndex == classSyn && t.Flags&TCPFlagChallengeAck != 0 {
			// RFC 5961 challenge ACK to the ignored SYN: not the
			// last ACK. Accept without changing state.
			t.Flags &^= TCPFlagChallengeAck
			return tcpIgnore, ReasonNone
		}
	case TCPSynSent2:
		// The table cannot express simultaneous open; remember it.
		t.Flags |= TCPFlagSimultaneousOp
	case TCPSynRecv:
		if dir == Reply && index == classAck && t.Flags&TCPFlagSimultaneousOp != 0 {
			newState = TCPEstablished
		}
	case TCPClose:
		if index != classRst {
			break
		}
		var invalid bool
		newState, skipWindow, invalid = tcpRSTChecks(c, p, dir, oldState, newState, cfg)
		if invalid {
			return tcpInvalid, ReasonTCPInvalidRST
		}
	}

	if !skipWindow {
		switch v, reason := tcpInWindow(c, p, dir, index, cfg); v {
		case tcpIgnore:
			return tcpIgnore, ReasonNone
		case tcpInvalid:
			tcpHandleInvalid(c, dir, index, now, cfg)
			return tcpInvalid, reason
		}
	}

	// From here on the packet is in window.
	t.LastIndex = index
	t.LastDir = dir
	c.State = newState
	if oldState != newState && newState == TCPFinWait {
		t.Peer[dir].Flags |= TCPFlagCloseInit
	}

	to := &cfg.Timeouts
	timeout := cfg.tcpTimeout(newState)
	switch {
	case t.Retrans >= cfg.MaxRetrans && timeout > to.TCPMaxRetrans:
		timeout = to.TCPMaxRetrans
	case index == classRst:
		timeout = to.TCPClose
	case (t.Peer[0].Flags|t.Peer[1].Flags)&TCPFlagDataUnacked != 0 && timeout > to.TCPUnacknowledged:
		timeout = to.TCPUnacknowledged
	case t.LastWin == 0 && timeout > to.TCPMaxRetrans:
		timeout = to.TCPMaxRetrans
	}

	if c.Status&StatusSeenReply == 0 {
		// Only a RST answered: a refused connection, delete it now.
		if th.Flags&packet.TCPRst != 0 {
			return tcpKill, ReasonNone
		}
		// A retransmitted SYN does not renew the timer, so port reuse
		// cannot keep an unanswered entry alive forever.
		if index == classSyn && oldState == TCPSynSent {
			return tcpAccept, ReasonNone
		}
		// ESTABLISHED without a reply is a loose pickup: short timeout.
		if newState == TCPEstablished && timeout > to.TCPUnacknowledged {
			timeout = to.TCPUnacknowledged
		}
	} else if c.Status&StatusAssured == 0 &&
		(oldState == TCPSynRecv || oldState == TCPEstablished) &&
		newState == TCPEstablished {
		c.Status |= StatusAssured
	}
	c.Expires = now + int64(timeout)
	return tcpAccept, ReasonNone
}

// tcpRSTChecks validates a RST the table sends to CLOSE (kernel
// nf_conntrack_tcp_packet, case TCP_CONNTRACK_CLOSE). It returns the state
// to move to, whether to skip the window check, and whether the RST is
// INVALID.
func tcpRSTChecks(c *Conn, p *packet.Packet, dir Dir, oldState, newState TCPState, cfg *Config) (TCPState, bool, bool) {
	t := &c.TCP
	th := &p.TCP
	// Closing: the tuple may already be reused and our sequence data is
	// stale, so skip validation.
	if tcpClosing(oldState) {
		return newState, true, false
	}
	r := &t.Peer[dir^1]
	// td_maxack may be outdated if we let a SYN through earlier.
	if cfg.WindowTracking && r.Flags&TCPFlagMaxAckSet != 0 && t.LastIndex != classSyn {
		seq := th.Seq
		// SEQ 0 outside ESTABLISHED: most likely the answer to a SYN
		// we let through.
		if seq == 0 && !tcpEstablished(c) {
			return newState, false, false
		}
		if before(seq, r.MaxAck) && !cfg.IgnoreInvalidRST {
			return newState, false, true
		}
		if !tcpEstablished(c) || seq == r.MaxAck {
			return newState, false, false
		}
		// Part of a train: data then RST at its end.
		if t.LastIndex == classAck && t.LastDir == dir && seq == t.LastEnd {
			return newState, false, false
		}
		// Not an exact match: keep the state and wait for the
		// challenge ACK the receiver sends (RFC 5961).
		newState = oldState
	}
	// RST answering a SYN or ACK we let through while out of sync:
	// skip the window check, it may ACK segments we ignored. The SYN
	// case needs the RST to come from the other side than the SYN: a RST
	// from the SYN's own sender answers nothing and, without this check,
	// a SYN then a RST with any seq would force CLOSE (kernel commit
	// bed6e04be8e6, "do not force CLOSE on invalid-seq RST without
	// direction check", in stable 6.18.y). Such a RST goes through the
	// window check instead.
	if ((c.Status&StatusSeenReply != 0 && t.LastIndex == classSyn && t.LastDir != dir) ||
		(c.Status&StatusAssured == 0 && t.LastIndex == classAck)) &&
		th.Ack == t.LastEnd {
		return newState, true, false
	}
	// RST answering a challenge ACK we let through in SYN_SENT.
	if oldState == TCPSynSent && t.LastIndex == classAck &&
		t.LastDir == Reply && th.Seq == t.LastAck {
		return newState, true, false
	}
	return newState, false, false
}

// tcpInitSender initialises a direction from its SYN or SYN/ACK (kernel
// tcp_init_sender).
func tcpInitSender(s, r *TCPPeer, th *packet.TCP, end, win uint32, dir Dir) {
	s.End = end
	s.MaxEnd = end
	s.MaxWin = max(win, 1)
	tcpOptions(s, th)
	// RFC 7323: window scaling only if both sides sent the option.
	if dir == Reply && (s.Flags&TCPFlagWindowScale == 0 || r.Flags&TCPFlagWindowScale == 0) {
		s.Scale = 0
		r.Scale = 0
	}
}

// tcpInWindow is the van Rooij window check (kernel tcp_in_window). It
// returns tcpAccept, tcpIgnore or tcpInvalid with a reason.
func tcpInWindow(c *Conn, p *packet.Packet, dir Dir, index uint8, cfg *Config) (tcpVerdict, InvalidReason) {
	t := &c.TCP
	th := &p.TCP
	s, r := &t.Peer[dir], &t.Peer[dir^1]

	seq := th.Seq
	ack := th.Ack
	sack := ack
	winRaw := th.Window
	win := uint32(winRaw)
	end := segEnd(p)
	syn := th.Flags&packet.TCPSyn != 0
	hasAck := th.Flags&packet.TCPAck != 0

	if r.Flags&TCPFlagSACKPerm != 0 {
		sack = tcpSACK(th, sack)
	}

	if s.MaxWin == 0 {
		if syn {
			// SYN/ACK answering a SYN, or a reply-side SYN in
			// simultaneous open.
			tcpInitSender(s, r, th, end, win, dir)
			if !hasAck {
				return tcpAccept, ReasonNone
			}
		} else {
			// Mid-connection: use what the packet says.
			s.End = end
			s.MaxWin = max(win<<(s.Scale&15), 1)
			s.MaxEnd = end + s.MaxWin
			if r.MaxWin == 0 {
				// Nothing seen the other way yet: let III and IV pass.
				r.End = sack
				r.MaxEnd = sack
			} else if sack == r.End+1 {
				// Likely the answer to a keepalive; needed for III.
				r.End++
			}
		}
	} else if syn && after(end, s.End) && (c.State == TCPSynSent || c.State == TCPSynRecv) {
		// RFC 793: a reinitialised TCP uses higher sequence numbers.
		// Re-init this direction as for the first SYN(/ACK).
		tcpInitSender(s, r, th, end, win, dir)
		if dir == Reply && !hasAck {
			return tcpAccept, ReasonNone
		}
	}

	if !hasAck {
		ack = r.End
		sack = r.End
	} else if th.Flags&(packet.TCPAck|packet.TCPRst) == packet.TCPAck|packet.TCPRst && ack == 0 {
		// Broken stacks send RST+ACK with ack 0.
		ack = r.End
		sack = r.End
	}
	if th.Flags&packet.TCPRst != 0 && seq == 0 && c.State == TCPSynSent {
		// RST answering a SYN.
		seq = s.End
		end = s.End
	}

	liberal := cfg.BeLiberal || !cfg.WindowTracking || s.Flags&TCPFlagBeLiberal != 0
	maxAckWin := max(s.MaxWin, maxAckWinConst)

	// I: sequence number not beyond the receiver's window.
	if !before(seq, s.MaxEnd+1) {
		overshot := end - s.MaxEnd + 1
		ackOK := after(sack, r.End-maxAckWin-1)
		inRecvWin := r.MaxWin != 0 && after(end, s.End-r.MaxWin-1)
		if inRecvWin && ackOK && overshot <= r.MaxWin && before(sack, r.End+1) {
			// A TCP sent more than the window allows. Record the
			// data so that the ACK for it passes III later.
			s.End = end
			s.Flags |= TCPFlagDataUnacked
			if liberal {
				return tcpAccept, ReasonNone
			}
			return tcpIgnore, ReasonNone
		}
		if liberal {
			return tcpAccept, ReasonNone
		}
		return tcpInvalid, ReasonTCPSeqOverUpper
	}
	// III: does not ACK data we have not seen.
	if !before(sack, r.End+1) {
		if liberal {
			return tcpAccept, ReasonNone
		}
		return tcpInvalid, ReasonTCPAckOverUpper
	}
	// II: not entirely old (already ACKed) data.
	if r.MaxWin != 0 && !after(end, s.End-r.MaxWin-1) {
		if liberal {
			return tcpAccept, ReasonNone
		}
		return tcpIgnore, ReasonNone
	}
	// IV: ACK not overly delayed.
	if !after(sack, r.End-maxAckWin-1) {
		if liberal {
			return tcpAccept, ReasonNone
		}
		return tcpIgnore, ReasonNone
	}

	if !syn {
		win <<= s.Scale & 15
	}
	// Update the sender.
	if swin := win + (sack - ack); s.MaxWin < swin {
		s.MaxWin = swin
	}
	if after(end, s.End) {
		s.End = end
		s.Flags |= TCPFlagDataUnacked
	}
	if hasAck {
		if s.Flags&TCPFlagMaxAckSet == 0 {
			s.MaxAck = ack
			s.Flags |= TCPFlagMaxAckSet
		} else if after(ack, s.MaxAck) {
			s.MaxAck = ack
		}
	}
	// Update the receiver.
	if r.MaxWin != 0 && after(end, s.MaxEnd) {
		r.MaxWin += end - s.MaxEnd
	}
	if after(sack+win, r.MaxEnd-1) {
		r.MaxEnd = sack + win
		if win == 0 {
			r.MaxEnd++
		}
	}
	if ack == r.End {
		r.Flags &^= TCPFlagDataUnacked
	}
	// Count retransmissions: the same ACK-class segment again.
	if index == classAck {
		if t.LastDir == dir && t.LastSeq == seq && t.LastAck == ack &&
			t.LastEnd == end && t.LastWin == winRaw {
			t.Retrans++ // a u8 in the kernel too: it wraps
		} else {
			t.LastDir = dir
			t.LastSeq = seq
			t.LastAck = ack
			t.LastEnd = end
			t.LastWin = winRaw
			t.Retrans = 0
		}
	}
	return tcpAccept, ReasonNone
}

// tcpHandleInvalid shortens the timeout of an ASSURED connection when FINs
// or RSTs in both directions were out of window: endpoints and tracker are
// out of sync and the connection is probably dead (kernel
// nf_tcp_handle_invalid).
func tcpHandleInvalid(c *Conn, dir Dir, index uint8, now int64, cfg *Config) {
	if c.Status&StatusAssured == 0 || (index != classRst && index != classFin) {
		return
	}
	t := &c.TCP
	if t.LastDir != dir && (t.LastIndex == classFin || t.LastIndex == classRst) {
		expires := c.Expires - now
		if expires < int64(120*time.Second) {
			return
		}
		if unack := int64(cfg.Timeouts.TCPUnacknowledged); expires > unack {
			c.Expires = now + unack
		}
		return
	}
	t.LastIndex = index
	t.LastDir = dir
}
