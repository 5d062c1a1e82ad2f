// Package ctsync encodes and decodes conntrackd's network messages, byte
// for byte as conntrack-tools 1.4.7 does, so statewire can exchange
// connection state with another statewire or with a Linux firewall running
// conntrackd (issue 14).
//
// A datagram holds one or more messages, each a nethdr (8 bytes: version
// and type in the first byte, flags, length, sequence number) followed,
// for data messages, by NTA_* attributes (4-byte header, 4-byte aligned).
// Control messages (type NET_T_CTL) carry ALIVE, ACK, NACK or RESYNC; ACK,
// NACK and RESYNC add a from/to sequence range (nethdr_ack, 16 bytes).
//
// The rules come from conntrack-tools' include/network.h (layout, enums,
// alignment), src/build.c (which attributes ct2msg/exp2msg write, in which
// order) and src/parse.c (msg2ct/msg2exp: the checks a receiver makes).
// Decode applies those checks and a few more so that nothing is read past
// a message's length; it never panics.
//
// Two quirks of conntrackd are reproduced, not fixed: addresses and ports
// travel as libnetfilter_conntrack's attribute groups, in network byte
// order, but the ICMP identifier goes through ct_build_u16, which applies
// htons to a value libnetfilter_conntrack already keeps in network order,
// so on the little-endian hosts conntrackd runs on the identifier is sent
// little-endian (ICMPIDWire); and a helper name may be at most 11 bytes,
// because parse.c compares the attribute's length including its 4-byte
// header with NFCT_HELPER_NAME_MAX (16) and the name ends with a NUL.
//
// FTFW (sequence tracking, ACK/NACK windows, resync) and the run flags are
// built on this package later.
package ctsync
